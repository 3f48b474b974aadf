"""Scaling a datacenter of the real ring (issue 13 item 6): dc-us grows by one node and shrinks back, through
``isthmus apply`` of a spec whose ``size`` changed, while a client in another datacenter reads and writes at
LOCAL_QUORUM and counts its failures (zero). The new node bootstraps and the old one is cleaned up (its own
SSTables hold fewer partitions afterwards); the leaving node is decommissioned, its volume claim deleted,
and no datacenter's ``nodetool status`` keeps a ghost of it. A scale-down below a keyspace's replicas there
is refused with exit code 2 before anything is written. The ring is left as the module found it: every spec
here is the one the ring last rolled out (another module may have changed it, a heap for instance) with only
dc-us's size changed, and the last apply is that spec itself."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from isthmus.rollout import ProgressStore
from isthmus.rollout.revisions import RevisionStore

from .conftest import FLEET, ISTHMUS, Ring, cql

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.ringops, pytest.mark.timeout(1800)]

CLUSTER = "us"
DC = f"dc-{CLUSTER}"
ROWS = 300
CONTROL = str(FLEET["spec"]["controlPlane"])  # type: ignore[index]
NODES_IN_ZONE = {z["name"]: z["nodes"] for c in FLEET["spec"]["clusters"] for z in c["zones"]}  # type: ignore[index]


def _isthmus(ring: Ring, *args: str, files: list[str] | None = None,
             timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    spec = files if files is not None else ring.spec_args()
    return subprocess.run([ISTHMUS, *args, *spec, "--kubeconfig", str(ring.lab.kubeconfig)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "250"})


async def _found(ring: Ring) -> dict[str, Any]:
    """The spec of the revision the ring last rolled out (as the control plane stores it)."""
    registry = ring.registry()
    try:
        state = await ProgressStore(registry[CONTROL], "ring").load()
        assert state is not None and state.phase.finished, state
        return (await RevisionStore(registry[CONTROL], "ring").get(state.revision)).spec
    finally:
        await registry.close()


def _dc(app: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in app["spec"]["datacenters"] if d["name"] == DC)  # type: ignore[no-any-return]


def _spec(ring: Ring, found: dict[str, Any], size: int) -> list[str]:
    app = copy.deepcopy(found)
    _dc(app)["size"] = size
    path = ring.files[1].with_name(f"cassandra-{DC}-{size}.yaml")
    path.write_text(yaml.safe_dump(app, sort_keys=False))
    return ["-f", str(ring.files[0]), "-f", str(path)]


def _states(ring: Ring, cluster: str, pod: str) -> dict[str, list[str]]:
    """Datacenter -> the state codes of its nodes, as ``pod`` sees the ring."""
    status = ring.lab.kubectl(cluster, "exec", "-n", "ring", pod, "-c", "cassandra", "--", "nodetool", "status",
                              timeout=120)
    out: dict[str, list[str]] = {}
    for section in status.split("Datacenter: ")[1:]:
        name = section.split()[0]
        out[name] = re.findall(r"^([UD][NLJM])\s", section, re.M)
    return out


def _every_view(ring: Ring, clusters: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each datacenter's first node -> its view of the ring."""
    return {c: _states(ring, c, ring.pod(c)) for c in clusters}


def _partitions(ring: Ring, pod: str) -> int:
    stats = ring.lab.kubectl(CLUSTER, "exec", "-n", "ring", pod, "-c", "cassandra", "--", "nodetool", "tablestats",
                             "scaled.kv", timeout=120)
    found = re.search(r"Number of partitions \(estimate\):\s*(\d+)", stats)
    assert found is not None, stats
    return int(found.group(1))


def _replicas(ring: Ring) -> int:
    return int(ring.lab.kubectl(CLUSTER, "get", "statefulset", "-n", "ring", f"ring-{DC}-r1", "-o",
                                "jsonpath={.spec.replicas}"))


async def _count(ring: Ring, cluster: str, consistency: Any) -> int:
    from cassandra.query import SimpleStatement

    async with cql(ring, cluster, "cassandra-admin", ring.password()) as session:
        row = (await asyncio.to_thread(session.execute, SimpleStatement(
            "SELECT count(*) FROM scaled.kv", consistency_level=consistency))).one()
        return int(row[0])


@contextlib.asynccontextmanager
async def _client(ring: Ring, cluster: str) -> AsyncIterator[dict[str, int]]:
    """Writes then reads one row after another at LOCAL_QUORUM in ``cluster``'s datacenter, counting failures."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    counts = {"ok": 0, "failed": 0}
    stop = asyncio.Event()
    write = SimpleStatement("INSERT INTO scaled.load (k, v) VALUES (%s, %s)",
                            consistency_level=ConsistencyLevel.LOCAL_QUORUM)
    read = SimpleStatement("SELECT v FROM scaled.load WHERE k = %s", consistency_level=ConsistencyLevel.LOCAL_QUORUM)

    async def loop(session: Any) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            try:
                await asyncio.to_thread(session.execute, write, (k, f"v{k}"))
                row = (await asyncio.to_thread(session.execute, read, (k,))).one()
                assert row is not None and row.v == f"v{k}"
                counts["ok"] += 1
            except Exception:  # any failed request counts (timeouts, unavailable, a missing row)
                counts["failed"] += 1
            await asyncio.sleep(0.2)

    async with cql(ring, cluster, "cassandra-admin", ring.password()) as session:
        task = asyncio.create_task(loop(session))
        try:
            yield counts
        finally:
            stop.set()
            await task


async def test_a_datacenter_scales_up_and_down_by_one_and_below_rf_is_refused(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    found = await _found(ring)
    racks, size = _dc(found)["racks"], _dc(found)["size"]
    assert len(racks) == 1, racks  # the names below are those of a one-rack datacenter
    assert NODES_IN_ZONE[racks[0]["zone"]] > size, f"{racks[0]['zone']} needs a spare lab node (anti-affinity per host)"
    as_found = _spec(ring, found, size)
    replication = ", ".join(f"'{d['name']}': {d['size'] if d['name'] != DC else size}"
                            for d in found["spec"]["datacenters"])
    clusters = [d["cluster"] for d in found["spec"]["datacenters"]]
    other = next(c for c in clusters if c != CLUSTER)
    async with cql(ring, other, "cassandra-admin", ring.password()) as session:
        for statement in (f"CREATE KEYSPACE IF NOT EXISTS scaled WITH replication = {{'class': "
                          f"'NetworkTopologyStrategy', {replication}}}",
                          "CREATE TABLE IF NOT EXISTS scaled.kv (k int PRIMARY KEY, v text)",
                          "CREATE TABLE IF NOT EXISTS scaled.load (k int PRIMARY KEY, v text)"):
            await asyncio.to_thread(session.execute, statement)
        insert = SimpleStatement("INSERT INTO scaled.kv (k, v) VALUES (%s, %s)",
                                 consistency_level=ConsistencyLevel.EACH_QUORUM)
        for k in range(ROWS):
            await asyncio.to_thread(session.execute, insert, (k, f"row {k}"))
    old, new = f"ring-{DC}-r1-{size - 1}", f"ring-{DC}-r1-{size}"
    ring.lab.kubectl(CLUSTER, "exec", "-n", "ring", old, "-c", "cassandra", "--", "nodetool", "flush", "scaled",
                     timeout=120)  # cleanup works on SSTables: the rows must be in one
    before = await asyncio.to_thread(_partitions, ring, old)
    assert before >= ROWS * 0.8, before

    grown = _spec(ring, found, size + 1)
    plan = await asyncio.to_thread(_isthmus, ring, "rollout", "plan", "--live", "-o", "json", files=grown)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    steps = [s for w in json.loads(plan.stdout)["waves"] for ln in w["lanes"] for s in ln["steps"]]
    ids = [s["id"] for s in steps]
    assert [i for i in ids if i.startswith("scale/")] == [f"scale/{DC}"], ids
    assert ids.index(f"scale/{DC}") == ids.index(f"rack/{DC}/r1") - 1  # first in its datacenter's lane
    detail = next(s["detail"] for s in steps if s["id"] == f"scale/{DC}")
    assert detail.startswith(f"datacenter {DC} {size} -> {size + 1} nodes; bootstrap {new} one at a time") and \
        detail.endswith(f"then nodetool cleanup on {', '.join(f'ring-{DC}-r1-{i}' for i in range(size))}"), detail

    async with _client(ring, other) as client:
        up = await asyncio.to_thread(_isthmus, ring, "apply", "--wait", "--timeout", "1100", files=grown)
        assert up.returncode == 0, up.stdout + up.stderr
        views = await asyncio.to_thread(_every_view, ring, clusters)
        for cluster, view in views.items():
            assert view[DC] == ["UN"] * (size + 1), (cluster, view)
            assert all(code == "UN" for codes in view.values() for code in codes), (cluster, view)
        status = await asyncio.to_thread(_isthmus, ring, "rollout", "status", "-o", "json", files=grown)
        note = json.loads(status.stdout)["steps"][f"scale/{DC}"]["note"]
        kept = ", ".join(f"ring-{DC}-r1-{i}" for i in range(size))
        assert note == f"{DC} {size} -> {size + 1}: bootstrapped {new}; nodetool cleanup on {kept}", note
        after_cleanup = await asyncio.to_thread(_partitions, ring, old)
        assert after_cleanup < before * 0.8, (before, after_cleanup)  # the new node's ranges left the old one
        assert await _count(ring, CLUSTER, ConsistencyLevel.LOCAL_QUORUM) == ROWS
        assert await _count(ring, other, ConsistencyLevel.LOCAL_QUORUM) == ROWS

        # Below a keyspace's replicas there: refused before anything is written (no revision, replicas unchanged).
        async with cql(ring, other, "cassandra-admin", ring.password()) as session:
            await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS wide WITH replication = "
                                    f"{{'class': 'NetworkTopologyStrategy', '{DC}': {size + 1}}}")
        history = await asyncio.to_thread(_isthmus, ring, "history", "-o", "json", files=grown)
        refused = await asyncio.to_thread(_isthmus, ring, "apply", "--wait", files=as_found)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"spec.datacenters[{DC}].size: scaling {DC} from {size + 1} to {size} nodes would leave fewer nodes " \
               f"than keyspace wide's {size + 1} replicas there" in refused.stderr, refused.stderr
        assert "nothing was written" in refused.stderr
        again = await asyncio.to_thread(_isthmus, ring, "history", "-o", "json", files=grown)
        assert json.loads(again.stdout) == json.loads(history.stdout)
        assert await asyncio.to_thread(_replicas, ring) == size + 1
        async with cql(ring, other, "cassandra-admin", ring.password()) as session:
            await asyncio.to_thread(session.execute, "DROP KEYSPACE wide")

        down = await asyncio.to_thread(_isthmus, ring, "apply", "--wait", "--timeout", "1100", files=as_found)
        assert down.returncode == 0, down.stdout + down.stderr
        assert await asyncio.to_thread(_replicas, ring) == size
    assert client["failed"] == 0 and client["ok"] > 0, client

    views = await asyncio.to_thread(_every_view, ring, clusters)
    for cluster, view in views.items():  # no DN or UL ghost of the node that left, in any datacenter's view
        assert view[DC] == ["UN"] * size, (cluster, view)
        assert all(code == "UN" for codes in view.values() for code in codes), (cluster, view)
    claims = ring.lab.kubectl(CLUSTER, "get", "pvc", "-n", "ring", "-o", "name").split()
    assert f"persistentvolumeclaim/data-{new}" not in claims and f"persistentvolumeclaim/data-{old}" in claims
    assert await _count(ring, CLUSTER, ConsistencyLevel.LOCAL_QUORUM) == ROWS
    assert await _count(ring, CLUSTER, ConsistencyLevel.LOCAL_ONE) == ROWS
    assert await _count(ring, other, ConsistencyLevel.LOCAL_QUORUM) == ROWS
    status = await asyncio.to_thread(_isthmus, ring, "rollout", "status", "-o", "json", files=as_found)
    note = json.loads(status.stdout)["steps"][f"scale/{DC}"]["note"]
    assert note == f"{DC} {size + 1} -> {size}: decommissioned {new}", note
    print(f"scaled {DC} {size} -> {size + 1} -> {size}; client: {client}; old node's partitions {before} -> "
          f"{after_cleanup} after cleanup")
    async with cql(ring, other, "cassandra-admin", ring.password()) as session:  # leave the ring as it was
        await asyncio.to_thread(session.execute, "DROP KEYSPACE scaled")
