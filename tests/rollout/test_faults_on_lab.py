"""Rollouts under faults, on the lab's real API servers (issue: safe multi-cluster rollouts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import FAST, Witness, cpu_requests, generations, outcome, statefulsets, wait_state

from fixtures.labspecs import app_doc, fleet_doc, load, write_specs
from isthmus.kube import ClusterRegistry
from isthmus.lab import Lab
from isthmus.rollout import (
    Fenced,
    GateVerdict,
    LeaseLock,
    LockHeld,
    LockLost,
    Outcome,
    ProgressStore,
    RevisionNotFound,
    RolloutOptions,
    RolloutPhase,
    apply_rollout,
    fence,
    history,
    lock_status,
    rollback_app,
)
from isthmus.rollout.clock import FakeClock

pytestmark = pytest.mark.lab
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def changed(name: str, **rollout: object) -> dict[str, object]:
    doc = app_doc(name)
    doc["spec"]["resources"]["cpu"] = "600m"  # type: ignore[index]
    if rollout:
        doc["spec"]["rollout"] = rollout  # type: ignore[index]
    return doc


def env(lab: Lab) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(lab.kubeconfig), "HOME": str(Path.home())}


async def test_a_frozen_member_pauses_the_rollout_and_it_completes_after_thawing(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("fz"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    _, new = load(fleet_doc(), changed("fz"))
    witness = Witness()
    task = asyncio.create_task(apply_rollout(new, fleet, registry, witness.options()))
    await wait_state(registry, "fz", lambda s: s.revision == 2 and outcome(s, "rack/dc1/ra") is Outcome.DONE)
    lab3.freeze("c3")
    try:
        paused = await wait_state(registry, "fz", lambda s: "paused" in s.message and "c3" in s.message, within=30)
        held = paused.message.split()[2].rstrip(":")  # "paused before <step>: ..."
        await witness.held(held, 5, GateVerdict.UNKNOWN)  # five more looks at the silent member, and no step started
        during = await ProgressStore(registry["c1"], "fz").load()
        assert during is not None
        assert outcome(during, "rack/dc2/ra") is Outcome.PENDING and outcome(during, "rack/dc3/ra") is Outcome.PENDING
        assert not task.done()
        assert cpu_requests_of(lab3, ("c1", "c2"), "fz")["fz-dc2-ra"] == "500m"  # no other DC started a disruptive step
        assert "c3" in paused.message
    finally:
        lab3.thaw("c3")
    result = await asyncio.wait_for(task, 180)
    assert result.phase is RolloutPhase.SUCCEEDED, result.state.to_dict()
    assert set(cpu_requests(lab3, "fz").values()) == {"600m"}
    assert any(f"paused before {held}: reachable: unknown (c3 is Unknown" in line for line in result.state.log)


def test_a_killed_rollout_resumes_and_updates_every_statefulset_exactly_once(lab3: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("kil"))
    args = [arg for f in files for arg in ("-f", str(f))]
    first = subprocess.run([ISTHMUS, "apply", *args], capture_output=True, text=True, env=env(lab3), timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert set(generations(lab3, "kil").values()) == {1}
    files = write_specs(tmp_path, fleet_doc(), changed("kil"))
    proc = subprocess.Popen([ISTHMUS, "apply", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env(lab3), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it in the middle of the second datacenter
            if cpu_requests(lab3, "kil").get("kil-dc2-ra") == "600m":
                break
            time.sleep(0.2)
        else:
            pytest.fail("the rollout never reached dc2")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert cpu_requests(lab3, "kil")["kil-dc3-rb"] == "500m"
    status = subprocess.run([ISTHMUS, "rollout", "status", *args], capture_output=True, text=True, env=env(lab3))
    assert "Running" in status.stdout, status.stdout + status.stderr
    resumed = subprocess.run([ISTHMUS, "rollout", "resume", "--lock-wait", "40", *args], capture_output=True,
                             text=True, env=env(lab3), timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Succeeded" in resumed.stdout
    assert generations(lab3, "kil") == {f"kil-dc{i}-{r}": 2 for i in (1, 2, 3) for r in ("ra", "rb")}
    assert set(cpu_requests(lab3, "kil").values()) == {"600m"}


async def test_two_concurrent_applies_one_refuses_naming_the_holder(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("two"))
    alice = RolloutOptions(identity="alice", poll_interval=0.3)
    first = asyncio.create_task(apply_rollout(app, fleet, registry, alice))
    await wait_state(registry, "two", lambda s: s.holder == "alice")
    with pytest.raises(LockHeld, match="alice"):
        await apply_rollout(app, fleet, registry, RolloutOptions(identity="bob"))
    waited = await apply_rollout(app, fleet, registry, RolloutOptions(identity="carol", lock_wait=180,
                                                                      poll_interval=0.3))
    assert (await first).ok and waited.ok
    assert waited.state.holder == "carol" and waited.state.token > (await first).state.token


async def test_an_expired_holder_taken_over_cannot_write(lab3: Lab, registry: ClusterRegistry) -> None:
    c1, c2 = registry["c1"], registry["c2"]
    clock = FakeClock(epoch=time.time() - 1000.0)  # both holders' time: lease times near the real ones
    old = LeaseLock(c1, "fnc", "old-holder", duration=2, clock=clock)
    old_token = await old.acquire()
    await fence(c2, "fnc", "fnc", old_token, old.identity)
    await clock.advance(2.5)  # the old holder stalls; its lease expires (by its own clock and by the new one's)
    assert not old.held
    new = LeaseLock(c1, "fnc", "new-holder", duration=15, clock=clock)
    new_token = await new.acquire()
    assert new_token == old_token + 1
    await fence(c2, "fnc", "fnc", new_token, new.identity)
    with pytest.raises(Fenced, match="older than"):
        await fence(c2, "fnc", "fnc", old_token, old.identity)
    with pytest.raises(LockLost, match="new-holder"):
        await old.renew()
    with pytest.raises(LockLost):
        await old.verify()
    state = await lock_status(c1, "fnc")
    assert state is not None and state.holder == "new-holder" and state.token == new_token
    # The rollout state in the control plane is fenced the same way.
    from isthmus.rollout import RolloutState, plan_rollout

    _, app = load(fleet_doc(), app_doc("fnc"))
    store = ProgressStore(c1, "fnc")
    mine = RolloutState.new(app="fnc", kind="apply", revision=1, previous=None, plan=plan_rollout(app))
    mine.token = new_token
    await store.save(mine)
    stale = RolloutState.new(app="fnc", kind="apply", revision=1, previous=None, plan=plan_rollout(app))
    stale.token = old_token
    with pytest.raises(Fenced):
        await store.save(stale)
    await new.release()
    assert (await lock_status(c1, "fnc")).holder is None  # type: ignore[union-attr]


def cli(lab: Lab, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *args], input=answer, capture_output=True, text=True, env=env(lab), timeout=120)


async def test_lock_break_of_a_live_holder_asks_first(lab3: Lab, registry: ClusterRegistry, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("brk"))
    args = [arg for f in files for arg in ("-f", str(f))]
    token = await LeaseLock(registry["c1"], "brk", "someone-else", duration=120).acquire()
    status = await asyncio.to_thread(cli, lab3, "lock", "status", *args)
    assert "someone-else" in status.stdout and f"fencing token {token}" in status.stdout
    refused = await asyncio.to_thread(cli, lab3, "lock", "break", *args, answer="n\n")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "nothing changed" in refused.stderr
    again = await asyncio.to_thread(cli, lab3, "lock", "status", *args)
    assert "someone-else" in again.stdout
    broken = await asyncio.to_thread(cli, lab3, "lock", "break", "--yes", *args)
    assert broken.returncode == 0 and "someone-else" in broken.stdout
    assert "free" in (await asyncio.to_thread(cli, lab3, "lock", "status", *args)).stdout


async def test_a_not_ready_node_in_one_cluster_blocks_a_disruptive_step_in_another(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("nrd"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    lab3.node_not_ready("c2", "c2-region-2b-1")
    _, new = load(fleet_doc(), changed("nrd"))
    witness = Witness()
    task = asyncio.create_task(apply_rollout(new, fleet, registry, witness.options()))
    try:
        state = await wait_state(registry, "nrd", lambda s: s.revision == 2
                                 and outcome(s, "prepare/c1") is Outcome.DONE, within=30)
        await witness.held("rack/dc1/ra", 5, GateVerdict.WAIT)  # held back five times by c2's NotReady node
        state = await wait_state(registry, "nrd", lambda s: True)
        assert outcome(state, "rack/dc1/ra") is Outcome.PENDING, state.to_dict()
        assert cpu_requests(lab3, "nrd")["nrd-dc1-ra"] == "500m"
        assert not task.done()
    finally:
        lab3.node_recover("c2", "c2-region-2b-1")
    result = await asyncio.wait_for(task, 180)
    assert result.ok, result.state.to_dict()
    assert set(cpu_requests(lab3, "nrd").values()) == {"600m"}


async def test_pods_that_never_become_ready_stop_the_rollout_and_it_rolls_back(
        lab3: Lab, registry: ClusterRegistry) -> None:
    strategy = {"onFailure": "rollback", "progressDeadlineSeconds": 90}
    doc = app_doc("bad")
    doc["spec"]["rollout"] = strategy  # type: ignore[index]
    fleet, app = load(fleet_doc(), doc)
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    before = {c: {n: s["metadata"]["annotations"]["isthmus.dev/content-hash"]
                  for n, s in statefulsets(lab3, c, "bad").items()} for c in ("c1", "c2", "c3")}
    broken = app_doc("bad")
    broken["spec"]["resources"]["cpu"] = "5000"  # type: ignore[index]  # no node has that: unschedulable
    broken["spec"]["rollout"] = strategy  # type: ignore[index]
    _, new = load(fleet_doc(), broken)
    result = await apply_rollout(new, fleet, registry, FAST)
    assert result.phase is RolloutPhase.ROLLED_BACK, (result.state.message, result.notes, result.state.log[-6:])
    assert any("failure budget" in n and "unschedulable" in n for n in result.notes), result.notes
    assert not any("progress deadline" in n for n in result.notes), result.notes  # the budget stopped it first
    after = {c: {n: s["metadata"]["annotations"]["isthmus.dev/content-hash"]
                 for n, s in statefulsets(lab3, c, "bad").items()} for c in ("c1", "c2", "c3")}
    assert after == before
    assert set(cpu_requests(lab3, "bad").values()) == {"500m"}
    hist = await history(registry, "c1", ["c1", "c2", "c3"], "bad", "bad")
    assert [(r.number, r.origin) for r in hist.revisions] == [(1, "apply"), (2, "apply"), (3, "rollback to 1")]
    assert hist.state_of(3) == {"c1": "Running", "c2": "Running", "c3": "Running"}


async def test_history_and_rollback_survive_the_loss_of_a_member(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("lst"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    _, new = load(fleet_doc(), changed("lst"))
    assert (await apply_rollout(new, fleet, registry, FAST)).ok
    with pytest.raises(RevisionNotFound, match="no revision 99"):
        await rollback_app(app, fleet, registry, 99, FAST)
    assert (await lock_status(registry["c1"], "lst")).holder is None  # type: ignore[union-attr]
    lab3.stop_cluster("c3")
    try:
        hist = await history(registry, "c1", ["c1", "c2", "c3"], "lst", "lst")
        assert hist.state_of(2) == {"c1": "Running", "c2": "Running", "c3": "Unknown"}
        opts = RolloutOptions(poll_interval=0.3, skip_clusters=frozenset({"c3"}))
        result = await rollback_app(app, fleet, registry, 1, opts)
        assert result.ok, result.state.to_dict()
        assert outcome(result.state, "rack/dc3/ra") is Outcome.SKIPPED
        assert any("skipped by --skip-cluster" in line for line in result.state.log)
        requests = {n: r for n, r in cpu_requests_of(lab3, ("c1", "c2"), "lst").items()}
        assert set(requests.values()) == {"500m"}
        hist = await history(registry, "c1", ["c1", "c2", "c3"], "lst", "lst")
        assert hist.state_of(3) == {"c1": "Running", "c2": "Running", "c3": "Unknown"}
    finally:
        with contextlib.suppress(Exception):
            lab3.start_cluster("c3")
    registry["c3"].breaker.succeeded()
    hist = await history(registry, "c1", ["c1", "c2", "c3"], "lst", "lst")
    assert hist.state_of(2)["c3"] == "Running"  # c3 still runs what it ran, and knows it


def cpu_requests_of(lab: Lab, clusters: tuple[str, ...], namespace: str) -> dict[str, str]:
    return {name: s["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            for c in clusters for name, s in statefulsets(lab, c, namespace).items()}
