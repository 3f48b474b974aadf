"""The engine's pure parts, without a cluster: what to do with a step (decide), what a member holds
(MemberView), the gate loop and a rack's deadline on a fake clock, and each member's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterConnection, KubeObject, ObjectRef, Reach
from isthmus.kube.objects import HASH_ANNOTATION
from isthmus.render import render
from isthmus.rollout import (
    ClusterView,
    FakeClock,
    GateContext,
    GateResult,
    GateVerdict,
    MemberOutcome,
    Outcome,
    RolloutPhase,
    RolloutState,
    Step,
    StepFailed,
    StepKind,
    plan_rollout,
)
from isthmus.rollout.deciding import Choice, StepDecision, StepSettings, changed_since, decide
from isthmus.rollout.gating import Gatekeeper
from isthmus.rollout.memberview import MemberView, RecordedRevision
from isthmus.rollout.progress import StepRecord
from isthmus.rollout.results import member_results
from isthmus.rollout.steps import step_objects

FLEET, APP = load(fleet_doc(), app_doc("dec"))
MANIFESTS = render(APP, FLEET)
RACK = Step(StepKind.RACK, "c1", "dc1", "ra")
PREPARE = Step(StepKind.PREPARE, "c1")
FINALIZE = Step(StepKind.FINALIZE, "c1")
STS = ObjectRef("apps/v1", "StatefulSet", "dec", "dec-dc1-ra")


def objects(step: Step) -> list[KubeObject]:
    return list(step_objects(step, MANIFESTS.for_cluster(step.cluster)))


def hashed(obj: KubeObject, value: str | None) -> KubeObject:
    """``obj`` as it would be live with content hash ``value`` (unchanged: None)."""
    if value is None:
        return obj
    meta = obj["metadata"]
    return {**obj, "metadata": {**meta, "annotations": {**meta["annotations"], HASH_ANNOTATION: value}}}


def holding(objs: Sequence[KubeObject], *, edit: ObjectRef | None = None, extra: Sequence[ObjectRef] = (),
            record: RecordedRevision | None = None) -> MemberView:
    """A member that holds ``objs`` (``edit`` with another hash; ``extra`` also in its inventory)."""
    live = {ObjectRef.of(o): hashed(o, "other" if ObjectRef.of(o) == edit else None) for o in objs}
    return MemberView("c1", live, frozenset((o["apiVersion"], o["kind"]) for o in objs),
                      frozenset(live) | frozenset(extra), record)


def sts_only(objs: Sequence[KubeObject], **hashes: str) -> MemberView:
    live = {ObjectRef.of(o): hashed(o, hashes.get(o["metadata"]["name"].replace("-", "_")))
            for o in objs if o["kind"] == "StatefulSet"}
    return MemberView("c1", live, frozenset({("apps/v1", "StatefulSet")}))


PENDING = StepRecord()
PLAIN = StepSettings(revision=2)
REAPPLY = StepSettings(revision=2, reapply=True)


def test_done_or_skipped_steps_and_skipped_members_are_skipped() -> None:
    assert decide(RACK, StepRecord(Outcome.DONE), MemberView("c1"), PLAIN, objects(RACK)).choice is Choice.SKIP
    assert decide(RACK, StepRecord(Outcome.SKIPPED), MemberView("c1"), PLAIN, objects(RACK)).note == ""
    skipped = decide(RACK, PENDING, MemberView("c1"), StepSettings(skip_clusters=frozenset({"c1"})), objects(RACK))
    assert (skipped.choice, skipped.note) == (Choice.SKIP, "skipped by --skip-cluster (logged override)")


def test_a_rack_converges_unless_its_statefulset_already_holds_the_content() -> None:
    everything = objects(FINALIZE)
    unread = decide(RACK, PENDING, MemberView("c1"), PLAIN, objects(RACK))
    assert (unread.choice, unread.look) == (Choice.CONVERGE, True)  # its StatefulSet not read yet: read it first
    same = decide(RACK, PENDING, sts_only(everything), PLAIN, objects(RACK))
    assert (same.choice, same.note) == (Choice.UNCHANGED, "unchanged: nothing to roll")
    assert decide(RACK, PENDING, sts_only(everything, dec_dc1_ra="old"), PLAIN, objects(RACK)).choice \
        is Choice.CONVERGE
    missing = MemberView("c1", {}, frozenset({("apps/v1", "StatefulSet")}))
    assert decide(RACK, PENDING, missing, PLAIN, objects(RACK)).choice is Choice.CONVERGE
    # Interrupted after it was marked Running: converge as before, whatever the live content says.
    assert decide(RACK, StepRecord(Outcome.RUNNING), sts_only(everything), PLAIN, objects(RACK)).choice \
        is Choice.CONVERGE
    assert decide(RACK, StepRecord(Outcome.RUNNING), MemberView("c1"), PLAIN, objects(RACK)) == StepDecision(
        Choice.CONVERGE)  # nothing to read for that
    # Named for repair (drift correction): a real, gated step although the hash matches.
    repair = StepSettings(revision=2, repair={"c1": frozenset({STS})})
    assert decide(RACK, PENDING, sts_only(everything), repair, objects(RACK)).choice is Choice.CONVERGE


def test_prepare_applies_without_gates_and_a_reapply_looks_first() -> None:
    mine = objects(PREPARE)
    assert decide(PREPARE, PENDING, MemberView("c1"), PLAIN, mine).choice is Choice.APPLY
    look = decide(PREPARE, PENDING, MemberView("c1"), REAPPLY, mine)
    assert (look.choice, look.look) == (Choice.APPLY, True)
    held = decide(PREPARE, PENDING, holding(mine), REAPPLY, mine)
    assert (held.choice, held.note) == (Choice.UNCHANGED, "unchanged: the member holds all of it")
    config = next(ObjectRef.of(o) for o in mine if o["kind"] == "ConfigMap")
    assert decide(PREPARE, PENDING, holding(mine, edit=config), REAPPLY, mine) == decide(
        PREPARE, PENDING, MemberView("c1"), PLAIN, mine)
    not_listed = MemberView("c1", holding(mine).live, holding(mine).kinds, frozenset())
    assert decide(PREPARE, PENDING, not_listed, REAPPLY, mine).choice is Choice.APPLY
    repair = StepSettings(revision=2, reapply=True, repair={"c1": frozenset({config})})
    assert decide(PREPARE, PENDING, holding(mine), repair, mine).choice is Choice.APPLY


def test_finalize_is_gated_only_when_a_statefulset_changes_or_would_be_pruned() -> None:
    everything = objects(FINALIZE)
    assert decide(FINALIZE, PENDING, sts_only(everything), PLAIN, everything).choice is Choice.APPLY
    assert decide(FINALIZE, PENDING, sts_only(everything, dec_dc1_ra="old"), PLAIN, everything).choice \
        is Choice.GATE
    left = sts_only(everything)
    assert left.live is not None
    gone = hashed(next(o for o in everything if o["kind"] == "StatefulSet"), "x")
    gone = {**gone, "metadata": {**gone["metadata"], "name": "dec-dc1-rz"}}
    pruned = MemberView("c1", {**left.live, ObjectRef.of(gone): gone}, left.kinds)
    assert decide(FINALIZE, PENDING, pruned, PLAIN, everything).choice is Choice.GATE


def test_a_reapplied_finalize_is_unchanged_only_when_the_member_runs_exactly_this_revision() -> None:
    everything = objects(FINALIZE)
    runs = holding(everything, record=RecordedRevision(2))
    assert decide(FINALIZE, PENDING, runs, REAPPLY, everything).choice is Choice.UNCHANGED
    assert decide(FINALIZE, PENDING, holding(everything, record=RecordedRevision(1)), REAPPLY, everything).choice \
        is Choice.APPLY
    assert decide(FINALIZE, PENDING, holding(everything, record=RecordedRevision(2, target=3)), REAPPLY,
                  everything).choice is Choice.APPLY
    stale = holding(everything, record=RecordedRevision(2), extra=[ObjectRef("v1", "ConfigMap", "dec", "gone")])
    assert decide(FINALIZE, PENDING, stale, REAPPLY, everything).choice is Choice.APPLY  # something to prune
    no_record = decide(FINALIZE, PENDING, sts_only(everything), REAPPLY, everything)
    assert (no_record.choice, no_record.look) == (Choice.APPLY, True)


def test_a_member_view_says_none_for_what_it_did_not_read() -> None:
    everything = objects(FINALIZE)
    view = sts_only(everything)
    assert view.rolls_pods(objects(RACK)) is False and view.holds(everything) is None
    assert view.runs(everything, 2) is None and MemberView("c1").rolls_pods(objects(RACK)) is None
    full = view.merged(holding(objects(PREPARE), record=RecordedRevision(2)))
    assert full.statefulsets() == view.statefulsets() and full.holds(objects(PREPARE)) is True
    assert full.record == RecordedRevision(2)


def test_changed_since_the_baseline_is_only_what_differs_and_only_when_provable() -> None:
    mine = objects(PREPARE)
    base = {"c1": list(MANIFESTS.for_cluster("c1"))}
    config = next(o for o in mine if o["kind"] == "ConfigMap")
    edited = {**config, "metadata": {**config["metadata"], "annotations": {
        **config["metadata"]["annotations"], "isthmus.dev/content-hash": "new"}}}
    now = [edited if o is config else o for o in mine]
    desired = MANIFESTS.for_cluster("c1")
    assert changed_since(base, 1, RecordedRevision(1), desired, now, cluster="c1") == [edited]
    assert changed_since(base, 1, RecordedRevision(1), desired, mine, cluster="c1") == []
    assert changed_since(base, 1, RecordedRevision(1, target=2), desired, now, cluster="c1") is None
    assert changed_since(base, 1, RecordedRevision(0), desired, now, cluster="c1") is None
    assert changed_since(base, 1, None, desired, now, cluster="c1") is None
    assert changed_since(base, 1, RecordedRevision(1), desired[:-1], now, cluster="c1") is None  # one removed


# ---------------------------------------------------------------- the gate loop on a fake clock


class Scripted:
    """A gate whose verdicts are given in advance (the last one repeats); counts its evaluations."""

    name = "scripted"

    def __init__(self, *verdicts: GateVerdict) -> None:
        self.verdicts, self.asked = list(verdicts), 0

    async def check(self, ctx: GateContext) -> GateResult:
        verdict = self.verdicts[min(self.asked, len(self.verdicts) - 1)]
        self.asked += 1
        return GateResult(self.name, verdict, f"evaluation {self.asked}")


async def observe_nothing(connections: Mapping[str, ClusterConnection], app: str,
                          namespace: str) -> dict[str, ClusterView]:
    return {"c1": ClusterView("c1", Reach.REACHED)}


def keeper(gate: Scripted, clock: FakeClock, said: list[str], **kw: Any) -> Gatekeeper:
    async def preflight(step: Step, conn: ClusterConnection, objs: Sequence[KubeObject]) -> None:
        said.append("dry run")

    async def paused(message: str) -> None:
        said.append(f"recorded: {message}")

    return Gatekeeper(app="dec", namespace="dec", gates=(gate,), poll_interval=1.0, progress_deadline=10.0,
                      clock=clock, observe=observe_nothing, preflight=preflight, paused=paused,
                      say=lambda _c, m, _log: said.append(m), **kw)


async def test_gates_that_keep_waiting_fail_the_step_at_the_progress_deadline_and_not_before() -> None:
    clock, said, gate = FakeClock(), [], Scripted(GateVerdict.WAIT)
    task = asyncio.create_task(keeper(gate, clock, said).wait(RACK, None, [], {}))  # type: ignore[arg-type]
    for _ in range(10):  # ten polls of one second: 10 s waited is within the deadline, the step still waits
        await clock.until_sleeping()
        assert not task.done()
        await clock.advance(1.0)
    await clock.until_sleeping()
    assert not task.done() and gate.asked == 11 and said.count("dry run") == 1  # its write is dry-run once
    await clock.advance(1.0)
    with pytest.raises(StepFailed, match="gates not satisfied within 10s: scripted: wait"):
        await asyncio.wait_for(task, 5)
    assert said[:2] == ["dry run", "waiting before rack/dc1/ra: scripted: wait (evaluation 1)"]


async def test_time_paused_on_a_silent_member_does_not_count_against_the_deadline() -> None:
    clock, said = FakeClock(), []
    gate = Scripted(*[GateVerdict.UNKNOWN] * 30, GateVerdict.WAIT, GateVerdict.PASS)
    task = asyncio.create_task(keeper(gate, clock, said).wait(RACK, None, [], {}))  # type: ignore[arg-type]
    while not task.done():
        await clock.until_sleeping()
        await clock.advance(1.0)
    await task  # passed after 31 s of which 30 paused: no deadline failure
    assert gate.asked == 32 and clock.now == 1031.0
    assert said[:2] == ["paused before rack/dc1/ra: scripted: unknown (evaluation 1); continuing when it answers",
                        "recorded: paused before rack/dc1/ra: scripted: unknown (evaluation 1); continuing when it "
                        "answers"]
    assert said[-1] == "rack/dc1/ra: gates pass, continuing"


async def test_a_failing_gate_fails_the_step_at_once_and_soak_waits_on_the_clock() -> None:
    clock, said = FakeClock(), []
    with pytest.raises(StepFailed, match="gate refused: scripted: fail"):
        await keeper(Scripted(GateVerdict.FAIL), clock, said).wait(RACK, None, [], {})  # type: ignore[arg-type]
    assert clock.now == 1000.0
    from isthmus.rollout import Soak

    soaking = Gatekeeper(app="dec", namespace="dec", gates=(Soak(),), poll_interval=5.0, progress_deadline=600.0,
                         soak_seconds=30.0, last_disruptive=clock.now, clock=clock, observe=observe_nothing)
    task = asyncio.create_task(soaking.wait(RACK, None, [], {}))  # type: ignore[arg-type]
    for _ in range(6):
        await clock.until_sleeping()
        assert not task.done()
        await clock.advance(5.0)
    await asyncio.wait_for(task, 5)
    assert clock.now == 1030.0


# ---------------------------------------------------------------- per-member outcomes


def test_one_failed_member_does_not_mark_the_others_failed() -> None:
    state = RolloutState.new(app="dec", kind="apply", revision=2, previous=1, plan=plan_rollout(APP))
    for step in state.plan.steps:
        if step.kind is StepKind.PREPARE or step.datacenter == "dc1":
            state.steps[step.id].outcome = Outcome.DONE
    state.steps["finalize/c1"].outcome = Outcome.DONE
    state.steps["rack/dc2/ra"].outcome, state.steps["rack/dc2/ra"].note = Outcome.FAILED, "2 pod(s) failed"
    state.phase = RolloutPhase.FAILED
    got = member_results(state, ["c1", "c2", "c3"])
    assert {m: r.outcome for m, r in got.items()} == {
        "c1": MemberOutcome.ROLLED_OUT, "c2": MemberOutcome.FAILED, "c3": MemberOutcome.PENDING}
    assert (got["c2"].step, got["c2"].reason) == ("rack/dc2/ra", "2 pod(s) failed")
    assert (got["c3"].step, got["c3"].reason) == ("rack/dc3/ra", "not reached yet")
    for step in state.plan.steps:
        if step.cluster == "c3":
            state.steps[step.id].outcome = Outcome.SKIPPED
    assert member_results(state, ["c3"])["c3"].outcome is MemberOutcome.SKIPPED


# ---------------------------------------------------------------- the fake clock itself


async def test_the_fake_clock_wakes_sleepers_in_deadline_order_only_when_moved() -> None:
    clock, woke = FakeClock(start=0.0), []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(nap("long", 5.0)), asyncio.create_task(nap("short", 2.0))]
    await clock.until_sleeping(2)
    await clock.advance(1.0)
    assert woke == [] and clock.sleepers() == 2
    await clock.advance(4.0)
    await asyncio.gather(*tasks)
    assert woke == [("short", 2.0), ("long", 5.0)] and clock.now == 5.0 and clock.sleepers() == 0
    assert clock.wall() == clock.epoch + 5.0
