"""A change that rolls no pods reaches every member at once; one that does is still gated (lab)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from _helpers import FAST, Witness, cpu_requests, generations, outcome

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterRegistry, ObjectRef
from isthmus.lab import Lab
from isthmus.rollout import (
    GateVerdict,
    LeaseLock,
    Outcome,
    ProgressStore,
    RolloutOptions,
    RolloutPhase,
    apply_rollout,
    fence,
    fence_unchanged_since_us,
)
from isthmus.rollout.revisions import RevisionStore
from isthmus.rollout.rolling import _sizes_as_last_rolled_out as sizes_as_last_rolled_out

pytestmark = pytest.mark.lab


def guarded(name: str, tables: list[str], *, cpu: str = "500m") -> dict[str, Any]:
    doc = app_doc(name)
    doc["spec"]["resources"]["cpu"] = cpu
    doc["spec"]["access"] = {"enabled": True, "rules": [
        {"name": "orders", "identities": {"users": ["orders_app"]},
         "allow": [{"actions": ["read", "write"], "tables": tables}]}]}
    return doc


def policy(lab: Lab, cluster: str, name: str) -> str:
    out = json.loads(lab.kubectl(cluster, "get", "configmap", f"{name}-cqlguard", "-n", name, "-o", "json"))
    return str(out["data"]["policy.yaml"])


async def test_a_change_that_rolls_no_pods_lands_everywhere_in_the_prepare_wave_past_closed_gates(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), guarded("prp", ["shop.orders"]))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    before = generations(lab3, "prp")
    lab3.node_not_ready("c2", "c2-region-2b-1")  # every gate would now wait, anywhere
    try:
        _, grant = load(fleet_doc(), guarded("prp", ["shop.orders", "shop.order_items"]))
        result = await asyncio.wait_for(apply_rollout(grant, fleet, registry, FAST), 60)
        assert result.phase is RolloutPhase.SUCCEEDED, result.state.to_dict()
        assert all("shop.order_items" in policy(lab3, c, "prp") for c in ("c1", "c2", "c3"))
        assert generations(lab3, "prp") == before  # no StatefulSet written: no pod rolled
        racks = [s for s in result.state.plan.steps if s.kind.value == "rack"]
        assert racks and all(result.state.steps[s.id].note.startswith("unchanged") for s in racks)
        assert result.stats.gate_evaluations == 0 and result.stats.converge_seconds == 0
        # The persisted state (writes grouped, not one per step boundary) is complete.
        stored = await ProgressStore(registry["c1"], "prp").load()
        assert stored is not None and stored.phase is RolloutPhase.SUCCEEDED and stored.current is None
        assert all(outcome(stored, s.id) is Outcome.DONE for s in stored.plan.steps)
        assert result.stats.state_writes < len(stored.plan.steps)

        # The same NotReady node holds a change that rolls pods before its first rack, as before.
        _, rolling = load(fleet_doc(), guarded("prp", ["shop.orders", "shop.order_items"], cpu="600m"))
        witness = Witness()
        task = asyncio.create_task(apply_rollout(rolling, fleet, registry, witness.options()))
        await witness.held("rack/dc1/ra", 5, GateVerdict.WAIT)  # the gates held its first rack back five times
        assert not task.done()
        assert cpu_requests(lab3, "prp")["prp-dc1-ra"] == "500m"
        state = await ProgressStore(registry["c1"], "prp").load()
        assert state is not None and outcome(state, "prepare/c3") is Outcome.DONE
        assert outcome(state, "rack/dc1/ra") is Outcome.PENDING
    finally:
        lab3.node_recover("c2", "c2-region-2b-1")
    done = await asyncio.wait_for(task, 240)
    assert done.ok, done.state.to_dict()
    assert set(cpu_requests(lab3, "prp").values()) == {"600m"}
    assert done.stats.gate_evaluations > 0


async def test_repair_writes_back_an_object_edited_by_hand_although_its_hash_matches(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("rep"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    lab3.kubectl("c2", "patch", "configmap", "rep-dc2-config", "-n", "rep", "--type", "merge",
                 "-p", json.dumps({"data": {"cassandra.yaml": "edited: by hand\n"}}))
    plain = await apply_rollout(app, fleet, registry, FAST)  # the hash still matches: a plain apply skips it
    assert plain.ok
    edited = json.loads(lab3.kubectl("c2", "get", "configmap", "rep-dc2-config", "-n", "rep", "-o", "json"))
    assert edited["data"]["cassandra.yaml"] == "edited: by hand\n"
    ref = ObjectRef("v1", "ConfigMap", "rep", "rep-dc2-config")
    repaired = await apply_rollout(app, fleet, registry, RolloutOptions(poll_interval=0.3,
                                                                        repair={"c2": frozenset({ref})}))
    assert repaired.ok and repaired.reports["c2"][ref].value == "configured"
    fixed = json.loads(lab3.kubectl("c2", "get", "configmap", "rep-dc2-config", "-n", "rep", "-o", "json"))
    assert fixed["data"]["cassandra.yaml"] != "edited: by hand\n" and "cluster_name" in fixed["data"]["cassandra.yaml"]
    assert generations(lab3, "rep") == {f"rep-dc{i}-{r}": 1 for i in (1, 2, 3) for r in ("ra", "rb")}


async def test_a_member_whose_fence_is_as_we_left_it_is_written_first_and_written_again_if_the_fence_moved(
        lab3: Lab, registry: ClusterRegistry) -> None:
    """The operator's shortcut (EarlyFences.unchanged): a lock taken straight from this process's own release,
    with each member's fence still holding our previous token, lets ``prepare`` write before the new fence
    is in; the fence is awaited right after, and a member whose fence someone touched is written again."""
    fleet, app = load(fleet_doc(), guarded("ltf", ["shop.orders"]))
    lead = RolloutOptions(identity="lead", poll_interval=0.3)
    assert (await apply_rollout(app, fleet, registry, lead)).ok
    members = app.member_clusters()
    # The same process rolled this revision out to the end: a change of anything but a size need not ask the
    # members for their running sizes; one of a size must.
    stores = RevisionStore(registry["c1"], "ltf"), ProgressStore(registry["c1"], "ltf")
    assert sizes_as_last_rolled_out(*stores, app)
    resized = guarded("ltf", ["shop.orders"])
    resized["spec"]["datacenters"][1]["size"] += 1
    assert not sizes_as_last_rolled_out(*stores, load(fleet_doc(), resized)[1])
    lock = LeaseLock(registry["c1"], "ltf", "lead")
    await lock.acquire()
    try:
        assert lock.succeeded_own_release
        assert all(fence_unchanged_since_us(registry[m], "ltf", "ltf", lock) for m in members)
        for m in members:  # as a holder does, so the chain of our own tokens goes on
            assert await fence(registry[m], "ltf", "ltf", lock.token, "lead")
    finally:
        await lock.release()

    lab3.kubectl("c2", "annotate", "configmap", "isthmus-fence-ltf", "-n", "ltf", "touched=by-hand")
    said: list[tuple[str, str]] = []
    _, grant = load(fleet_doc(), guarded("ltf", ["shop.orders", "shop.order_items"]))
    result = await apply_rollout(grant, fleet, registry, lead, lambda c, m: said.append((c, m)))
    assert result.phase is RolloutPhase.SUCCEEDED, result.state.to_dict()
    assert all("shop.order_items" in policy(lab3, c, "ltf") for c in members)
    assert {c for c, m in said if "fence had changed" in m} == {"c2"}, said

    # Someone else held the lock in between: no member is trusted, whatever its fence says.
    other = LeaseLock(registry["c1"], "ltf", "someone-else")
    await other.acquire()
    await other.release()
    again = LeaseLock(registry["c1"], "ltf", "lead")
    await again.acquire()
    try:
        assert not any(fence_unchanged_since_us(registry[m], "ltf", "ltf", again) for m in members)
    finally:
        await again.release()
