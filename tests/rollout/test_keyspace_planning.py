"""Keyspace steps, planned and decided without a ring: where they sit in the plan, what changes from what
the ring has (the CQL statement, the datacenters a repair must fill), and when the step is Done at once."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.rollout import RolloutPlan, Step, StepKind, check_strategy, plan_rollout
from isthmus.rollout.deciding import KEYSPACE_AS_DECLARED, Choice, StepSettings, decide
from isthmus.rollout.keyspaceplan import LiveReplication, check_readback, keyspace_change
from isthmus.rollout.memberview import MemberView
from isthmus.rollout.progress import Outcome, StepRecord
from isthmus.rollout.steps import step_objects
from isthmus.spec import CassandraCluster, Keyspace, SpecError

NTS_CLASS = "org.apache.cassandra.locator.NetworkTopologyStrategy"


def _app(keyspaces: list[dict[str, Any]], **rollout: Any) -> CassandraCluster:
    doc = app_doc("kp", size=3)
    doc["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    doc["spec"]["rollout"] = rollout  # type: ignore[index]
    return load(fleet_doc(), doc)[1]


SHOP = {"name": "shop", "replication": {"dc1": 3, "dc2": 3}}
AUTH = {"name": "system_auth", "replication": {"dc1": 3, "dc2": 3, "dc3": 3}, "consistency": "QUORUM"}


def test_keyspace_steps_come_after_every_datacenter_and_before_finalize() -> None:
    plan = plan_rollout(_app([SHOP, AUTH], canary="dc2"))
    names = [w.name for w in plan.waves]
    assert names == ["prepare", "seed: dc2", "2: dc1", "3: dc3", "keyspaces", "finalize"]
    keyspaces = plan.waves[4]
    assert [ln.name for ln in keyspaces.lanes] == ["keyspaces"]  # one lane: one keyspace after the other
    shop, auth = keyspaces.steps
    assert (shop.id, shop.cluster, shop.datacenter, shop.disruptive) == ("keyspace/shop", "c2", "dc2", True)
    assert auth.id == "keyspace/system_auth"
    lines = plan.lines()
    assert ("  10. [keyspaces] keyspace/shop (gated): keyspace shop: NetworkTopologyStrategy dc1=3, dc2=3 (read at "
            "LOCAL_QUORUM); create it, or change its replication to this, then repair where replicas are "
            "added") in lines
    assert "(read at QUORUM)" in lines[lines.index("wave keyspaces:") + 2]
    assert RolloutPlan.from_dict(plan.to_dict()) == plan  # the state keeps keyspace and detail
    assert step_objects(shop, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]) == []


def test_a_spec_without_keyspaces_plans_no_keyspace_step_and_a_rollback_keeps_them_last() -> None:
    assert all(s.kind is not StepKind.KEYSPACE for s in plan_rollout(_app([])).steps)
    back = plan_rollout(_app([SHOP]), reverse=True)
    assert [w.name for w in back.waves][-2:] == ["keyspaces", "finalize"]
    assert back.waves[-2].steps[0].datacenter == "dc1"  # the last datacenter a rollback visits


def test_check_strategy_refuses_keyspaces_the_datacenters_cannot_hold() -> None:
    """The operator's path (no file to point at): the same problems, by field."""
    app = _app([])
    bad = app.model_copy(update={"spec": app.spec.model_copy(update={"keyspaces": [
        Keyspace.model_validate({"name": "shop", "replication": {"dc1": 4}})]})})
    with pytest.raises(SpecError) as info:
        check_strategy(bad)
    assert str(info.value) == ("<spec>: spec.keyspaces[0].replication.dc1: keyspace 'shop' asks for 4 replicas in "
                               "datacenter 'dc1', which has 3 nodes (spec.datacenters[0].size); a datacenter holds "
                               "at most one replica per node: lower the replicas or grow the datacenter")


def test_live_replication_is_parsed_from_the_system_schema_row() -> None:
    nts = LiveReplication.parse({"class": NTS_CLASS, "dc1": "3", "dc2": "1"})
    assert (nts.strategy, nts.per_datacenter()) == ("NetworkTopologyStrategy", {"dc1": 3, "dc2": 1})
    simple = LiveReplication.parse({"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "2"})
    assert simple.per_datacenter() is None and str(simple) == "SimpleStrategy replication_factor=2"
    assert LiveReplication.parse({"class": NTS_CLASS, "dc1": "3/1"}).per_datacenter() == {"dc1": 3}


def test_a_missing_keyspace_is_created_and_needs_no_repair() -> None:
    declared = Keyspace.model_validate(SHOP)
    change = keyspace_change(declared, None)
    assert change is not None
    assert change.statement == ("CREATE KEYSPACE IF NOT EXISTS shop WITH replication = "
                                "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}")
    assert change.grown == () and change.describe() == "created with NetworkTopologyStrategy dc1=3, dc2=3"


def test_a_changed_replication_is_altered_and_the_grown_datacenters_repaired() -> None:
    declared = Keyspace.model_validate({"name": "shop", "replication": {"dc1": 3, "dc3": 2}})
    live = LiveReplication.parse({"class": NTS_CLASS, "dc1": "2", "dc2": "3", "dc3": "2"})
    change = keyspace_change(declared, live)
    assert change is not None
    assert change.statement == ("ALTER KEYSPACE shop WITH replication = "
                                "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc3': 2}")
    assert change.grown == ("dc1",)  # dc2 loses its replicas: nothing to fill
    assert change.describe() == "replication dc1 2 -> 3, dc2 3 -> 0"
    assert keyspace_change(declared, LiveReplication.parse({"class": NTS_CLASS, "dc1": "3", "dc3": "2"})) is None
    assert keyspace_change(declared, LiveReplication.parse({"class": NTS_CLASS, "dc1": "3", "dc3": "2",
                                                            "dc2": "0"})) is None


def test_a_change_of_strategy_repairs_every_declared_datacenter() -> None:
    declared = Keyspace.model_validate(AUTH)
    change = keyspace_change(declared, LiveReplication.parse(
        {"class": "org.apache.cassandra.locator.SimpleStrategy", "replication_factor": "1"}))
    assert change is not None and change.grown == ("dc1", "dc2", "dc3")
    assert change.describe() == ("replication SimpleStrategy replication_factor=1 -> NetworkTopologyStrategy "
                                 "dc1=3, dc2=3, dc3=3")


def test_the_read_back_must_be_exactly_what_was_declared() -> None:
    declared = Keyspace.model_validate(SHOP)
    assert check_readback(declared, LiveReplication.parse({"class": NTS_CLASS, "dc1": "3", "dc2": "3"})) is None
    assert check_readback(declared, None) == "keyspace shop is not in system_schema.keyspaces after the change"
    assert check_readback(declared, LiveReplication.parse({"class": NTS_CLASS, "dc1": "3"})) == (
        "keyspace shop has NetworkTopologyStrategy dc1=3 after the change, not the declared "
        "NetworkTopologyStrategy dc1=3, dc2=3")


def test_a_keyspace_step_asks_the_ring_then_is_done_at_once_or_gated() -> None:
    step = Step(StepKind.KEYSPACE, "c1", "dc1", keyspace="shop", detail="x")
    settings = StepSettings()
    unasked = decide(step, StepRecord(), MemberView("c1"), settings, [])
    assert (unasked.choice, unasked.look) == (Choice.GATE, True)
    same = decide(step, StepRecord(), MemberView("c1", keyspace_matches=True), settings, [])
    assert (same.choice, same.note) == (Choice.UNCHANGED, KEYSPACE_AS_DECLARED)
    assert decide(step, StepRecord(), MemberView("c1", keyspace_matches=False), settings, []).choice is Choice.GATE
    # interrupted after it was marked Running (maybe before its repair ended): run again, whatever the ring says
    running = decide(step, StepRecord(outcome=Outcome.RUNNING), MemberView("c1", keyspace_matches=True), settings, [])
    assert (running.choice, running.look) == (Choice.GATE, False)
    assert decide(step, StepRecord(outcome=Outcome.DONE), MemberView("c1"), settings, []).choice is Choice.SKIP


def test_a_change_of_keyspaces_alone_is_a_new_revision() -> None:
    """Keyspaces render no objects: their replication is part of what a revision is, or an apply that only
    changes it would be taken as settled and do nothing."""
    from isthmus.render import render
    from isthmus.rollout.revisions import stage

    fleet, _ = load(fleet_doc(), app_doc("kp", size=3))
    plain, one, two = _app([]), _app([SHOP]), _app([{**SHOP, "replication": {"dc1": 3}}])
    masked = render(plain, fleet)
    assert render(one, fleet).clusters == masked.clusters

    def digest(app: CassandraCluster) -> str:
        return stage(app.model_dump(mode="json", by_alias=True, exclude_none=True), masked).digest

    assert len({digest(plain), digest(one), digest(two)}) == 3
    assert digest(one) == digest(_app([SHOP]))
    # without keyspaces, the digest is the manifests' alone, as before: a strategy-only change is no new revision
    assert digest(plain) == digest(_app([], soakSeconds=30))
