"""Repair (issue 13 item 8) on the real ring: ``isthmus repair`` (the console script) repairs a keyspace that
holds rows on every node, DC by DC, and ``isthmus history`` lists it; a repair killed with SIGKILL after its
first node is resumed by running it again, which repairs only the nodes that had not finished. Bad input
(a keyspace the ring lacks, a datacenter the spec lacks) is refused with exit code 2 before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from isthmus.rollout.repairstate import RepairStore

from .conftest import ISTHMUS, Ring, cql

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1800)]

PLAN = ["dc-eu/ring-dc-eu-r1-0", "dc-eu/ring-dc-eu-r2-0", "dc-us/ring-dc-us-r1-0", "dc-ap/ring-dc-ap-r1-0"]


def _isthmus(ring: Ring, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *args, *ring.spec_args(), "--kubeconfig", str(ring.lab.kubeconfig)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "250"})


async def _stored(ring: Ring) -> Any:
    registry = ring.registry()
    try:
        return await RepairStore(registry["eu"], "ring").load()
    finally:
        await registry.close()


async def _finished_repairs(ring: Ring) -> int:
    """How many repair sessions of keyspace ``repaired`` Cassandra itself recorded as finished."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute, SimpleStatement(
            "SELECT keyspace_name, finished_at, exception_message FROM system_distributed.parent_repair_history",
            consistency_level=ConsistencyLevel.ALL))
        return sum(1 for r in rows if r.keyspace_name == "repaired" and r.finished_at and not r.exception_message)


async def test_repair_runs_on_every_node_is_in_history_and_resumes_after_a_kill(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS repaired WITH replication = "
                                "{'class': 'NetworkTopologyStrategy', 'dc-eu': 2, 'dc-us': 1, 'dc-ap': 1}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS repaired.kv (k int PRIMARY KEY, v text)")
        insert = SimpleStatement("INSERT INTO repaired.kv (k, v) VALUES (%s, %s)",
                                 consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        for k in range(200):
            await asyncio.to_thread(session.execute, insert, (k, f"row {k}"))

    # Bad input: refused before anything runs (no lock taken, no state written).
    before = await _stored(ring)
    proc = await asyncio.to_thread(_isthmus, ring, "repair", "--keyspace", "nosuch")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--keyspace nosuch" in proc.stderr and "repaired" in proc.stderr and "nothing was repaired" in proc.stderr
    proc = await asyncio.to_thread(_isthmus, ring, "repair", "--dc", "dc-mars")
    assert proc.returncode == 2 and "--dc dc-mars" in proc.stderr and "dc-eu" in proc.stderr, proc.stderr
    assert (await _stored(ring)) == before

    sessions = await _finished_repairs(ring)
    started = time.monotonic()
    proc = await asyncio.to_thread(_isthmus, ring, "repair", "--keyspace", "repaired", "-o", "json", "--poll", "2")
    first_seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["phase"] == "Succeeded" and doc["repaired"] == PLAN and doc["skipped"] == [], doc
    assert all(n["outcome"] == "Done" for n in doc["nodes"].values()), doc["nodes"]
    # Cassandra's own record: one finished repair session of the keyspace per node (each ran -pr on its ranges).
    deadline = time.monotonic() + 60
    while (recorded := await _finished_repairs(ring) - sessions) < len(PLAN):
        assert time.monotonic() < deadline, f"Cassandra recorded {recorded} finished repairs, not {len(PLAN)}"
        await asyncio.sleep(2)

    proc = await asyncio.to_thread(_isthmus, ring, "history", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    repairs = json.loads(proc.stdout)["repairs"]
    assert repairs[-1]["number"] == doc["repair"] and repairs[-1]["phase"] == "Succeeded", repairs
    assert repairs[-1]["keyspaces"] == ["repaired"] and (repairs[-1]["done"], repairs[-1]["total"]) == (4, 4)
    table = await asyncio.to_thread(_isthmus, ring, "history")
    assert table.returncode == 0 and "repairs of ring" in table.stdout and "Succeeded" in table.stdout, table.stdout

    # A crash: the repair is killed (SIGKILL, holding the lock) once its first node is on record as repaired.
    killed = await asyncio.create_subprocess_exec(
        ISTHMUS, "repair", "--keyspace", "repaired", "--poll", "2", *ring.spec_args(),
        "--kubeconfig", str(ring.lab.kubeconfig), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            state = await _stored(ring)
            if state is not None and state.number == doc["repair"] + 1 and state.done:
                break
            assert killed.returncode is None, "the repair ended before it could be killed"
            assert time.monotonic() < deadline, "the second repair never finished a node"
            await asyncio.sleep(0.2)
        os.killpg(killed.pid, signal.SIGKILL)
    finally:
        if killed.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(killed.pid, signal.SIGKILL)
        await asyncio.wait_for(killed.wait(), 30)
    state = await _stored(ring)
    done_before = list(state.done)
    assert state.phase.value == "Running" and done_before and len(done_before) < len(PLAN), state.to_dict()
    assert done_before == PLAN[:len(done_before)]

    # Run again: the killed holder's lease must expire first; the finished nodes are not repeated.
    proc = await asyncio.to_thread(_isthmus, ring, "repair", "--keyspace", "repaired", "-o", "json", "--poll", "2",
                                   "--lock-wait", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = json.loads(proc.stdout)
    assert resumed["repair"] == doc["repair"] + 1 and resumed["phase"] == "Succeeded", resumed
    assert resumed["skipped"] == done_before and resumed["repaired"] == PLAN[len(done_before):], resumed
    for node_id in done_before:  # the finished nodes' records are the killed run's, untouched
        assert resumed["nodes"][node_id]["started"] == state.nodes[node_id].started

    proc = await asyncio.to_thread(_isthmus, ring, "history", "-o", "json")
    repairs = json.loads(proc.stdout)["repairs"]
    assert [(r["number"], r["phase"], r["done"]) for r in repairs[-2:]] == \
        [(doc["repair"], "Succeeded", 4), (doc["repair"] + 1, "Succeeded", 4)], repairs
    print(f"first repair of 4 nodes: {first_seconds:.1f}s; killed after {len(done_before)} nodes; "
          f"resumed: {resumed['seconds']:.1f}s for {len(resumed['repaired'])} nodes")
