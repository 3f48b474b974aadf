"""The pod network on a real kernel (namespaces, veths, bridge, VXLAN; no Kubernetes needed).

The planner's route MTU is checked end to end: a packet with DF set of exactly the planned
route MTU crosses from a pod of one cluster to a pod of another, one byte more is refused, and
a plan that forgot the tunnel overhead loses its full-size packets (the VXLAN device's MTU comes
from the kernel, not from the plan).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from isthmus.lab.netns import netns_path
from isthmus.lab.podnet import ETC_NETNS, LabNetwork, NetworkError, PodNetwork, lab_netns, remove_lab_network
from isthmus.lab.specs import complete_network, default_specs
from isthmus.spec.fleet import RoutingMode

from .netprobe import ip, udp_df

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


def _network(state_dir: Path, routing: RoutingMode, route_mtu: int | None = None) -> LabNetwork:
    specs = complete_network([replace(s, routing=routing, route_mtu=route_mtu) for s in default_specs(2)])
    net = LabNetwork.for_specs(state_dir, specs)
    net.up()
    return net


def _pods(net: LabNetwork) -> tuple[PodNetwork, PodNetwork]:
    a = net.add_pod("c1", "a1", net.pod_range("c1").network_address + 7, namespace="ns1")
    b = net.add_pod("c2", "b1", net.pod_range("c2").network_address + 9, namespace="ns2")
    return a, b


@pytest.fixture(scope="module", params=[RoutingMode.TUNNEL, RoutingMode.NATIVE], ids=["tunnel", "native"])
def joined(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[LabNetwork, PodNetwork, PodNetwork]]:
    state = tmp_path_factory.mktemp(f"podnet-{request.param.value}")
    net = _network(state, request.param)
    try:
        yield (net, *_pods(net))
    finally:
        net.down()


def test_planned_route_mtu_crosses_clusters_and_one_byte_more_is_refused(
        joined: tuple[LabNetwork, PodNetwork, PodNetwork]) -> None:
    net, a, b = joined
    expected = 1450 if net.layout.routing is RoutingMode.TUNNEL else 1500
    assert a.mtu == b.mtu == net.layout.route_mtu == expected
    assert udp_df(a, b, a.mtu) == "delivered"
    assert udp_df(b, a, b.mtu) == "delivered"
    assert udp_df(a, b, a.mtu + 1) == "refused: Message too long"
    assert f"mtu {expected} " in ip("-o", "link", "show", "dev", "eth0", netns=a.netns)


def test_tunnel_device_mtu_comes_from_the_underlay(joined: tuple[LabNetwork, PodNetwork, PodNetwork]) -> None:
    net, _, _ = joined
    c1 = net.layout.cluster("c1")
    links = ip("-o", "-d", "link", "show", netns=c1.netns)
    if net.layout.routing is RoutingMode.TUNNEL:
        assert "vxlan id 1 " in links and "dstport 8472" in links
        assert f"{c1.vxlan}: <" in links and "mtu 1450 " in ip("-o", "link", "show", "dev", c1.vxlan, netns=c1.netns)
    else:
        assert "vxlan" not in links
        assert f"{net.layout.cluster('c2').pod_net} via {c1.underlay_ip}" in ip("route", netns=c1.netns)


def test_add_pod_is_idempotent_and_writes_resolv_conf(joined: tuple[LabNetwork, PodNetwork, PodNetwork]) -> None:
    net, a, _ = joined
    again = net.add_pod("c1", "a1", a.ip, namespace="ns1")
    assert again == a and a.netns_path == netns_path(a.netns) and a.netns_path.exists()
    assert (ETC_NETNS / a.netns / "resolv.conf").read_text() == net.resolv_conf("c1", "ns1")
    resolv = subprocess.run(["ip", "netns", "exec", a.netns, "cat", "/etc/resolv.conf"], check=True,
                            capture_output=True, text=True).stdout
    assert resolv.startswith(f"nameserver {net.dns_ip('c1')}\nsearch ns1.svc.cluster.local ")
    with pytest.raises(NetworkError, match="not a usable address"):
        net.add_pod("c1", "x1", IPv4Address("10.1.0.5"))  # kwok's half


def test_host_namespace_has_no_route_or_interface_into_the_lab(
        joined: tuple[LabNetwork, PodNetwork, PodNetwork]) -> None:
    net, a, b = joined
    host_links = ip("-o", "link")
    assert net.layout.prefix not in host_links
    host_routes = ip("-4", "route", "show", "table", "all")
    for c in net.layout.clusters:
        for cidr in (c.pod_net, c.pod_range, c.node_net):
            assert str(cidr) not in host_routes
    for pod in (a, b):
        assert net.layout.prefix not in ip("-4", "route", "get", str(pod.ip))


def test_a_plan_without_the_tunnel_overhead_loses_full_size_packets(tmp_path: Path) -> None:
    net = _network(tmp_path / "wrong", RoutingMode.TUNNEL, route_mtu=1500)
    try:
        a, b = _pods(net)
        assert udp_df(a, b, 1450) == "delivered"
        assert udp_df(a, b, 1500, wait=1.0) == "lost"  # the VXLAN device (1450) drops it
    finally:
        net.down()


def test_down_and_a_killed_owner_leave_nothing(tmp_path: Path) -> None:
    state = tmp_path / "killed"
    net = _network(state, RoutingMode.TUNNEL)
    a, _ = _pods(net)
    # A process inside a pod namespace, as a killed lab would leave it.
    sleeper = subprocess.Popen(["ip", "netns", "exec", a.netns, "sleep", "600"])
    try:
        assert len(lab_netns(state)) == 5
        fresh = LabNetwork.for_specs(state, default_specs(2))  # another process, same state dir
        remove_lab_network(fresh.state_dir)
        assert sleeper.wait(timeout=10) != 0
        assert lab_netns(state) == []
        assert list(ETC_NETNS.glob(f"{net.layout.prefix}-*")) == []
    finally:
        sleeper.kill()
        net.down()
