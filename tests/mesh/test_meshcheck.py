"""Mesh checks refuse what the mesh would refuse, naming the rule."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from isthmus.netplan import NetworkPlan
from isthmus.render.cilium import cilium_values
from isthmus.render.meshcheck import (
    MeshCheckError,
    MeshRule,
    check_cilium_values,
    check_mesh,
    require_mesh_fit,
)
from isthmus.spec import Mesh

from ._mesh import example, planned, with_network


def _with_cluster(plan: NetworkPlan, which: str, **changes: Any) -> NetworkPlan:
    clusters = tuple(dataclasses.replace(c, **changes) if c.name == which else c for c in plan.clusters)
    return dataclasses.replace(plan, clusters=clusters)


def _rules(plan: NetworkPlan) -> set[MeshRule]:
    return {v.rule for v in check_mesh(plan)}


def test_the_example_fits() -> None:
    fleet, app = example()
    assert check_mesh(planned(fleet), app=app) == ()
    require_mesh_fit(planned(fleet), app=app)


def test_id_over_the_limit() -> None:
    assert MeshRule.CLUSTER_ID_RANGE in _rules(_with_cluster(planned(example()[0]), "us-east", cluster_id=300))


def test_duplicate_and_missing_ids() -> None:
    plan = planned(example()[0])
    assert MeshRule.CLUSTER_ID_UNIQUE in _rules(_with_cluster(plan, "us-east", cluster_id=1))
    assert MeshRule.CLUSTER_ID_MISSING in _rules(_with_cluster(plan, "us-east", cluster_id=None))


def test_a_name_cilium_rejects() -> None:
    plan = planned(example()[0])
    assert MeshRule.CLUSTER_NAME in _rules(_with_cluster(plan, "us-east", name="default"))
    assert MeshRule.CLUSTER_NAME in _rules(_with_cluster(plan, "us-east", name="x" * 33))


def test_overlapping_pod_cidrs() -> None:
    plan = planned(example()[0])
    clash = _with_cluster(plan, "us-east", pod_cidr=plan.cluster("eu-west").pod_cidr)
    assert MeshRule.POD_CIDR_DISJOINT in _rules(clash)


def test_cassandra_needs_a_flat_network() -> None:
    fleet, app = example()
    istio = planned(with_network(fleet, mesh=Mesh.ISTIO))
    with pytest.raises(MeshCheckError, match=r"\[flat-network\]") as caught:
        require_mesh_fit(istio, app=app)
    assert caught.value.violations[0].rule is MeshRule.FLAT_NETWORK
    assert check_mesh(planned(with_network(fleet, mesh=Mesh.BOTH)), app=app) == ()


def test_values_that_mix_routing_or_encryption_are_refused() -> None:
    plan = planned(example()[0])
    values = {c.name: cilium_values(plan, c.name) for c in plan.clusters}
    assert check_cilium_values(values) == ()
    mixed = copy.deepcopy(values)
    mixed["ap-south"]["routingMode"] = "native"
    mixed["us-east"]["encryption"] = {"enabled": True, "type": "ipsec"}
    found = check_cilium_values(mixed)
    assert {v.rule for v in found} == {MeshRule.SAME_SETTING}
    assert any("routingMode" in v.message for v in found) and any("encryption.type" in v.message for v in found)
    with pytest.raises(MeshCheckError, match="same-setting"):
        require_mesh_fit(plan, values=mixed)


def test_values_with_one_id_twice() -> None:
    plan = planned(example()[0])
    values = {c.name: cilium_values(plan, c.name) for c in plan.clusters}
    values["us-east"]["cluster"]["id"] = values["eu-west"]["cluster"]["id"]
    assert MeshRule.CLUSTER_ID_UNIQUE in {v.rule for v in check_cilium_values(values)}
