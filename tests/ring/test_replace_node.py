"""A node whose volume is lost comes back as a replacement of its old identity, not as a new node that leaves a
DN ghost (issue 13, item 9).

dc-eu's r2 node (a seed: ordinal 0 of the DC's second rack) loses its claim and its pod. The StatefulSet makes
both again; the init container finds the pod's address in ``ring-dc-eu-identities`` (recorded by the fixture's
``isthmus apply``) and an empty volume, and starts Cassandra with ``replace_address_first_boot``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import pytest

from isthmus.rollout.identities import record_identities
from isthmus.rollout.ringview import RingNode, parse_status
from isthmus.spec import CassandraCluster, load_file

from .conftest import Ring, cql, until

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1200)]

VICTIM = "ring-dc-eu-r2-0"
CLAIM = f"data-{VICTIM}"
SIZES = {"dc-eu": 2, "dc-us": 1, "dc-ap": 1}
ROWS = 100


def _get(ring: Ring, cluster: str, *args: str) -> dict[str, Any]:
    return dict(json.loads(ring.lab.kubectl(cluster, "get", *args, "-n", "ring", "-o", "json")))


def _identities(ring: Ring) -> dict[str, str]:
    return dict(_get(ring, "eu", "configmap", "ring-dc-eu-identities").get("data") or {})


def _view(ring: Ring, cluster: str, pod: str) -> list[RingNode]:
    return parse_status(ring.lab.kubectl(cluster, "exec", "-n", "ring", pod, "-c", "cassandra", "--",
                                         "nodetool", "status", timeout=120))




async def test_a_node_whose_volume_is_lost_comes_back_as_a_replacement_of_itself(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    victim = _get(ring, "eu", "pod", VICTIM)
    old_ip = str(victim["status"]["podIP"])
    old_claim = str(_get(ring, "eu", "pvc", CLAIM)["metadata"]["uid"])
    assert _identities(ring).get(VICTIM) == old_ip, "the apply did not record the node's address"
    before = {n.address: n for n in _view(ring, "eu", "ring-dc-eu-r1-0")}
    assert Counter(n.datacenter for n in before.values()) == SIZES and all(n.normal for n in before.values())

    password = ring.password()
    write = SimpleStatement("INSERT INTO replaced.kv (k, v) VALUES (%s, %s)",
                            consistency_level=ConsistencyLevel.LOCAL_QUORUM)
    async with cql(ring, "eu", "cassandra-admin", password) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS replaced WITH replication = "
                                                 "{'class': 'NetworkTopologyStrategy', 'dc-eu': 2, 'dc-us': 1, "
                                                 "'dc-ap': 1}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS replaced.kv (k int PRIMARY KEY, v int)")
        for k in range(ROWS):
            await asyncio.to_thread(session.execute, write, (k, k * 7))

    # The volume is lost: its claim goes (its folder with it), and so does the pod.
    ring.lab.kubectl("eu", "delete", "pvc", "-n", "ring", CLAIM, "--wait=false")
    ring.lab.kubectl("eu", "delete", "pod", "-n", "ring", VICTIM, "--wait=true", timeout=600)
    deleted = time.monotonic()

    def recreated() -> bool:
        claim = _get(ring, "eu", "pvc", CLAIM)
        return bool(claim["metadata"]["uid"] != old_claim and claim["status"].get("phase") == "Bound")

    await until("the StatefulSet to make a new claim", recreated, 300)

    def back() -> bool:
        pod = _get(ring, "eu", "pod", VICTIM)
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in pod["status"].get("conditions", []))
        ip = pod["status"].get("podIP")
        return bool(ready and {n.address: n.code for n in _view(ring, "eu", "ring-dc-eu-r1-0")}.get(ip) == "UN")

    await until("the replacement to be UN and Ready", back, 600)
    took = time.monotonic() - deleted
    new_ip = str(_get(ring, "eu", "pod", VICTIM)["status"]["podIP"])
    print(f"\nreplacement of {VICTIM} ({old_ip} -> {new_ip}): UN and Ready {took:.0f}s after its pod was deleted")

    # It replaced the old node: Cassandra says so, and it took the old node's place in every datacenter's view.
    logs = ring.lab.kubectl("eu", "logs", "-n", "ring", VICTIM, "-c", "cassandra", timeout=60)
    gathering = [line for line in logs.splitlines() if "Gathering node replacement information for" in line]
    assert gathering and f"/{old_ip}:" in gathering[0], "the node did not start as a replacement"
    for cluster, pod in (("eu", "ring-dc-eu-r1-0"), ("eu", VICTIM), ("us", "ring-dc-us-r1-0"),
                         ("ap", "ring-dc-ap-r1-0")):
        view = _view(ring, cluster, pod)
        assert Counter(n.datacenter for n in view) == SIZES, f"{pod} sees {[(n.address, n.code) for n in view]}"
        assert all(n.normal for n in view), f"{pod} sees {[(n.address, n.code) for n in view]}"
        hosts = {n.host_id for n in view}
        assert len(hosts) == 4
        if new_ip == old_ip:  # a replacement at the same address keeps the node's host ID
            assert hosts == {n.host_id for n in before.values()}
        else:
            assert old_ip not in {n.address for n in view}
    ring.lab.kubectl("eu", "exec", "-n", "ring", VICTIM, "-c", "cassandra", "--", "test", "!", "-e",
                     "/var/lib/cassandra/.isthmus-replacing", timeout=60)

    read = SimpleStatement("SELECT k, v FROM replaced.kv", consistency_level=ConsistencyLevel.LOCAL_QUORUM)
    async with cql(ring, "eu", "cassandra-admin", password) as session:
        rows = {r.k: r.v for r in await asyncio.to_thread(session.execute, read)}
        assert rows == {k: k * 7 for k in range(ROWS)}
        await asyncio.to_thread(session.execute, "DROP KEYSPACE replaced")

    # The next rollout's record names the node by its address now.
    app = load_file(ring.files[1]).apps[0]
    assert isinstance(app, CassandraCluster)
    registry = ring.registry()
    try:
        notes = await record_identities({c: registry[c] for c in app.member_clusters()}, app)
    finally:
        await registry.close()
    assert notes == []
    assert _identities(ring).get(VICTIM) == new_ip
