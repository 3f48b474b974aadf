"""Pure decisions of a reconcile: parsing, choosing the Fleet, semantic errors, the condition roll-up."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc
from isthmus.kube import ClusterOutcome, Health, ObjectHealth, Reach
from isthmus.operator.inputs import Invalid, choose_fleet, parse_app
from isthmus.operator.rollup import roll_up
from isthmus.operator.status import Condition, merge_conditions
from isthmus.rollout import DatacenterStatus, StatusReport


def body(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["metadata"] = {**out["metadata"], "generation": 3, "uid": "x", "resourceVersion": "9"}
    return out


def test_a_valid_object_parses_and_finds_the_only_fleet() -> None:
    app = parse_app(body(app_doc("shop")))
    _, fleet = choose_fleet(app, [fleet_doc()])
    assert app.member_clusters() == ["c1", "c2", "c3"] and fleet.metadata.name == "lab"


def test_a_cross_field_error_names_the_field() -> None:
    doc = app_doc("shop")
    doc["spec"]["datacenters"][0]["size"] = 1  # two racks, one node
    with pytest.raises(Invalid) as err:
        parse_app(body(doc))
    assert err.value.reason == "InvalidSpec" and "spec.datacenters[0]" in str(err.value)


def test_a_rack_in_a_missing_zone_is_invalid_placement() -> None:
    doc = app_doc("shop")
    doc["spec"]["datacenters"][1]["racks"][0]["zone"] = "region-9z"
    with pytest.raises(Invalid) as err:
        choose_fleet(parse_app(body(doc)), [fleet_doc()])
    assert err.value.reason == "InvalidPlacement"
    assert "spec.datacenters[1].racks[0].zone" in str(err.value) and "region-9z" in str(err.value)


def test_fleet_selection() -> None:
    other = fleet_doc()
    other["metadata"] = {"name": "other"}
    app = parse_app(body(app_doc("shop")))
    with pytest.raises(Invalid) as err:
        choose_fleet(app, [fleet_doc(), other])
    assert err.value.reason == "FleetAmbiguous"
    with pytest.raises(Invalid) as err:
        choose_fleet(app, [])
    assert err.value.reason == "FleetNotFound"
    named = app_doc("shop")
    named["spec"]["fleet"] = "other"
    assert choose_fleet(parse_app(body(named)), [fleet_doc(), other])[1].metadata.name == "other"


def rack(health: Health) -> ObjectHealth:
    return ObjectHealth("sts", health, 1 if health is Health.HEALTHY else 0, 1, "rev")


def test_roll_up() -> None:
    healthy = DatacenterStatus("c1", "dc1", Reach.REACHED, (rack(Health.HEALTHY),))
    moving = DatacenterStatus("c2", "dc2", Reach.REACHED, (rack(Health.PROGRESSING),))
    lost = DatacenterStatus("c3", "dc3", Reach.UNREACHABLE, error="no answer within 3s")

    phase, conds, _ = roll_up(StatusReport("a", (healthy,)), None, 1)
    assert phase.value == "Ready" and [c.status for c in conds] == ["True", "False", "False"]

    phase, conds, _ = roll_up(StatusReport("a", (healthy, moving)), None, 1)
    assert phase.value == "Progressing" and {c.type: c.status for c in conds}["Progressing"] == "True"

    applied: dict[str, ClusterOutcome[Any]] = {
        "c3": ClusterOutcome("c3", Reach.UNREACHABLE, error="no answer within 3s")}
    phase, conds, message = roll_up(StatusReport("a", (healthy, lost)), applied, 2)
    degraded = {c.type: c for c in conds}["Degraded"]
    assert phase.value == "Degraded" and degraded.reason == "MemberUnreachable" and "dc3 on c3: Unknown" in message
    assert all(c.observed_generation == 2 for c in conds)


def test_a_missing_rack_or_an_unfinished_rollout_is_never_ready() -> None:
    one_of_two = DatacenterStatus("c3", "dc3", Reach.REACHED, (rack(Health.HEALTHY),))
    phase, conds, message = roll_up(StatusReport("a", (one_of_two,)), None, 4, racks={"dc3": 2})
    assert phase.value == "Progressing" and {c.type: c.status for c in conds}["Ready"] == "False"
    assert "dc3 on c3: Progressing" in message
    healthy = DatacenterStatus("c1", "dc1", Reach.REACHED, (rack(Health.HEALTHY),))
    phase, conds, message = roll_up(StatusReport("a", (healthy,)), None, 4, racks={"dc1": 1}, rolled_out=False)
    assert phase.value == "Progressing" and "generation 4 is still rolling out" in message


def test_transition_time_moves_only_when_status_flips() -> None:
    old = [Condition(type="Ready", status="False", reason="X", last_transition_time="t0")]
    same = merge_conditions(old, [Condition(type="Ready", status="False", reason="Y")], now="t1")
    flipped = merge_conditions(old, [Condition(type="Ready", status="True", reason="Z")], now="t2")
    assert same[0].last_transition_time == "t0" and flipped[0].last_transition_time == "t2"


# ---------------------------------------------------------------- what a trigger needs (pure)


def test_what_each_trigger_needs() -> None:
    from isthmus.operator.triggers import RolloutNeed, Trigger, Work, work_for

    for kopf_trigger in (Trigger.CREATE, Trigger.UPDATE, Trigger.RESUME, Trigger.TIMER):
        assert work_for(kopf_trigger, apply=True, settled=False, report_only=False) == Work(
            apply=True, rollout=RolloutNeed.ALWAYS)
        assert work_for(kopf_trigger, apply=True, settled=True, report_only=False, suspects={"c2"}) == Work(
            apply=True, drift_check=True, only=None, rollout=RolloutNeed.IF_DRIFTED)
        assert work_for(kopf_trigger, apply=True, settled=True, report_only=True).rollout is RolloutNeed.NONE
        assert work_for(kopf_trigger, apply=False, settled=False, report_only=False) == Work(apply=False)
    assert work_for(Trigger.WATCH, apply=True, settled=False, report_only=False) == Work(apply=False)
    assert work_for(Trigger.WATCH, apply=True, settled=True, report_only=False, suspects={"c2"}) == Work(
        apply=True, drift_check=True, only=frozenset({"c2"}), rollout=RolloutNeed.IF_DRIFTED)


def test_when_the_timer_starts_a_background_reconcile() -> None:
    from isthmus.operator.triggers import rollout_due

    def due(attempted: int | None, applied: int | None, since: float) -> bool:
        return rollout_due(attempted=attempted, applied=applied, generation=3, since=since, resync_interval=120.0,
                           retry_interval=10.0)

    assert due(2, 2, 0.0)  # a generation not attempted yet
    assert not due(3, 3, 60.0) and due(3, 3, 120.0)  # settled: only the periodic resync
    assert not due(3, 2, 5.0) and due(3, 2, 10.0)  # attempted, not everywhere: retried


# ---------------------------------------------------------------- per-member outcomes of a rollout (pure)


def test_a_failed_member_is_reported_failed_and_the_others_as_they_are() -> None:
    from isthmus.kube import ApplyAction, ObjectRef
    from isthmus.operator.rollup import applied_by_member
    from isthmus.rollout import Outcome, RolloutPhase, RolloutResult, RolloutState, plan_rollout

    app = parse_app(body(app_doc("shop")))
    state = RolloutState.new(app="shop", kind="apply", revision=2, previous=1, plan=plan_rollout(app))
    for step in state.plan.steps:
        if step.kind.value == "prepare" or step.datacenter == "dc1" or step.id == "finalize/c1":
            state.steps[step.id].outcome = Outcome.DONE
    state.steps["rack/dc2/ra"].outcome, state.steps["rack/dc2/ra"].note = Outcome.FAILED, "1 pod(s) failed"
    state.phase, state.message = RolloutPhase.FAILED, "step rack/dc2/ra in c2 failed: 1 pod(s) failed"
    sts = ObjectRef("apps/v1", "StatefulSet", "shop", "shop-dc1-ra")
    result = RolloutResult(state, {"c1": {sts: ApplyAction.CONFIGURED}, "c2": {}, "c3": {}})
    by = applied_by_member(["c1", "c2", "c3"], {}, result, f"rollout Failed: {state.message}")
    assert {c: o.reach for c, o in by.outcomes.items()} == {
        "c1": Reach.REACHED, "c2": Reach.FAILED, "c3": Reach.REACHED}
    assert by.outcomes["c2"].error == (f"rollout Failed: {state.message}: rack/dc2/ra: 1 pod(s) failed")
    assert by.outcomes["c1"].value is not None and by.outcomes["c1"].value.count(ApplyAction.CONFIGURED) == 1
    assert not by.rolled_out
    # A member skipped as unreachable is Unknown; a rollout that never ran fails every other member.
    lost = applied_by_member(["c1", "c2"], {"c2": "no answer"}, None, "LockLost: taken over")
    assert {c: (o.reach, o.error) for c, o in lost.outcomes.items()} == {
        "c1": (Reach.FAILED, "LockLost: taken over"), "c2": (Reach.UNREACHABLE, "skipped, unreachable: no answer")}


def release_body(**spec: Any) -> dict[str, Any]:
    doc = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "ChartRelease",
           "metadata": {"name": "cache", "namespace": "apps"},
           "spec": {"chart": "/charts/etcd", "namespace": "cache", **spec}}
    return body(doc)


def test_a_chart_release_parses_by_its_kind_and_is_bound_to_its_fleet() -> None:
    from isthmus.spec import ChartRelease

    app = parse_app(release_body(clusterSelector={"matchLabels": {"isthmus.dev/region": "region-2"}}))
    assert isinstance(app, ChartRelease)
    bound, fleet = choose_fleet(app, [fleet_doc()])
    assert fleet.metadata.name == "lab" and bound.member_clusters() == ["c2"]
    everywhere, _ = choose_fleet(parse_app(release_body()), [fleet_doc()])
    assert everywhere.member_clusters() == ["c1", "c2", "c3"]


def test_a_chart_release_override_for_a_cluster_the_fleet_lacks_is_invalid_placement() -> None:
    app = parse_app(release_body(overrides=[{"cluster": "c9", "values": {"replicaCount": 3}}]))
    with pytest.raises(Invalid) as err:
        choose_fleet(app, [fleet_doc()])
    assert err.value.reason == "InvalidPlacement"
    assert "spec.overrides[0].cluster" in str(err.value) and "'c9'" in str(err.value)


def test_a_chart_release_field_error_names_the_kind_and_field() -> None:
    with pytest.raises(Invalid) as err:
        parse_app(release_body(rollout={"maxConcurrentClusters": 0}))
    assert err.value.reason == "InvalidSpec" and "maxConcurrentClusters" in str(err.value)


@pytest.mark.parametrize(("chart", "words"), [
    ("charts/etcd", "is relative; the operator reads charts from its own filesystem"),
    ("/nonexistent/chart", "chart /nonexistent/chart does not exist"),
])
def test_a_chart_the_operator_cannot_read_is_invalid_before_any_member_is_asked(chart: str, words: str) -> None:
    from isthmus.operator.memory import Memory, parse_once

    memory = Memory()
    with pytest.raises(Invalid) as err:
        parse_once(release_body(chart=chart), [fleet_doc()], memory)
    assert err.value.reason == "InvalidSpec" and words in str(err.value)
    assert memory.parsed is None and memory.invalid is not None
