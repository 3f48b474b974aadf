"""Removing and adding a datacenter on the real ring (issue 13 items 4 and 5), leaving the shared ring as found.

dc-ap is removed from the spec: first refused (exit 2, the numbers, nothing written) while a keyspace the change
does not declare still replicates there; then, with the change declaring every such keyspace without dc-ap, the
replication changes first, dc-ap's node is decommissioned and its objects and volumes are deleted, and no
remaining node's ``nodetool status`` shows a node of dc-ap (no DN ghost). Then dc-ap is added back to the two-DC
ring, which holds rows: its node starts without bootstrap, the keyspaces gain replicas there, ``nodetool rebuild
-- dc-eu`` fills it. The ``isthmus apply`` is killed with SIGKILL once the node's rebuild is on record as done
(the datacenter has one node: the lab's ap cluster has one host), and ``isthmus rollout resume`` finishes
without rebuilding it again (the persisted record is the killed run's; Cassandra logged one rebuild). Afterwards
every row is readable at LOCAL_ONE in dc-ap. A client reading at LOCAL_QUORUM in dc-eu, which neither operation
restarts, counts zero failed requests throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest
import yaml

from isthmus.rollout.datacenterstate import NodeProgressStore
from isthmus.rollout.progress import Outcome

from .conftest import APP, ISTHMUS, RACKS, Ring, cql, until

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.ringops, pytest.mark.timeout(1500)]

ROWS = 300
NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"
SYSTEM = ("system_auth", "system_distributed", "system_traces")


def _isthmus(ring: Ring, files: list[str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *args, *files, "--kubeconfig", str(ring.lab.kubeconfig)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "250"})


def _spec(ring: Ring, name: str, *, datacenters: list[str], keyspaces: list[dict[str, Any]]) -> list[str]:
    app = copy.deepcopy(APP)
    app["spec"]["datacenters"] = [dc for dc in app["spec"]["datacenters"]  # type: ignore[index]
                                  if dc["name"] in datacenters]
    app["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    path = ring.files[1].with_name(name)
    path.write_text(yaml.safe_dump(app, sort_keys=False))
    return ["-f", str(ring.files[0]), "-f", str(path)]


async def _replication(ring: Ring) -> dict[str, dict[str, int]]:
    """Every NetworkTopologyStrategy keyspace's replicas per datacenter, as the ring has them."""
    async with cql(ring, "us", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute,
                                       "SELECT keyspace_name, replication FROM system_schema.keyspaces")
        return {r.keyspace_name: {k: int(v) for k, v in dict(r.replication).items() if k != "class"}
                for r in rows if dict(r.replication)["class"] == NTS}


def _ring_lines(ring: Ring, cluster: str, rack: int = 1) -> list[str]:
    out = ring.lab.kubectl(cluster, "exec", "-n", "ring", ring.pod(cluster, rack), "-c", "cassandra", "--",
                           "nodetool", "status", timeout=120)
    return [ln for ln in out.splitlines() if ln[:2] in ("UN", "DN", "UJ", "UL", "DL", "DJ", "UM", "DM")]


def _remaining_views(ring: Ring) -> dict[str, list[str]]:
    return {f"{c}/r{r}": _ring_lines(ring, c, r) for c in ("eu", "us") for r in range(1, len(RACKS[c]) + 1)}


def _rebuilds(ring: Ring) -> int:
    log = ring.lab.kubectl("ap", "logs", "-n", "ring", ring.pod("ap"), "-c", "cassandra")
    return log.count("Executing streaming plan for Rebuild")


async def _progress(ring: Ring, revision: int) -> Any:
    registry = ring.registry()
    try:
        return await NodeProgressStore(registry["eu"], "ring").load(revision)
    finally:
        await registry.close()


async def _state(ring: Ring) -> dict[str, Any]:
    proc = await asyncio.to_thread(_isthmus, ring, ring.spec_args(), "rollout", "status", "-o", "json", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


class Client:
    """Reads at LOCAL_QUORUM through dc-eu's node, over and over, counting failed requests."""

    def __init__(self, session: Any) -> None:
        self.session, self.ok, self.failed, self.errors = session, 0, 0, list[str]()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement

        read = SimpleStatement("SELECT v FROM dcops.kv WHERE k = %s", consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        k = 0
        while not self._stop.is_set():
            try:
                rows = await asyncio.to_thread(self.session.execute, read, (k % ROWS,))
                assert rows.one().v == f"row {k % ROWS}"
                self.ok += 1
            except Exception as exc:  # every failure counts, whatever it is
                self.failed += 1
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)

    def stop(self) -> None:
        self._stop.set()


async def test_remove_a_datacenter_then_add_it_back_with_a_rebuild_that_survives_sigkill(ring: Ring) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    eu_nodes, us_nodes, ap_nodes = (len(RACKS[c]) for c in ("eu", "us", "ap"))
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "CREATE KEYSPACE IF NOT EXISTS dcops WITH replication = {'class': "
                                f"'NetworkTopologyStrategy', 'dc-eu': {eu_nodes}, 'dc-us': 1, 'dc-ap': 1}}")
        await asyncio.to_thread(session.execute, "CREATE TABLE IF NOT EXISTS dcops.kv (k int PRIMARY KEY, v text)")
        insert = SimpleStatement("INSERT INTO dcops.kv (k, v) VALUES (%s, %s)", consistency_level=ConsistencyLevel.ALL)
        for k in range(ROWS):
            await asyncio.to_thread(session.execute, insert, (k, f"row {k}"))
    original = await _replication(ring)
    # Every user keyspace with replicas in dc-ap (this module's, and any another module left) must be declared.
    held = {ks: rf for ks, rf in original.items() if rf.get("dc-ap") and ks not in SYSTEM}
    assert "dcops" in held
    without = [{"name": ks, "replication": {dc: n for dc, n in rf.items() if dc != "dc-ap"}, "consistency": "ONE"}
               for ks, rf in sorted(held.items())]
    with_ap = [{"name": ks, "replication": rf, "consistency": "ONE"} for ks, rf in sorted(held.items())]

    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        client = Client(session)
        reading = asyncio.create_task(client.run())
        try:
            # 1. Removal without the replication change: refused, exit 2, the numbers, nothing written.
            before = await _state(ring)
            refused_files = _spec(ring, "cassandra-no-ap-refused.yaml", datacenters=["dc-eu", "dc-us"],
                                  keyspaces=[k for k in without if k["name"] != "dcops"])
            proc = await asyncio.to_thread(_isthmus, ring, refused_files, "apply")
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert "spec.datacenters: datacenter 'dc-ap' (cluster ap, 1 node) cannot be removed: keyspace 'dcops' " \
                   "still has 1 replica there" in proc.stderr, proc.stderr
            assert "nothing was written" in proc.stderr
            assert await _state(ring) == before  # no revision, no rollout, no lock taken
            assert ring.lab.kubectl("ap", "get", "statefulsets", "-n", "ring", "-o", "name").strip()

            # 2. With it: the plan says what happens, then replication first, decommission, objects deleted.
            remove_files = _spec(ring, "cassandra-no-ap.yaml", datacenters=["dc-eu", "dc-us"], keyspaces=without)
            plan = await asyncio.to_thread(_isthmus, ring, remove_files, "rollout", "plan", "--live")
            assert plan.returncode == 0, plan.stdout + plan.stderr
            assert "decommission/dc-ap (gated): datacenter dc-ap was removed" in plan.stdout, plan.stdout
            assert "dc-ap is removed (1 nodes in ap)" in plan.stdout
            started = time.monotonic()
            proc = await asyncio.to_thread(_isthmus, ring, remove_files, "apply", "--timeout", "800")
            removed_seconds = time.monotonic() - started
            assert proc.returncode == 0, proc.stdout + proc.stderr
            state = await _state(ring)
            order = [s["id"] for w in state["plan"]["waves"] for ln in w["lanes"] for s in ln["steps"]]
            assert order.index("keyspace/dcops") < order.index("decommission/dc-ap") < order.index("finalize/eu")
            note = state["steps"]["decommission/dc-ap"]["note"]
            assert "ring-dc-ap-r1-0: decommissioned" in note and "no remaining node sees dc-ap" in note, note
            assert "system_auth replication" in note, note  # the undeclared system keyspace lost dc-ap itself
            replication = await _replication(ring)
            assert all("dc-ap" not in rf for rf in replication.values()), replication
            views = await asyncio.to_thread(_remaining_views, ring)
            for where, lines in views.items():  # no DN, no ghost of dc-ap: exactly the remaining nodes, all UN
                assert len(lines) == eu_nodes + us_nodes and all(ln.startswith("UN") for ln in lines), (where, lines)
            left = ring.lab.kubectl("ap", "get", "statefulsets,pods,services,pvc,configmaps", "-n", "ring",
                                    "-o", "name")
            assert not [n for n in left.split() if "ring-dc-ap" in n or n.split("/")[0] != "configmap"], left

            # 3. Add dc-ap back (the full spec again, its keyspaces declared with dc-ap); SIGKILL once rebuilt.
            add_files = _spec(ring, "cassandra-ap-again.yaml", datacenters=["dc-eu", "dc-us", "dc-ap"],
                              keyspaces=with_ap)
            plan = await asyncio.to_thread(_isthmus, ring, add_files, "rollout", "plan", "--live")
            assert plan.returncode == 0, plan.stdout + plan.stderr
            assert "join/dc-ap (gated)" in plan.stdout and "-- dc-eu on ring-dc-ap-r1-0" in plan.stdout, plan.stdout
            started = time.monotonic()
            killed = await asyncio.create_subprocess_exec(
                ISTHMUS, "apply", *add_files, "--timeout", "800", "--kubeconfig", str(ring.lab.kubeconfig),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                deadline = time.monotonic() + 700
                revision = before["revision"] + 2
                while True:
                    progress = await _progress(ring, revision)
                    if progress.done("rebuild/dc-ap"):
                        break
                    assert killed.returncode is None, "the apply ended before its rebuild was on record"
                    assert time.monotonic() < deadline, "the rebuild never finished"
                    await asyncio.sleep(0.1)
                os.killpg(killed.pid, signal.SIGKILL)
            finally:
                if killed.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(killed.pid, signal.SIGKILL)
                await asyncio.wait_for(killed.wait(), 30)
            record = progress.steps["rebuild/dc-ap"]["ring-dc-ap-r1-0"]
            plans = _rebuilds(ring)  # one streaming plan per keyspace rebuilt
            assert plans >= 2, plans  # dcops and system_auth at least
            state = await _state(ring)
            assert state["phase"] == "Running" and state["steps"]["rebuild/dc-ap"]["outcome"] == "Running", state

            proc = await asyncio.to_thread(_isthmus, ring, add_files, "rollout", "resume", "--lock-wait", "90")
            added_seconds = time.monotonic() - started
            assert proc.returncode == 0, proc.stdout + proc.stderr
            state = await _state(ring)
            note = state["steps"]["rebuild/dc-ap"]["note"]
            assert "1 rebuilt by an earlier run (ring-dc-ap-r1-0)" in note and "rebuilt 0 node(s)" in note, note
            assert "readable at LOCAL_ONE in dc-ap" in note and "no spec keyspace" not in note, note
            after = await _progress(ring, revision)
            assert after.steps["rebuild/dc-ap"]["ring-dc-ap-r1-0"] == record  # the killed run's record, untouched
            assert record.outcome is Outcome.DONE and record.note.startswith("rebuilt from dc-eu")
            log = ring.lab.kubectl("ap", "logs", "-n", "ring", ring.pod("ap"), "-c", "cassandra")
            assert _rebuilds(ring) == plans, "Cassandra rebuilt again after the resume"
            assert "-Dcassandra.auto_bootstrap=false" in log  # Cassandra's "JVM Arguments" line: no bootstrap
        finally:
            client.stop()
            await reading

    assert client.failed == 0 and client.ok > 0, client.errors[:5]
    # Every row readable at LOCAL_ONE in dc-ap; every datacenter sees every node UN.
    async with cql(ring, "ap", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute, SimpleStatement(
            "SELECT k, v FROM dcops.kv", consistency_level=ConsistencyLevel.LOCAL_ONE))
        assert sorted((r.k, r.v) for r in rows) == [(k, f"row {k}") for k in range(ROWS)]
    assert (await _replication(ring))["dcops"] == original["dcops"]
    total = eu_nodes + us_nodes + ap_nodes

    def all_un() -> bool:
        views = {**_remaining_views(ring), "ap/r1": _ring_lines(ring, "ap")}
        return all(len(lines) == total and all(ln.startswith("UN") for ln in lines) for lines in views.values())

    await until("every node UN in every datacenter's view", all_un, 120)

    # Leave the ring as found: the module's keyspace goes, the fixture's own spec is the running revision again.
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "DROP KEYSPACE IF EXISTS dcops")
    proc = await asyncio.to_thread(_isthmus, ring, ring.spec_args(), "apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"remove dc-ap: {removed_seconds:.1f}s; add dc-ap back (killed once rebuilt, resumed): {added_seconds:.1f}s; "
          f"client: {client.ok} LOCAL_QUORUM reads, {client.failed} failed")
