"""``spec.keyspaces`` on the real ring: a declared keyspace gets exactly its replication (read back from
``system_schema`` through CQL), a change of it is a step of the plan (the ALTER, then a repair where
replicas were added), and keyspaces the spec does not name are left as they are (issue 13 item 3)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from .conftest import APP, ISTHMUS, Ring, cql

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(900)]

NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"


def _isthmus(ring: Ring, *args: str, files: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    spec = files if files is not None else ring.spec_args()
    return subprocess.run([ISTHMUS, *args, *spec, "--kubeconfig", str(ring.lab.kubeconfig)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "250"})


def _spec(ring: Ring, name: str, keyspaces: list[dict[str, Any]] | None) -> list[str]:
    app = copy.deepcopy(APP)
    if keyspaces is not None:
        app["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    path = ring.files[1].with_name(name)
    path.write_text(yaml.safe_dump(app, sort_keys=False))
    return ["-f", str(ring.files[0]), "-f", str(path)]


async def _replication(ring: Ring, *names: str) -> dict[str, dict[str, str]]:
    async with cql(ring, "us", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute,
                                       "SELECT keyspace_name, replication FROM system_schema.keyspaces")
        return {r.keyspace_name: dict(r.replication) for r in rows if r.keyspace_name in names}


def _step(ring: Ring, files: list[str], step_id: str) -> dict[str, Any]:
    status = subprocess.run([ISTHMUS, "rollout", "status", *files, "-o", "json", "--kubeconfig",
                             str(ring.lab.kubeconfig)], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    steps: dict[str, Any] = json.loads(status.stdout)["steps"]
    return steps[step_id]


async def test_declared_keyspaces_get_their_replication_and_changes_run_as_plan_steps(ring: Ring) -> None:
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS byhand WITH replication = "
                                                 "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    byhand = (await _replication(ring, "byhand"))["byhand"]

    first = _spec(ring, "cassandra-ledger-1.yaml",
                  [{"name": "ledger", "replication": {"dc-eu": 1, "dc-us": 1, "dc-ap": 1}, "consistency": "QUORUM"}])
    plan = _isthmus(ring, "rollout", "plan", files=first)
    assert plan.returncode == 0, plan.stderr
    assert "keyspace/ledger (gated): keyspace ledger: NetworkTopologyStrategy dc-eu=1, dc-us=1, dc-ap=1 (read at " \
           "QUORUM)" in plan.stdout
    created = _isthmus(ring, "apply", "--wait", files=first)
    assert created.returncode == 0, created.stdout + created.stderr
    assert (await _replication(ring, "ledger"))["ledger"] == {"class": NTS, "dc-eu": "1", "dc-us": "1", "dc-ap": "1"}
    step = _step(ring, first, "keyspace/ledger")
    assert step["outcome"] == "Done" and step["note"].startswith(
        "created with NetworkTopologyStrategy dc-eu=1, dc-us=1, dc-ap=1 (through eu/ring-dc-eu-r1-0"), step

    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS ledger.txns (id int PRIMARY KEY, "
                                                 "amount int)")
        await asyncio.to_thread(session.execute, "INSERT INTO ledger.txns (id, amount) VALUES (1, 42)")

    grown = _spec(ring, "cassandra-ledger-2.yaml",
                  [{"name": "ledger", "replication": {"dc-eu": 2, "dc-us": 1, "dc-ap": 1}, "consistency": "QUORUM"}])
    changed = _isthmus(ring, "apply", "--wait", files=grown)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert (await _replication(ring, "ledger"))["ledger"] == {"class": NTS, "dc-eu": "2", "dc-us": "1", "dc-ap": "1"}
    step = _step(ring, grown, "keyspace/ledger")
    assert step["outcome"] == "Done" and step["writes"] == 1, step
    assert step["note"].startswith("replication dc-eu 1 -> 2 (through eu/"), step
    assert step["note"].endswith("; repaired on eu/ring-dc-eu-r1-0, eu/ring-dc-eu-r2-0"), step
    for rack in (1, 2):  # both dc-eu replicas hold the row now: each node answers it from its own data
        got = ring.lab.kubectl("eu", "exec", "-n", "ring", ring.pod("eu", rack), "-c", "cassandra", "--",
                               "nodetool", "getendpoints", "ledger", "txns", "1", timeout=120)
        assert len(got.split()) == 4, got  # one replica in each of dc-us and dc-ap, two in dc-eu

    # The spec stops naming it: left as it is (never dropped), like the keyspace made by hand.
    restored = _isthmus(ring, "apply", "--wait")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    after = await _replication(ring, "ledger", "byhand")
    assert after == {"ledger": {"class": NTS, "dc-eu": "2", "dc-us": "1", "dc-ap": "1"}, "byhand": byhand}
    async with cql(ring, "us", "cassandra-admin", ring.password()) as session:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement
        row = (await asyncio.to_thread(session.execute, SimpleStatement(
            "SELECT amount FROM ledger.txns WHERE id = 1", consistency_level=ConsistencyLevel.QUORUM))).one()
        assert row.amount == 42


async def test_the_live_plan_says_how_each_datacenter_restarts_from_the_rings_replication(ring: Ring) -> None:
    """The shared ring cannot prove a rack at once (dc-eu has 2 racks of one node; Cassandra keeps
    system_traces and system_distributed on SimpleStrategy): every datacenter goes one node at a time, and
    the reason names a keyspace as the ring really has it (read here through CQL, there through nodetool)."""
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute,
                                       "SELECT keyspace_name, replication FROM system_schema.keyspaces")
        replication = {r.keyspace_name: dict(r.replication) for r in rows}
    assert replication["system_traces"]["class"].endswith(".SimpleStrategy")
    shown = _isthmus(ring, "rollout", "plan", "--live", "-o", "json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    restarts = json.loads(shown.stdout)["restarts"]
    assert [r["datacenter"] for r in restarts] == ["dc-eu", "dc-us", "dc-ap"]
    for choice in restarts:
        assert choice["rackAtOnce"] is False, choice
        named = choice["reason"].split()[1]
        assert choice["reason"].startswith(f"keyspace {named} "), choice
        strategy = replication[named]["class"].rsplit(".", 1)[-1]
        if strategy == "SimpleStrategy":
            assert choice["reason"].endswith("is on SimpleStrategy, which places replicas without regard to racks")
        else:
            rf = int(replication[named][choice["datacenter"]])
            assert f"has {rf} replica" in choice["reason"] and rf < 3, choice
    table = _isthmus(ring, "rollout", "plan", "--live")
    assert table.returncode == 0, table.stderr
    assert f"  dc-eu: one node at a time: {restarts[0]['reason']}" in table.stdout
