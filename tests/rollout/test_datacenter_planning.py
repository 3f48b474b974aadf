"""Adding and removing a datacenter, planned without a ring (issue 13 items 4 and 5): what a spec change adds and
removes, where the join, rebuild and decommission steps sit in the plan, which datacenter a new one rebuilds
from, and the refusals (with the numbers) of a removal that would leave replicas behind or a source that cannot
serve."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.render import render
from isthmus.rollout import RolloutPlan, StepKind, check_strategy, plan_rollout
from isthmus.rollout.datacenterplan import (
    BadDatacenterChange,
    DatacenterChange,
    choose_source,
    datacenter_change,
    rebuild_commands,
    removal_problems,
    system_keyspace_changes,
)
from isthmus.rollout.deciding import Choice, StepSettings, decide
from isthmus.rollout.keyspaceplan import LiveReplication
from isthmus.rollout.memberview import MemberView
from isthmus.rollout.progress import Outcome, StepRecord
from isthmus.rollout.steps import step_objects
from isthmus.spec import CassandraCluster, SpecError

NTS = "org.apache.cassandra.locator.NetworkTopologyStrategy"
REGIONS = {"c1": "region-1", "c2": "region-2", "c3": "region-3"}


def _doc(dcs: list[str], *, keyspaces: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    doc = app_doc("kp", size=3)
    by_name = {dc["name"]: dc for dc in doc["spec"]["datacenters"]}  # type: ignore[index]
    doc["spec"]["datacenters"] = [copy.deepcopy(by_name[n]) for n in dcs]  # type: ignore[index]
    doc["spec"]["keyspaces"] = keyspaces or []  # type: ignore[index]
    for dc in doc["spec"]["datacenters"]:  # type: ignore[index]
        dc.update(extra.get(dc["name"], {}))
    return doc


def _app(dcs: list[str], **kw: Any) -> CassandraCluster:
    return load(fleet_doc(), _doc(dcs, **kw))[1]


def _nts(**per_dc: int) -> LiveReplication:
    return LiveReplication.parse({"class": NTS, **{k.replace("_", "-"): str(v) for k, v in per_dc.items()}})


def test_the_change_is_what_the_spec_adds_and_removes_against_the_running_revision() -> None:
    before, after = _app(["dc1", "dc2"]), _app(["dc1", "dc3"])
    change = datacenter_change(before, after)
    assert change.added == ("dc3",)
    [gone] = change.removed
    assert (gone.name, gone.cluster) == ("dc2", "c2")
    # 3 nodes over racks ra (2) and rb (1): the last rack first, each rack's highest ordinal first
    assert gone.pods == ("kp-dc2-rb-0", "kp-dc2-ra-1", "kp-dc2-ra-0")
    assert not datacenter_change(None, after)  # a first deploy adds nothing to a running ring
    assert not datacenter_change(after, after)


def test_join_comes_before_the_added_racks_and_rebuild_and_decommission_after_the_keyspaces() -> None:
    shop = {"name": "shop", "replication": {"dc1": 3, "dc3": 3}}
    before, after = _app(["dc1", "dc2"]), _app(["dc1", "dc3"], keyspaces=[shop])
    change = datacenter_change(before, after).with_sources({"dc3": "dc1"})
    plan = plan_rollout(after, datacenters=change)
    assert [w.name for w in plan.waves] == ["prepare", "seed: dc1", "2: dc3", "keyspaces", "datacenters", "finalize"]
    assert [s.id for s in plan.waves[2].steps] == ["join/dc3", "rack/dc3/ra", "rack/dc3/rb"]
    rebuild, decommission = plan.waves[4].steps
    assert (rebuild.id, rebuild.kind, rebuild.cluster, rebuild.source) == ("rebuild/dc3", StepKind.REBUILD, "c3", "dc1")
    assert rebuild.nodes == ("kp-dc3-ra-0", "kp-dc3-ra-1", "kp-dc3-rb-0")
    assert (decommission.id, decommission.cluster) == ("decommission/dc2", "c2")  # a cluster no longer a member
    assert decommission.nodes == ("kp-dc2-rb-0", "kp-dc2-ra-1", "kp-dc2-ra-0")
    assert all(s.disruptive for s in (rebuild, decommission)) and step_objects(rebuild, [{"kind": "X"}]) == []
    lines = "\n".join(plan.lines())
    assert "rebuild/dc3 (gated): datacenter dc3 was added" in lines
    assert "nodetool rebuild --keyspace <each> -- dc1" in lines
    assert "source dc1: the nearest healthy datacenter" in lines
    assert "decommission/dc2 (gated): datacenter dc2 was removed" in lines
    assert RolloutPlan.from_dict(plan.to_dict()) == plan  # the state keeps source and nodes
    assert "datacenters" not in [w.name for w in plan_rollout(after).waves]
    assert "datacenters" not in [w.name for w in plan_rollout(after, reverse=True, datacenters=change).waves]


def test_datacenter_steps_are_always_gated_until_done() -> None:
    after = _app(["dc1", "dc3"])
    plan = plan_rollout(after, datacenters=datacenter_change(_app(["dc1"]), after).with_sources({"dc3": "dc1"}))
    for step in (plan.step("join/dc3"), plan.step("rebuild/dc3")):
        assert decide(step, StepRecord(), MemberView("c3"), StepSettings(), []).choice is Choice.GATE
        running = StepRecord(outcome=Outcome.RUNNING)  # interrupted: run again (nodes done are kept apart)
        assert decide(step, running, MemberView("c3"), StepSettings(), []).choice is Choice.GATE
        assert decide(step, StepRecord(outcome=Outcome.DONE), MemberView("c3"), StepSettings(), []).choice \
            is Choice.SKIP


def test_the_source_is_rebuild_from_else_the_same_region_else_the_rollout_order_skipping_unknown() -> None:
    app = _app(["dc1", "dc2", "dc3"])
    order = ["dc2", "dc1", "dc3"]
    assert choose_source(app, "dc3", added=["dc3"], regions=REGIONS, order=order) == "dc2"
    assert choose_source(app, "dc3", added=["dc3"], regions=REGIONS, order=order, unknown=["dc2"]) == "dc1"
    near = {**REGIONS, "c1": "region-3"}  # dc1's cluster is in dc3's region
    assert choose_source(app, "dc3", added=["dc3"], regions=near, order=order) == "dc1"
    pinned = _app(["dc1", "dc2", "dc3"], dc3={"rebuildFrom": "dc1"})
    assert choose_source(pinned, "dc3", added=["dc3"], regions=REGIONS, order=order) == "dc1"


def test_a_source_that_is_added_too_unknown_or_missing_is_refused_with_exit_code_2() -> None:
    order = ["dc1", "dc2", "dc3"]
    pinned = _app(["dc1", "dc2", "dc3"], dc3={"rebuildFrom": "dc2"})
    with pytest.raises(BadDatacenterChange, match=r"rebuilds from 'dc2', which this change adds too") as exc:
        choose_source(pinned, "dc3", added=["dc2", "dc3"], regions=REGIONS, order=order)
    assert exc.value.exit_code == 2 and "spec.datacenters[2].rebuildFrom" in str(exc.value)
    with pytest.raises(BadDatacenterChange, match=r"cluster c2 does not answer \(Unknown\)"):
        choose_source(pinned, "dc3", added=["dc3"], regions=REGIONS, order=order, unknown=["dc2"])
    with pytest.raises(BadDatacenterChange, match=r"dc1, dc2 do not answer"):
        choose_source(_app(["dc1", "dc2", "dc3"]), "dc3", added=["dc3"], regions=REGIONS, order=order,
                      unknown=["dc1", "dc2"])
    # a rebuildFrom naming a datacenter the spec lacks (or itself) is refused when the spec is loaded
    for bad in ("dc9", "dc3"):
        app = _app(["dc1", "dc3"], dc3={"rebuildFrom": bad})
        with pytest.raises(SpecError) as err:
            check_strategy(app)
        assert err.value.exit_code == 2
        assert "spec.datacenters[1].rebuildFrom" in str(err.value) and "(dc1)" in str(err.value)


def test_removal_is_refused_while_an_undeclared_keyspace_replicates_there_with_the_numbers() -> None:
    before = _app(["dc1", "dc2"])
    [gone] = datacenter_change(before, _app(["dc1"])).removed
    live = {"shop": _nts(dc1=3, dc2=2), "logs": _nts(dc1=1), "system_auth": _nts(dc1=3, dc2=3),
            "simple": LiveReplication.parse({"class": "SimpleStrategy", "replication_factor": "2"})}
    [problem] = removal_problems(_app(["dc1"]), gone, live)
    assert problem.startswith("spec.datacenters: datacenter 'dc2' (cluster c2, 3 nodes) cannot be removed: keyspace "
                              "'shop' still has 2 replicas there (NetworkTopologyStrategy dc1=3, dc2=2)")
    assert "(- {name: shop, replication: {dc1: 3}})" in problem and "nothing was written" in problem
    declared = _app(["dc1"], keyspaces=[{"name": "shop", "replication": {"dc1": 3}}])
    assert removal_problems(declared, gone, live) == []  # the same change drops it: the keyspace step goes first


def test_undeclared_system_keyspaces_gain_and_lose_the_datacenter_declared_ones_are_the_specs() -> None:
    app = _app(["dc1", "dc3"], keyspaces=[{"name": "system_traces", "replication": {"dc1": 3}}])
    live = {"system_auth": _nts(dc1=3), "system_traces": _nts(dc1=3),
            "system_distributed": LiveReplication.parse({"class": "SimpleStrategy", "replication_factor": "3"})}
    [auth] = system_keyspace_changes(app, live, add="dc3")
    assert auth.statement == ("ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', "
                              "'dc1': 3, 'dc3': 3}")
    live = {"system_auth": _nts(dc1=3, dc2=3), "system_distributed": _nts(dc1=3, dc2=3)}
    changes = system_keyspace_changes(_app(["dc1"]), live, remove="dc2")
    assert [(c.keyspace, dict(c.after)) for c in changes] == [("system_auth", {"dc1": 3}),
                                                               ("system_distributed", {"dc1": 3})]
    assert system_keyspace_changes(_app(["dc1"]), {"system_auth": _nts(dc1=3)}, remove="dc2") == []


def test_a_node_of_an_added_datacenter_starts_without_bootstrap_only_when_told_and_empty() -> None:
    fleet, app = load(fleet_doc(), _doc(["dc1"]))
    sts = next(o for o in render(app, fleet).for_cluster("c1") if o["kind"] == "StatefulSet")
    script = sts["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    line = next(ln for ln in script.splitlines() if "no-bootstrap" in ln)
    assert line.startswith('elif [ -z "$old" ]') and 'ls -A /var/lib/cassandra/data 2>' in line
    assert "-Dcassandra.auto_bootstrap=false" in script.split(line)[1].splitlines()[1]


def test_an_empty_change_is_false() -> None:
    assert not DatacenterChange() and DatacenterChange(added=("dc3",))


def test_a_datacenter_added_or_removed_restarts_no_other_datacenter() -> None:
    """The remote seed names change, but they are read only at start: the other racks' pod templates stay."""
    def templates(dcs: list[str]) -> dict[str, Any]:
        fleet, app = load(fleet_doc(), _doc(dcs))
        return {o["metadata"]["name"]: o["spec"]["template"] for o in render(app, fleet).for_cluster("c1")
                if o["kind"] == "StatefulSet"}

    assert templates(["dc1", "dc2"]) == templates(["dc1", "dc2", "dc3"]) == templates(["dc1"])
    fleet, app = load(fleet_doc(), _doc(["dc1", "dc3"]))
    config = next(o for o in render(app, fleet).for_cluster("c1") if o["kind"] == "ConfigMap"
                  and "cassandra.yaml" in o.get("data", {}))
    assert "kp-dc3-seeds" in config["data"]["cassandra.yaml"]  # the next start reads the new list


def test_a_declared_system_auth_changes_after_a_removed_datacenters_nodes_are_gone() -> None:
    """Cassandra 5 refuses to drop a datacenter that still has nodes from system_auth."""
    auth = {"name": "system_auth", "replication": {"dc1": 3}}
    shop = {"name": "shop", "replication": {"dc1": 3}, "consistency": "QUORUM"}
    after = _app(["dc1"], keyspaces=[auth, shop])
    plan = plan_rollout(after, datacenters=datacenter_change(_app(["dc1", "dc2"]), after))
    assert [w.name for w in plan.waves] == ["prepare", "seed: dc1", "keyspaces", "datacenters", "keyspaces after",
                                            "finalize"]
    assert [s.id for s in plan.steps if s.kind in (StepKind.KEYSPACE, StepKind.DECOMMISSION)] == \
        ["keyspace/shop", "decommission/dc2", "keyspace/system_auth"]
    assert [w.name for w in plan_rollout(after).waves] == ["prepare", "seed: dc1", "keyspaces", "finalize"]


def test_a_new_node_is_rebuilt_keyspace_by_keyspace_from_the_source_where_it_can_be() -> None:
    simple = LiveReplication.parse({"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "2"})
    live = {"system_auth": _nts(dc1=3, dc3=1), "system_traces": simple, "shop": _nts(dc2=3, dc3=3),
            "other": _nts(dc1=3), "system_schema": LiveReplication.parse({"class": "LocalStrategy"})}
    assert rebuild_commands(live, "dc3", "dc1") == [
        ("nodetool", "rebuild", "--keyspace", "shop"),  # dc1 holds none of it: from any datacenter
        ("nodetool", "rebuild", "--keyspace", "system_auth", "--", "dc1"),
        ("nodetool", "rebuild", "--keyspace", "system_traces"),  # SimpleStrategy: dc1 may lack a range
    ]
