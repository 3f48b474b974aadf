"""A real Cassandra ring across three lab clusters, formed by ``isthmus apply`` alone (issue 18).

Everything is reached as on a real fleet: ``kubectl exec``/``logs`` and port-forwards through each
cluster's API server, never a pod IP. Cassandra runs in the lab's pods, configured only by what Isthmus
rendered (the ConfigMap, the init container, the seeds through the lab's DNS).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import pytest

from .conftest import RACKS, REGIONS, Ring, cql

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1800)]

UN_LINE = re.compile(r"^(UN|DN|UJ|UL|DJ|DL)\s+(\d+\.\d+\.\d+\.\d+)\s+.*\s(\S+)\s*$")


def _nodes(status: str) -> dict[str, list[tuple[str, str, str]]]:
    """``nodetool status`` -> {datacenter: [(state, address, rack)]}."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    dc = None
    for line in status.splitlines():
        if line.startswith("Datacenter: "):
            dc = line.split(": ", 1)[1].strip()
            out[dc] = []
        elif (m := UN_LINE.match(line.strip())) and dc is not None:
            out[dc].append((m.group(1), m.group(2), m.group(3)))
    return out


def test_every_node_is_up_and_normal_in_its_own_datacenter_and_rack(ring: Ring) -> None:
    for cluster in REGIONS:
        nodes = _nodes(ring.nodetool(cluster, "status"))
        assert set(nodes) == {f"dc-{c}" for c in REGIONS}, nodes
        for c in REGIONS:
            racks = [f"r{i}" for i in range(1, len(RACKS[c]) + 1)]
            assert sorted((state, rack) for state, _, rack in nodes[f"dc-{c}"]) == [("UN", r) for r in racks], \
                (cluster, c, nodes)
    pod_ip = json.loads(ring.lab.kubectl("us", "get", "pod", "-n", "ring", ring.pod("us"), "-o", "json"))[
        "status"]["podIP"]
    assert pod_ip in {addr for members in _nodes(ring.nodetool("eu", "status")).values() for _, addr, _ in members}


def test_the_container_log_is_the_nodes_own(ring: Ring) -> None:
    log = ring.lab.kubectl("ap", "logs", "-n", "ring", ring.pod("ap"), "-c", "cassandra")
    assert "Startup complete" in log


async def test_the_superuser_secret_logs_in_and_the_default_login_is_refused(ring: Ring) -> None:
    from cassandra.cluster import NoHostAvailable

    assert "superuser: created role cassandra-admin" in ring.apply_output
    assert ring.password() not in ring.apply_output
    async with cql(ring, "us", "cassandra-admin", ring.password()) as session:
        row = (await asyncio.to_thread(session.execute, "SELECT role, is_superuser FROM system_auth.roles "
                                                         "WHERE role = 'cassandra-admin'")).one()
        assert row.is_superuser is True
    with pytest.raises(NoHostAvailable) as caught:
        async with cql(ring, "us", "cassandra", "cassandra"):
            pass
    assert "AuthenticationFailed" in repr(caught.value)


async def test_a_row_written_at_local_quorum_in_one_dc_is_read_at_local_one_in_every_other(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    password = ring.password()
    replication = ", ".join(f"'dc-{c}': 1" for c in REGIONS)
    async with cql(ring, "eu", "cassandra-admin", password) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS shop WITH replication = "
                                                 f"{{'class': 'NetworkTopologyStrategy', {replication}}}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS shop.orders (id int PRIMARY KEY, "
                                                 "item text)")
        insert = SimpleStatement("INSERT INTO shop.orders (id, item) VALUES (%s, %s)",
                                 consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        for i in range(20):
            await asyncio.to_thread(session.execute, insert, (i, f"item-{i}"))
    for cluster in ("us", "ap"):
        async with cql(ring, cluster, "cassandra-admin", password) as session:
            select = SimpleStatement("SELECT id, item FROM shop.orders", consistency_level=ConsistencyLevel.LOCAL_ONE)
            rows = {r.id: r.item for r in await asyncio.to_thread(session.execute, select)}
            assert rows == {i: f"item-{i}" for i in range(20)}, cluster


async def test_rows_survive_the_deletion_of_their_pod(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    password = ring.password()
    async with cql(ring, "ap", "cassandra-admin", password) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS local_ap WITH replication = "
                                                 "{'class': 'NetworkTopologyStrategy', 'dc-ap': 1}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS local_ap.kv (k int PRIMARY KEY, "
                                                 "v text)")
        await asyncio.to_thread(session.execute, SimpleStatement(
            "INSERT INTO local_ap.kv (k, v) VALUES (1, 'kept')", consistency_level=ConsistencyLevel.LOCAL_ONE))
        await asyncio.to_thread(session.execute, "SELECT k FROM local_ap.kv")
    pod = ring.pod("ap")
    old_uid = ring.lab.kubectl("ap", "get", "pod", "-n", "ring", pod, "-o", "jsonpath={.metadata.uid}")
    ring.lab.kubectl("ap", "delete", "pod", "-n", "ring", pod, "--wait=true", timeout=600)
    deadline = time.monotonic() + 600
    while True:
        proc = await asyncio.to_thread(subprocess.run, ring.lab_kubectl_args("ap", "get", "pod", "-n", "ring", pod,
                                                                              "-o", "json"),
                                       capture_output=True, text=True)
        if proc.returncode == 0:
            doc = json.loads(proc.stdout)
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in doc["status"].get("conditions", []))
            if doc["metadata"]["uid"] != old_uid and ready:
                break
        assert time.monotonic() < deadline, "the recreated pod did not become Ready"
        await asyncio.sleep(2)
    async with cql(ring, "ap", "cassandra-admin", password) as session:
        select = SimpleStatement("SELECT v FROM local_ap.kv WHERE k = 1", consistency_level=ConsistencyLevel.LOCAL_ONE)
        assert (await asyncio.to_thread(session.execute, select)).one().v == "kept"
