from __future__ import annotations

import re
from ipaddress import IPv4Network, ip_network

import pytest

from isthmus.netplan import PlanError, plan
from isthmus.netplan.addressing import (
    Claim,
    ClaimKind,
    FreeList,
    blocks_needed,
    find_overlaps,
    pod_prefix_for,
    usable_per_block,
)

from ._fleets import cluster, make_fleet


def test_sizing() -> None:
    assert blocks_needed(60, 1.0) == 60
    assert blocks_needed(60, 1.1) == 66  # exact, not 66.00000000000001 -> 67
    assert blocks_needed(0, 1.5) == 1
    assert pod_prefix_for(60, 24) == 18
    assert pod_prefix_for(64, 24) == 18
    assert pod_prefix_for(65, 24) == 17
    assert pod_prefix_for(1, 24) == 24
    assert usable_per_block(24) == 252
    assert usable_per_block(112, ipv6=True) == 65533


def test_free_list_best_fit_and_determinism() -> None:
    free = FreeList(ip_network("10.0.0.0/16"), [ip_network("10.0.0.0/18"), ip_network("10.0.128.0/24")])
    # free: 10.0.64.0/18, 10.0.129.0/24, 10.0.130.0/23, 10.0.132.0/22, ... 10.0.192.0/18
    assert free.largest_free() == 18
    assert free.allocate(24) == ip_network("10.0.129.0/24")  # the smallest block that fits
    assert free.allocate(23) == ip_network("10.0.130.0/23")
    assert free.allocate(18) == ip_network("10.0.64.0/18")
    assert free.allocate(18) == ip_network("10.0.192.0/18")
    assert free.allocate(18) is None
    assert free.largest_free() == 19


def test_free_list_splits_into_buddies() -> None:
    free = FreeList(ip_network("10.0.0.0/22"))
    got = [free.allocate(24) for _ in range(4)]
    assert [str(n) for n in got] == ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
    assert free.allocate(24) is None and free.free_addresses == 0


def test_find_overlaps_rules() -> None:
    claims = [
        Claim(ip_network("10.0.0.0/8"), ClaimKind.AVOID),
        Claim(ip_network("10.1.0.0/16"), ClaimKind.NODE, "a"),  # nodes inside an avoided VPC: fine
        Claim(ip_network("10.0.0.0/16"), ClaimKind.POD, "a"),  # pods inside an avoided range: not fine
        Claim(ip_network("192.168.0.0/24"), ClaimKind.SERVICE, "a"),
        Claim(ip_network("192.168.0.128/25"), ClaimKind.SERVICE, "b"),
    ]
    pairs = {(a.network.compressed, b.network.compressed) for a, b in find_overlaps(claims)}
    assert pairs == {("10.0.0.0/8", "10.0.0.0/16"), ("192.168.0.0/24", "192.168.0.128/25")}


def test_allocations_avoid_nodes_avoided_and_fixed() -> None:
    fleet = make_fleet(
        [
            cluster("a", nodes=10, nodeCIDR="10.0.0.0/20"),
            cluster("b", nodes=10, podCIDR="10.0.64.0/18", serviceCIDR="172.16.0.0/20"),
            cluster("c", nodes=10),
        ],
        podSupernet="10.0.0.0/16",
        avoid=["10.0.128.0/17"],
    )
    p = plan(fleet)
    assert p.cluster("b").pod_cidr == ip_network("10.0.64.0/18")
    taken = [ip_network("10.0.0.0/20"), ip_network("10.0.128.0/17"), ip_network("10.0.64.0/18")]
    for name in ("a", "c"):
        pod = p.cluster(name).pod_cidr
        assert pod is not None and pod.prefixlen == 20  # 10 x 1.5 = 15 blocks -> 16 -> /20
        assert not any(pod.overlaps(t) for t in taken)
    assert p.cluster("a").pod_cidr != p.cluster("c").pod_cidr


def test_exhausted_supernet_message_has_the_numbers() -> None:
    fleet = make_fleet(
        [cluster(f"eu-{i}", nodes=60) for i in range(1, 5)],
        podSupernet="10.0.0.0/16",
        avoid=["10.0.128.0/18"],
        headroom=1.0,
    )
    with pytest.raises(PlanError) as err:
        plan(fleet)
    message = str(err.value)
    assert "needs a /18 pod CIDR for 60 nodes x 110 pods (headroom 1.0" in message
    assert "the largest free block left is a /18" not in message
    assert "in 10.0.0.0/16 after avoiding 10.0.128.0/18" in message
    assert "no free block is left" in message or "largest free block left is a /" in message
    assert "enlarge network.podSupernet" in message and "headroom" in message


def test_exhausted_message_reports_largest_block() -> None:
    fleet = make_fleet(
        [cluster("eu-1", nodes=60), cluster("eu-2", nodes=60)],
        podSupernet="10.0.0.0/16",
        avoid=["10.0.128.0/17", "10.0.64.0/19"],
        headroom=1.0,
    )
    with pytest.raises(PlanError, match=r"cluster eu-2 needs a /18 .* the largest free block left is a /19"):
        plan(fleet)


def test_rounding_is_explained() -> None:
    fleet = make_fleet([cluster("a", nodes=100)], podSupernet="10.0.0.0/18", headroom=1.0)
    with pytest.raises(PlanError, match="100 per-node /24 blocks, rounded up to 128"):
        plan(fleet)


def test_service_exhaustion() -> None:
    fleet = make_fleet([cluster("a"), cluster("b")], serviceSupernet="172.16.0.0/20")
    with pytest.raises(PlanError, match=r"cluster b needs a /20 service CIDR \(servicePrefix\)"):
        plan(fleet)


def test_max_pods_must_fit_the_per_node_block() -> None:
    fleet = make_fleet([cluster("a", maxPodsPerNode=110)], podMaskSize=26)
    with pytest.raises(PlanError, match="/26 block holds only 60 pod addresses; set podMaskSize: 25"):
        plan(fleet)


def test_fixed_cidr_outside_supernet_is_kept_but_checked() -> None:
    p = plan(make_fleet([cluster("a", podCIDR="192.168.0.0/20")]))
    assert p.cluster("a").pod_cidr == ip_network("192.168.0.0/20")
    clash = make_fleet([cluster("a", podCIDR="192.168.0.0/20")], avoid=["192.168.8.0/24"])
    with pytest.raises(PlanError, match=re.escape("a's pod CIDR 192.168.0.0/20 overlaps avoided range 192.168.8.0/24")):
        plan(clash)


def test_fixed_cidrs_overlapping_each_other_all_reported() -> None:
    fleet = make_fleet(
        [
            cluster("a", podCIDR="10.0.0.0/16", nodeCIDR="10.0.1.0/24"),
            cluster("b", podCIDR="10.0.0.0/18", serviceCIDR="10.0.64.0/20"),
        ]
    )
    with pytest.raises(PlanError) as err:
        plan(fleet)
    message = str(err.value)
    assert message.count("overlaps") == 4  # a-pod vs a-node, b-pod, b-service; b-pod vs a-node


def test_fixed_pod_cidr_too_small() -> None:
    with pytest.raises(PlanError, match="holds 4 per-node /24 blocks but the cluster has 10 nodes"):
        plan(make_fleet([cluster("a", nodes=10, podCIDR="10.9.0.0/22")]))


def test_ipv6_needs_supernets() -> None:
    with pytest.raises(PlanError, match="podSupernetV6 is not set"):
        plan(make_fleet([cluster("a", ipFamily="dual")]))


def test_dual_stack_allocates_both_families() -> None:
    p = plan(
        make_fleet(
            [cluster("a", ipFamily="dual"), cluster("b", ipFamily="ipv6")],
            podSupernetV6="fd00:10::/48",
            serviceSupernetV6="fd00:20::/108",
        )
    )
    a, b = p.cluster("a"), p.cluster("b")
    assert isinstance(a.pod_cidr, IPv4Network) and a.pod_cidr_v6 is not None
    assert a.pod_cidr_v6.prefixlen == 109  # 5 blocks -> 8 x /112
    assert b.pod_cidr is None and b.service_cidr is None and b.pod_cidr_v6 is not None
    assert b.capacity.family == 6
    assert a.service_cidr_v6 is not None and a.service_cidr_v6.prefixlen == 112


def test_nested_supernets_are_kept_apart() -> None:
    p = plan(
        make_fleet(
            [cluster(f"c{i}") for i in range(4)],
            podSupernet="10.0.0.0/16",
            serviceSupernet="10.0.0.0/18",
            servicePrefix=20,
        )
    )
    services = ip_network("10.0.0.0/18")
    for c in p.clusters:
        assert c.pod_cidr is not None and c.service_cidr is not None
        assert not c.pod_cidr.overlaps(services)
        assert c.service_cidr.subnet_of(services)  # type: ignore[arg-type]


def test_same_supernet_for_pods_and_services_is_refused() -> None:
    with pytest.raises(PlanError, match="give services their own range"):
        plan(make_fleet([cluster("a")], podSupernet="10.0.0.0/8", serviceSupernet="10.0.0.0/8"))
