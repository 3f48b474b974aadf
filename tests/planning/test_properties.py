"""Properties of allocation: disjoint, clear of avoided ranges, big enough, and stable under growth."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from itertools import combinations
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.netplan import Lock, PlanError, plan
from isthmus.netplan.addressing import blocks_needed

from ._fleets import cluster, make_fleet

AVOIDABLE = ["10.0.0.0/12", "10.64.0.0/16", "10.1.2.0/24", "10.200.0.0/13", "172.20.0.0/16", "172.16.0.0/20"]

sizes = st.lists(st.integers(min_value=0, max_value=200), min_size=1, max_size=12)
networks = st.fixed_dictionaries(
    {
        "avoid": st.lists(st.sampled_from(AVOIDABLE), unique=True, max_size=3),
        "headroom": st.sampled_from([1.0, 1.25, 1.5, 2.0, 3.3]),
        "podMaskSize": st.sampled_from([24, 25]),
        "servicePrefix": st.sampled_from([20, 22, 24]),
        "podSupernet": st.sampled_from(["10.0.0.0/8", "10.0.0.0/10"]),
    }
)


def fleet_of(nodes: list[int], network: dict[str, Any], *, dual: bool = False) -> Any:
    extra = {"ipFamily": "dual"} if dual else {}
    v6 = {"podSupernetV6": "fd00:10::/48", "serviceSupernetV6": "fd00:20::/100"} if dual else {}
    return make_fleet([cluster(f"c{i}", nodes=n, **extra) for i, n in enumerate(nodes)], **network, **v6)


def all_cidrs(p: Any) -> list[IPv4Network | IPv6Network]:
    return [
        n for c in p.clusters for n in (c.pod_cidr, c.service_cidr, c.pod_cidr_v6, c.service_cidr_v6) if n is not None
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=sizes, network=networks, dual=st.booleans())
def test_allocations_are_disjoint_clear_and_big_enough(nodes: list[int], network: dict[str, Any], dual: bool) -> None:
    try:
        p = plan(fleet_of(nodes, network, dual=dual))
    except PlanError:
        return  # an exhausted supernet is a legitimate answer; its message is tested elsewhere
    cidrs = all_cidrs(p)
    for a, b in combinations(cidrs, 2):
        assert not a.overlaps(b), (a, b)
    for cidr in cidrs:
        for avoided in network["avoid"]:
            assert not cidr.overlaps(ip_network(avoided)), (cidr, avoided)
    for c, n in zip(p.clusters, nodes, strict=True):
        assert c.pod_cidr is not None
        assert c.capacity.node_blocks_total >= blocks_needed(n, network["headroom"])
        assert c.capacity.node_blocks_total >= n * network["headroom"]
        assert c.pod_cidr.subnet_of(ip_network(network["podSupernet"]))  # type: ignore[arg-type]
        if dual:
            assert c.pod_cidr_v6 is not None
            assert 1 << (112 - c.pod_cidr_v6.prefixlen) >= blocks_needed(n, network["headroom"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=sizes, added=sizes, network=networks, dual=st.booleans())
def test_existing_allocations_stay_put_when_clusters_are_added(
    first: list[int], added: list[int], network: dict[str, Any], dual: bool
) -> None:
    try:
        before = plan(fleet_of(first, network, dual=dual))
    except PlanError:
        return
    lock = Lock.from_dict(before.lock.to_dict())
    grown = fleet_of(first + added, network, dual=dual)
    try:
        after = plan(grown, lock)
    except PlanError:
        return
    for entry in before.lock.clusters:
        assert after.lock.get(entry.name) == entry
    cidrs = all_cidrs(after)
    for a, b in combinations(cidrs, 2):
        assert not a.overlaps(b), (a, b)
    ids = [c.cluster_id for c in after.clusters]
    assert len(set(ids)) == len(ids) and all(i is not None and 1 <= i <= 255 for i in ids)
