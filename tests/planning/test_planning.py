from __future__ import annotations

import json
from ipaddress import ip_network

import pytest

from isthmus.netplan import Lock, PlanError, plan

from ._fleets import cluster, make_fleet


def test_plan_shape_and_lock() -> None:
    fleet = make_fleet([cluster("eu-1", nodes=6), cluster("us-1", nodes=3, region="us")])
    p = plan(fleet)
    assert p.fleet == "test"
    assert [c.name for c in p.clusters] == ["eu-1", "us-1"]
    assert [c.cluster_id for c in p.clusters] == [1, 2]
    eu = p.cluster("eu-1")
    assert eu.pod_cidr is not None and eu.pod_cidr.prefixlen == 20  # 9 blocks -> 16 -> /20
    assert eu.service_cidr is not None and eu.service_cidr.prefixlen == 20
    assert eu.mtu.route_mtu == 1450 and p.mesh_mtu.route_mtu == 1450
    assert eu.capacity.nodes_addable == 10
    assert p.lock.get("eu-1") is not None
    assert p.lock.to_dict()["version"] == 1
    data = p.to_dict()
    assert list(data) == ["fleet", "meshMTU", "network", "clusters", "warnings", "lock"]
    assert json.loads(json.dumps(data)) == data
    assert data["network"]["podSupernet"] == "10.0.0.0/8"  # type: ignore[index]


def test_plan_is_deterministic() -> None:
    fleet = make_fleet([cluster(f"c{i}", nodes=i + 1) for i in range(20)])
    assert plan(fleet) == plan(fleet)


def test_lock_keeps_allocations_and_ids() -> None:
    first = plan(make_fleet([cluster("a"), cluster("b")]))
    lock = Lock.from_dict(first.lock.to_dict())
    again = plan(make_fleet([cluster("z", nodes=50), cluster("b"), cluster("a")]), lock)
    for name in ("a", "b"):
        assert again.lock.get(name) == first.lock.get(name)
    assert again.cluster("z").cluster_id == 3


def test_removed_cluster_is_released_but_not_reused_this_plan() -> None:
    first = plan(make_fleet([cluster("a"), cluster("b")]))
    b = first.cluster("b")
    p = plan(make_fleet([cluster("a"), cluster("c")]), first.lock)
    assert "b" not in p.lock
    released = [w for w in p.warnings if "no longer in the spec" in w]
    assert len(released) == 1 and "cluster ID 2" in released[0] and str(b.pod_cidr) in released[0]
    c = p.cluster("c")
    assert c.cluster_id == 3
    assert c.pod_cidr is not None and b.pod_cidr is not None and not c.pod_cidr.overlaps(b.pod_cidr)
    later = plan(make_fleet([cluster("a"), cluster("c"), cluster("d")]), p.lock)
    assert later.cluster("d").cluster_id == 2  # free again one plan later


def test_spec_wins_over_lock_with_warning() -> None:
    first = plan(make_fleet([cluster("a")]))
    p = plan(make_fleet([cluster("a", clusterID=9, podCIDR="10.200.0.0/16")]), first.lock)
    a = p.cluster("a")
    assert a.cluster_id == 9 and a.pod_cidr == ip_network("10.200.0.0/16")
    assert any("replaces" in w and "clusterID" in w for w in p.warnings)
    assert any("podCIDR 10.200.0.0/16 from the spec replaces" in w for w in p.warnings)


def test_mtu_mismatch_uses_smallest_underlay() -> None:
    p = plan(make_fleet([cluster("a", underlayMTU=9000), cluster("b", underlayMTU=1500)], encryption="wireguard"))
    assert p.mesh_mtu.underlay_mtu == 1500 and p.mesh_mtu.route_mtu == 1370
    assert any("underlay MTUs differ (1500, 9000)" in w and "1370" in w for w in p.warnings)


def test_istio_mesh_needs_no_cluster_ids() -> None:
    p = plan(make_fleet([cluster(f"c{i}", nodes=1) for i in range(300)], mesh="istio", servicePrefix=24))
    assert all(c.cluster_id is None for c in p.clusters)


def test_cilium_mesh_runs_out_of_ids() -> None:
    with pytest.raises(PlanError, match="no cluster ID left"):
        plan(make_fleet([cluster(f"c{i}", nodes=1) for i in range(256)]))


def test_lock_overlapping_new_avoid_is_an_error() -> None:
    first = plan(make_fleet([cluster("a")]))
    pod = first.cluster("a").pod_cidr
    with pytest.raises(PlanError, match=f"avoided range {pod} overlaps a's pod CIDR {pod}"):
        plan(make_fleet([cluster("a")], avoid=[str(pod)]), first.lock)


def test_family_change_releases_cidrs() -> None:
    v6 = {"podSupernetV6": "fd00:10::/48", "serviceSupernetV6": "fd00:20::/108"}
    first = plan(make_fleet([cluster("a", ipFamily="dual")], **v6))
    p = plan(make_fleet([cluster("a", ipFamily="ipv4")], **v6), first.lock)
    assert p.cluster("a").pod_cidr_v6 is None
    assert p.cluster("a").pod_cidr == first.cluster("a").pod_cidr
    assert any("IPv4-only" in w for w in p.warnings)


def test_ipv6_spec_cidr_in_ipv4_field() -> None:
    with pytest.raises(PlanError, match="podCIDR fd00::/64 is IPv6"):
        plan(make_fleet([cluster("a", podCIDR="fd00::/64")]))


def test_low_free_space_warning() -> None:
    p = plan(make_fleet([cluster("a", nodes=64)], headroom=1.0))
    assert any("only 0% of pod space is free" in w for w in p.warnings)
