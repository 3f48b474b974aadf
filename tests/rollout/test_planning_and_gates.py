"""Pure decisions of the rollout: step plans, strategy validation, gates (in-memory observations)."""

from __future__ import annotations

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import Reach
from isthmus.render import SUPERUSER_PASSWORD_PLACEHOLDER, render
from isthmus.rollout import (
    DEFAULT_GATES,
    ClusterView,
    GateContext,
    GateVerdict,
    RolloutPlan,
    Step,
    StepKind,
    plan_rollout,
)
from isthmus.rollout.gates import evaluate, failed_pods, overall
from isthmus.rollout.revisions import manifests_doc, summarize
from isthmus.rollout.rolling import fill_password
from isthmus.rollout.steps import step_objects
from isthmus.spec import SpecError


def app_with(**rollout: object):  # type: ignore[no-untyped-def]
    doc = app_doc("pl")
    doc["spec"]["rollout"] = rollout  # type: ignore[index]
    return load(fleet_doc(), doc)


def ids(plan: RolloutPlan) -> list[str]:
    return [s.id for s in plan.steps]


def test_default_plan_is_prepare_then_seed_then_one_dc_at_a_time_rack_by_rack() -> None:
    _, app = app_with()
    plan = plan_rollout(app)
    assert [w.name for w in plan.waves] == ["prepare", "seed: dc1", "2: dc2", "3: dc3", "finalize"]
    assert ids(plan) == ["prepare/c1", "prepare/c2", "prepare/c3", "rack/dc1/ra", "rack/dc1/rb", "rack/dc2/ra",
                         "rack/dc2/rb", "rack/dc3/ra", "rack/dc3/rb", "finalize/c1", "finalize/c2", "finalize/c3"]
    assert [s.disruptive for s in plan.steps][:4] == [False, False, False, True]
    assert RolloutPlan.from_dict(plan.to_dict()) == plan


def test_canary_goes_first_then_waves_of_max_concurrent_in_order() -> None:
    _, app = app_with(canary="dc3", order=["dc2"], maxConcurrentDatacenters=2)
    plan = plan_rollout(app)
    assert [[ln.name for ln in w.lanes] for w in plan.waves[1:-1]] == [["dc3"], ["dc2", "dc1"]]


def test_rollback_plan_visits_waves_and_racks_in_reverse() -> None:
    _, app = app_with()
    plan = plan_rollout(app, reverse=True)
    racks = [s.id for s in plan.steps if s.kind is StepKind.RACK]
    assert racks == ["rack/dc3/rb", "rack/dc3/ra", "rack/dc2/rb", "rack/dc2/ra", "rack/dc1/rb", "rack/dc1/ra"]
    assert plan.steps[0].kind is StepKind.PREPARE and plan.steps[-1].kind is StepKind.FINALIZE


def test_a_strategy_naming_unknown_datacenters_is_a_spec_error_with_the_field() -> None:
    _, app = app_with(canary="dc9", order=["dc1", "nope"])
    with pytest.raises(SpecError) as err:
        plan_rollout(app)
    assert "spec.rollout.canary" in str(err.value) and "'dc9'" in str(err.value)
    assert "spec.rollout.order[1]" in str(err.value)
    assert err.value.exit_code == 2


def test_a_duplicate_in_order_is_refused_when_loading() -> None:
    with pytest.raises(SpecError, match=r"twice in rollout\.order"):
        app_with(order=["dc1", "dc1"])


def test_step_objects_split_config_from_workloads() -> None:
    fleet, app = app_with()
    objs = render(app, fleet).for_cluster("c2")
    prepare = step_objects(Step(StepKind.PREPARE, "c2"), objs)
    assert prepare and all(o["kind"] != "StatefulSet" for o in prepare)
    rack = step_objects(Step(StepKind.RACK, "c2", "dc2", "rb"), objs)
    assert [o["metadata"]["name"] for o in rack] == ["pl-dc2-rb"]
    assert len(step_objects(Step(StepKind.FINALIZE, "c2"), objs)) == len(objs)


def test_revisions_never_hold_the_password_and_it_is_filled_back() -> None:
    fleet, app = app_with()
    masked = render(app, fleet)
    doc = manifests_doc(masked)
    assert SUPERUSER_PASSWORD_PLACEHOLDER in str(doc)
    with pytest.raises(ValueError, match="placeholder"):
        manifests_doc(render(app, fleet, superuser_password="s3cret"))
    filled = fill_password(masked, "s3cret")
    secret = next(o for o in filled.for_cluster("c1") if o["kind"] == "Secret")
    assert secret["stringData"]["password"] == "s3cret"
    _, bigger = load(fleet_doc(), app_doc("pl", heap="512M"))
    lines = summarize(doc, manifests_doc(render(bigger, fleet)))
    assert any("changed" in line and "StatefulSet/pl-dc1-ra" in line for line in lines)


def sts(name: str, *, ready: int = 1, gen: int = 1, observed: int = 1) -> dict[str, object]:
    return {"metadata": {"name": name, "generation": gen},
            "spec": {"replicas": 1, "updateStrategy": {"rollingUpdate": {"partition": 0}}},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": 1,
                       "currentRevision": "r-1", "updateRevision": "r-1"}}


def node(name: str, ready: bool = True) -> dict[str, object]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def pod(name: str, ready: bool = True, **status: object) -> dict[str, object]:
    return {"metadata": {"name": name, "ownerReferences": [{"kind": "StatefulSet", "name": name[:-2]}]},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}], **status}}


def ctx(views: dict[str, ClusterView], **kw: object) -> GateContext:
    return GateContext(app="pl", namespace="pl", step=Step(StepKind.RACK, "c1", "dc1", "ra"), observation=views,
                       now=100.0, **kw)  # type: ignore[arg-type]


def healthy(cluster: str) -> ClusterView:
    return ClusterView(cluster, Reach.REACHED, (sts(f"pl-{cluster}-ra"),), (pod(f"pl-{cluster}-ra-0"),),
                       (node(f"{cluster}-n0"),))


async def verdict(context: GateContext) -> tuple[GateVerdict, list[str]]:
    results = await evaluate(DEFAULT_GATES, context)
    return overall(results), [str(r) for r in results if r.verdict is not GateVerdict.PASS]


async def test_gates_pass_when_everything_everywhere_is_healthy() -> None:
    assert (await verdict(ctx({c: healthy(c) for c in ("c1", "c2")})))[0] is GateVerdict.PASS


async def test_a_not_ready_node_in_another_cluster_blocks() -> None:
    views = {"c1": healthy("c1"), "c2": ClusterView("c2", Reach.REACHED, (), (), (node("c2-n0", ready=False),))}
    result, why = await verdict(ctx(views))
    assert result is GateVerdict.WAIT and "c2/c2-n0" in why[0]


async def test_an_unreachable_member_is_unknown_not_a_wait() -> None:
    views = {"c1": healthy("c1"), "c2": ClusterView("c2", Reach.UNREACHABLE, error="no answer within 3s")}
    result, why = await verdict(ctx(views))
    assert result is GateVerdict.UNKNOWN and "no answer" in why[0]


async def test_an_unobserved_generation_is_never_healthy() -> None:
    views = {"c1": ClusterView("c1", Reach.REACHED, (sts("pl-dc1-ra", gen=2, observed=1),), (), ())}
    result, why = await verdict(ctx(views))
    assert result is GateVerdict.WAIT and "generation" in why[0]


async def test_soak_waits_after_the_previous_disruptive_step() -> None:
    views = {"c1": healthy("c1")}
    assert (await verdict(ctx(views, last_disruptive_done=95.0, soak_seconds=10)))[0] is GateVerdict.WAIT
    assert (await verdict(ctx(views, last_disruptive_done=80.0, soak_seconds=10)))[0] is GateVerdict.PASS


async def test_a_rollback_tolerates_the_racks_it_is_about_to_revert() -> None:
    broken = ClusterView("c1", Reach.REACHED, (sts("pl-dc1-ra", ready=0),), (pod("pl-dc1-ra-0", ready=False),), ())
    assert (await verdict(ctx({"c1": broken})))[0] is GateVerdict.WAIT
    tolerated = frozenset({("c1", "pl-dc1-ra")})
    assert (await verdict(ctx({"c1": broken}, tolerated=tolerated)))[0] is GateVerdict.PASS


def test_failed_pods_are_unschedulable_or_crash_looping() -> None:
    pods = [pod("a-0", ready=False, conditions=[{"type": "PodScheduled", "status": "False",
                                                 "reason": "Unschedulable", "message": "0/4 nodes"}]),
            pod("b-0", ready=False, containerStatuses=[{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
            pod("c-0", ready=False)]
    assert [(n, r.split(":")[0]) for n, r in failed_pods(pods)] == [("a-0", "unschedulable"),
                                                                    ("b-0", "CrashLoopBackOff")]
