"""Scaling a datacenter (issue 13 item 6) without a ring: which nodes join or leave and in which order (racks
kept balanced, highest ordinals first), which datacenters get a ``scale`` step, and the refusals of a
scale-down, each with its numbers."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.rollout import Outcome, plan_rollout
from isthmus.rollout.deciding import Choice, StepSettings, decide
from isthmus.rollout.keyspaceplan import LiveReplication
from isthmus.rollout.memberview import MemberView
from isthmus.rollout.progress import StepRecord
from isthmus.rollout.scaleplan import (
    FILL_LIMIT,
    BadScale,
    RingFacts,
    ScalePlan,
    check_scale_down,
    parse_load,
    parse_quantity,
    scale_plans,
)
from isthmus.rollout.steps import RolloutPlan, Step, StepKind, step_objects
from isthmus.spec import CassandraCluster


def _app(size: int, keyspaces: list[dict[str, Any]] | None = None) -> CassandraCluster:
    doc = app_doc(size=size)  # dc1..dc3, racks ra and rb in each
    if keyspaces is not None:
        doc["spec"]["keyspaces"] = keyspaces
    return load(fleet_doc(), doc)[1]


def _plan(before: dict[str, int], size: int) -> ScalePlan:
    plans = scale_plans(_app(size), {"dc2": before})
    return plans["dc2"]


def _counts(plan: ScalePlan, nodes: Any, sign: int) -> list[dict[str, int]]:
    now = dict(plan.before)
    out = []
    for node in nodes:
        now[node.rack] += sign
        out.append(dict(now))
    return out


def test_new_nodes_join_the_rack_with_fewest_nodes_so_racks_never_differ_by_more_than_one() -> None:
    plan = _plan({"ra": 1, "rb": 1}, 5)  # to ra 3, rb 2 (rack_sizes: the first rack takes the remainder)
    assert plan.after == {"ra": 3, "rb": 2} and (plan.size_before, plan.size_after) == (2, 5)
    assert [n.pod for n in plan.adds()] == ["shop-dc2-ra-1", "shop-dc2-rb-1", "shop-dc2-ra-2"]
    assert all(max(c.values()) - min(c.values()) <= 1 for c in _counts(plan, plan.adds(), +1))
    assert [n.pod for n in plan.kept()] == ["shop-dc2-ra-0", "shop-dc2-rb-0"]  # where cleanup runs
    assert plan.removes() == ()
    assert {n.statefulset for n in plan.adds()} == {"shop-dc2-ra", "shop-dc2-rb"}
    assert [n.ordinal for n in plan.adds()] == [1, 1, 2]


def test_leaving_nodes_are_the_highest_ordinals_of_the_fullest_rack_one_at_a_time() -> None:
    plan = _plan({"ra": 3, "rb": 2}, 2)  # to ra 1, rb 1
    assert [n.pod for n in plan.removes()] == ["shop-dc2-ra-2", "shop-dc2-rb-1", "shop-dc2-ra-1"]
    assert all(max(c.values()) - min(c.values()) <= 1 for c in _counts(plan, plan.removes(), -1))
    for rack in ("ra", "rb"):  # within a rack, the highest ordinal goes first (a StatefulSet loses its last pod)
        ordinals = [n.ordinal for n in plan.removes() if n.rack == rack]
        assert ordinals == sorted(ordinals, reverse=True)
    assert plan.adds() == ()
    assert plan.describe() == ("datacenter dc2 5 -> 2 nodes; nodetool decommission shop-dc2-ra-2, shop-dc2-rb-1, "
                               "shop-dc2-ra-1 one at a time, each then removed from its StatefulSet and its volume "
                               "claim deleted")


def test_only_running_datacenters_whose_replicas_differ_get_a_plan() -> None:
    app = _app(2)  # one node per rack
    same = {"ra": 1, "rb": 1}
    assert scale_plans(app, {"dc1": same, "dc2": same, "dc3": same}) == {}
    plans = scale_plans(app, {"dc1": same, "dc2": {"ra": 2, "rb": 1}})  # dc3 not read: new or Unknown, no plan
    assert list(plans) == ["dc2"] and plans["dc2"].before == {"ra": 2, "rb": 1}
    assert [n.pod for n in plans["dc2"].removes()] == ["shop-dc2-ra-1"]
    assert scale_plans(app, {"dc1": {}, "dc2": same, "dc3": same}) == {}  # no StatefulSet yet: a new datacenter
    # A rack added with the node it brings: its rack step creates it; the racks that run keep their sizes.
    assert scale_plans(app, {"dc2": {"ra": 1}}) == {}
    grown = scale_plans(_app(4), {"dc2": {"ra": 1}})  # ra grows to 2, rb is new (its rack step makes its 2)
    assert grown["dc2"].before == {"ra": 1} and grown["dc2"].after == {"ra": 2}


def test_the_scale_step_comes_first_in_its_datacenter_lane_and_is_always_gated() -> None:
    app = _app(3)
    plans = scale_plans(app, {"dc2": {"ra": 1, "rb": 1}})
    plan = plan_rollout(app, scaling=plans)
    lane = next(ln for w in plan.waves for ln in w.lanes if ln.name == "dc2")
    assert [s.id for s in lane.steps] == ["scale/dc2", "rack/dc2/ra", "rack/dc2/rb"]
    step = plan.step("scale/dc2")
    assert step.kind is StepKind.SCALE and step.before == (("ra", 1), ("rb", 1)) and step.cluster == "c2"
    assert step.describe() == ("scale datacenter dc2 2 -> 3 nodes; bootstrap shop-dc2-ra-1 one at a time (each once "
                               "the ring has no joining or leaving node), then nodetool cleanup on shop-dc2-ra-0, "
                               "shop-dc2-rb-0")
    assert any(line.endswith(f"scale/dc2 (gated): {step.describe()}") for line in plan.lines())
    assert RolloutPlan.from_dict(plan.to_dict()) == plan  # persisted with the state: a resume has the sizes
    assert step_objects(step, [{"kind": "StatefulSet", "metadata": {"name": "x"}}]) == []
    assert decide(step, StepRecord(), MemberView("c2"), StepSettings(), []).choice is Choice.GATE
    running = StepRecord(outcome=Outcome.RUNNING)  # interrupted: run again (it finds what is left itself)
    assert decide(step, running, MemberView("c2"), StepSettings(), []).choice is Choice.GATE
    assert decide(step, StepRecord(outcome=Outcome.DONE), MemberView("c2"), StepSettings(), []).choice is Choice.SKIP
    assert "scale/dc1" not in {s.id for s in plan.steps} and len(plan_rollout(app).steps) == len(plan.steps) - 1


def _facts(replication: dict[str, dict[str, str]], loads: dict[str, str], ring: int = 6) -> RingFacts:
    return RingFacts({k: LiveReplication.parse(v) for k, v in replication.items()}, loads, ring,
                     "nodetool status and describecluster on c2/shop-dc2-ra-0")


NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"
SMALL = {"10.0.0.1": "120.5 KiB", "10.0.0.2": "98 KiB", "10.0.0.3": "1.2 MiB"}
THREE_TO_TWO = {"dc2": {"ra": 2, "rb": 1}}  # every rack keeps a node: 3 -> 2 removes shop-dc2-ra-1


def test_a_scale_down_below_a_keyspace_rf_in_the_ring_is_refused_with_the_numbers() -> None:
    app = _app(2)
    plan = scale_plans(app, THREE_TO_TWO)["dc2"]
    with pytest.raises(BadScale) as refused:
        check_scale_down(app, plan, _facts({"orders": {"class": NTS, "dc1": "1", "dc2": "3"}}, SMALL))
    assert str(refused.value) == (
        "spec.datacenters[dc2].size: scaling dc2 from 3 to 2 nodes would leave fewer nodes than keyspace orders's 3 "
        "replicas there (as nodetool status and describecluster on c2/shop-dc2-ra-0 shows); lower its replication "
        "in dc2 to at most 2 first (ALTER KEYSPACE, or spec.keyspaces); nothing was written")
    assert refused.value.exit_code == 2
    # RF 2 there, or replicas only elsewhere: allowed.
    check_scale_down(app, plan, _facts({"orders": {"class": NTS, "dc1": "3", "dc2": "2"}}, SMALL))
    check_scale_down(app, plan, _facts({"orders": {"class": NTS, "dc1": "3"}}, SMALL))
    # SimpleStrategy counts the whole ring.
    with pytest.raises(BadScale, match=r"would leave the ring 3 nodes, fewer than keyspace traces's 4 replicas"):
        check_scale_down(app, plan, _facts({"traces": {"class": "SimpleStrategy", "replication_factor": "4"}},
                                           SMALL, ring=4))
    check_scale_down(app, plan, _facts({"traces": {"class": "SimpleStrategy", "replication_factor": "3"}},
                                       SMALL, ring=4))


def test_a_scale_down_below_a_declared_keyspace_rf_is_refused_even_without_the_ring() -> None:
    app = _app(2, [{"name": "orders", "replication": {"dc2": 3}}])
    plan = scale_plans(app, THREE_TO_TWO)["dc2"]
    with pytest.raises(BadScale, match=r"scaling dc2 from 3 to 2 nodes would leave fewer nodes than keyspace "
                                       r"orders's 3 replicas there \(spec.keyspaces\)"):
        check_scale_down(app, plan, None)


def test_a_scale_down_whose_data_would_not_fit_the_remaining_volumes_is_refused_with_the_numbers() -> None:
    app = _app(2)
    plan = scale_plans(app, THREE_TO_TWO)["dc2"]
    assert parse_quantity(app.spec.storage.size) == 2**30
    fits = {f"10.0.0.{i}": "500 MiB" for i in (1, 2, 3)}  # 1500 MiB <= 80% of two 1 GiB volumes (1638.4 MiB)
    check_scale_down(app, plan, _facts({}, fits))
    too_much = {"10.0.0.1": "560 MiB", "10.0.0.2": "560 MiB", "10.0.0.3": "0.55 GiB"}
    with pytest.raises(BadScale) as refused:
        check_scale_down(app, plan, _facts({}, too_much))
    assert str(refused.value) == (
        "spec.datacenters[dc2].size: scaling dc2 from 3 to 2 nodes would leave its 1.64 GiB of data (10.0.0.1 "
        "560 MiB, 10.0.0.2 560 MiB, 10.0.0.3 0.55 GiB, as nodetool status and describecluster on c2/shop-dc2-ra-0 "
        f"shows) on 2 node(s) of 1Gi each (spec.storage.size), more than {FILL_LIMIT:.0%} of their 2.00 GiB "
        "(1.60 GiB); nothing was written")
    # A scale-up is never refused on these grounds.
    up = scale_plans(_app(3), {"dc2": {"ra": 1, "rb": 1}})["dc2"]
    check_scale_down(_app(3), up, _facts({"orders": {"class": NTS, "dc2": "9"}}, too_much))


def test_loads_and_quantities_parse_as_nodetool_and_kubernetes_print_them() -> None:
    assert parse_load("120.5 KiB") == int(120.5 * 1024) and parse_load("1.5 GiB") == int(1.5 * 2**30)
    assert parse_load("512 bytes") == 512 and parse_load("7 B") == 7 and parse_load("?") is None
    assert parse_quantity("1Gi") == 2**30 and parse_quantity("500M") == 500 * 10**6 and parse_quantity("1024") == 1024
    with pytest.raises(ValueError):
        parse_quantity("1 gallon")


def test_a_step_without_sizes_round_trips_as_before() -> None:
    keyspace = Step(StepKind.KEYSPACE, "c1", "dc1", keyspace="orders", detail="x")
    assert Step.from_dict(keyspace.to_dict()) == keyspace and "before" not in keyspace.to_dict()


def test_the_running_size_is_read_from_each_racks_statefulset() -> None:
    from isthmus.rollout.scaling import live_replicas

    app = _app(3)
    sts = [{"kind": "StatefulSet", "metadata": {"name": name}, "spec": {"replicas": n}}
           for name, n in (("shop-dc2-ra", 2), ("shop-dc2-rb", 1), ("shop-dc2-gone", 5), ("other-dc2-ra", 9))]
    live = live_replicas(app, {"c2": sts, "c1": []})
    assert live == {"dc2": {"ra": 2, "rb": 1}}  # dc1 has none (new), dc3 was not read; other names ignored
    assert scale_plans(app, live) == {}  # 3 nodes as the spec says: no scale step
