"""The guard sidecar in front of a real node, reached as an operator reaches it: ``kubectl port-forward``.

The port-forward arrives on the pod's loopback. Cassandra listens on 127.0.0.2 there, the guard on the pod
IP and on 127.0.0.1, so the forward reaches the guard, and the spec's policy decides: the ``reader`` role
may SELECT from ``guarded.*`` and nothing else, even though Cassandra itself would let it write.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .conftest import Ring, cql

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(900)]


def _flows(ring: Ring) -> list[dict[str, object]]:
    out = ring.lab.kubectl("eu", "exec", "-n", "ring", ring.pod("eu"), "-c", "cqlguard", "--",
                           "cat", "/var/log/cqlguard/flows.jsonl", timeout=60)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_the_policy_allows_a_select_and_denies_an_insert_that_leaves_no_trace(ring: Ring) -> None:
    from cassandra import Unauthorized

    admin = ring.password()
    async with cql(ring, "eu", "cassandra-admin", admin) as session:
        for statement in (
            "CREATE KEYSPACE IF NOT EXISTS guarded WITH replication = "
            "{'class': 'NetworkTopologyStrategy', 'dc-eu': 2, 'dc-us': 1, 'dc-ap': 1}",
            "CREATE TABLE IF NOT EXISTS guarded.t (k int PRIMARY KEY, v text)",
            "INSERT INTO guarded.t (k, v) VALUES (1, 'kept')",
            "CREATE ROLE IF NOT EXISTS reader WITH PASSWORD = 'reader-pw' AND LOGIN = true",
            # Cassandra would let the reader write: the guard is what says no.
            "GRANT ALL PERMISSIONS ON KEYSPACE guarded TO reader",
        ):
            await asyncio.to_thread(session.execute, statement)

    async with cql(ring, "eu", "reader", "reader-pw") as session:
        rows = await asyncio.to_thread(lambda: list(session.execute("SELECT k, v FROM guarded.t WHERE k = 1")))
        assert [(r.k, r.v) for r in rows] == [(1, "kept")]
        with pytest.raises(Unauthorized, match=r"cqlguard: no rule allows .*reader"):
            await asyncio.to_thread(session.execute, "INSERT INTO guarded.t (k, v) VALUES (2, 'smuggled')")

    async with cql(ring, "eu", "cassandra-admin", admin) as session:
        rows = await asyncio.to_thread(lambda: list(session.execute("SELECT k FROM guarded.t")))
        assert sorted(r.k for r in rows) == [1], "the denied INSERT reached Cassandra"

    # The guard decided both, for the reader, from the pod's loopback (where the port-forward arrives).
    deadline = time.monotonic() + 30
    while True:
        flows = [f for f in _flows(ring) if f["source"]["user"] == "reader"]  # type: ignore[index]
        verdicts = {(f["verdict"], f["l7"]["action"]) for f in flows}  # type: ignore[index]
        if {("ALLOWED", "select"), ("DENIED", "insert")} <= verdicts or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)  # the guard flushes its flows file every second
    assert {("ALLOWED", "select"), ("DENIED", "insert")} <= verdicts, flows
    assert {f["source"]["ip"] for f in flows} == {"127.0.0.1"}, flows  # type: ignore[index]


def test_cassandra_itself_is_not_on_the_pods_loopback_address(ring: Ring) -> None:
    # What listens on 9042 inside the pod: the guard on the pod IP and 127.0.0.1, Cassandra on 127.0.0.2 only.
    out = ring.lab.kubectl("eu", "exec", "-n", "ring", ring.pod("eu"), "-c", "cassandra", "--",
                           "cat", "/proc/net/tcp", timeout=60)
    listening = {line.split()[1] for line in out.splitlines()[1:] if line.split()[3] == "0A"}
    port = f"{9042:04X}"
    assert f"0200007F:{port}" in listening  # 127.0.0.2, little-endian hex
    assert f"0100007F:{port}" in listening  # 127.0.0.1 (the guard)
    assert f"00000000:{port}" not in listening
