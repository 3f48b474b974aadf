"""Losing a whole region (its API server and its pods' processes) while the ring keeps serving (issue 18).

Runs after the other ring tests: it stops and starts a cluster of the shared ring.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from .conftest import Ring, cql, until

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1800)]


def _states(status: str) -> dict[str, str]:
    """``nodetool status`` -> {address: state}."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^(UN|DN|UJ|UL|DJ|DL)\s+(\d+\.\d+\.\d+\.\d+)\s", status, re.M)}


def _pod_ip(ring: Ring, cluster: str) -> str:
    return str(json.loads(ring.lab.kubectl(cluster, "get", "pod", "-n", "ring", ring.pod(cluster), "-o", "json"))[
        "status"].get("podIP", ""))




async def test_the_other_regions_serve_local_quorum_and_a_restarted_node_rejoins_while_one_is_down(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    password = ring.password()
    async with cql(ring, "eu", "cassandra-admin", password) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS lossy WITH replication = "
                                                 "{'class': 'NetworkTopologyStrategy', 'dc-eu': 1, 'dc-us': 1, "
                                                 "'dc-ap': 1}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS lossy.kv (k int PRIMARY KEY, v int)")
    ap_ip = _pod_ip(ring, "ap")
    ring.lab.stop_cluster("ap")
    try:
        await until("dc-ap's node to be DN as dc-eu sees it",
                     lambda: _states(ring.nodetool("eu", "status")).get(ap_ip) == "DN", 180)
        for cluster in ("eu", "us"):
            async with cql(ring, cluster, "cassandra-admin", password) as session:
                write = SimpleStatement("INSERT INTO lossy.kv (k, v) VALUES (%s, %s)",
                                        consistency_level=ConsistencyLevel.LOCAL_QUORUM)
                read = SimpleStatement("SELECT v FROM lossy.kv WHERE k = %s",
                                       consistency_level=ConsistencyLevel.LOCAL_QUORUM)
                for k in range(10):
                    await asyncio.to_thread(session.execute, write, (k, k * 10))
                assert [(await asyncio.to_thread(session.execute, read, (k,))).one().v for k in range(10)] == \
                    [k * 10 for k in range(10)]
        # a node of a surviving region restarts and rejoins, with its region's seeds only
        old_uid = ring.lab.kubectl("us", "get", "pod", "-n", "ring", ring.pod("us"), "-o", "jsonpath={.metadata.uid}")
        ring.lab.kubectl("us", "delete", "pod", "-n", "ring", ring.pod("us"), "--wait=true", timeout=600)

        def us_back() -> bool:
            doc = json.loads(ring.lab.kubectl("us", "get", "pod", "-n", "ring", ring.pod("us"), "-o", "json"))
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in doc["status"].get("conditions", []))
            return bool(doc["metadata"]["uid"] != old_uid and ready
                        and _states(ring.nodetool("eu", "status")).get(doc["status"]["podIP"]) == "UN")

        await until("the restarted dc-us node to be UN while dc-ap is down", us_back, 900)
        assert _states(ring.nodetool("eu", "status")).get(ap_ip) == "DN"
    finally:
        ring.lab.start_cluster("ap")
    await until("every node UN again once dc-ap is back", lambda: set(_states(ring.nodetool("eu", "status")).values())
                 == {"UN"} and len(_states(ring.nodetool("eu", "status"))) == 4, 900)
