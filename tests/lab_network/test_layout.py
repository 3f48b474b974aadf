"""The pod network on paper (pure): names, address split, MTU defaults, fallbacks, resolv.conf."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from isthmus.lab.components import PORT_NAMES, ClusterPaths, ClusterPorts, kwok_config_yaml
from isthmus.lab.fleet import specs_from_fleet
from isthmus.lab.netlayout import IFNAMSIZ, kwok_range, lab_prefix, layout, pod_range, resolv_conf
from isthmus.lab.specs import LabClusterSpec, check_lab_specs, complete_network, default_specs
from isthmus.netplan import plan
from isthmus.spec import load_file
from isthmus.spec.fleet import Encryption, RoutingMode, TunnelProtocol

from .paths import EXAMPLES


def test_prefix_is_short_and_differs_per_state_dir() -> None:
    a, b = lab_prefix("/tmp/lab-a"), lab_prefix("/tmp/lab-b")
    assert a != b and len(a) == len(b) == 7
    assert lab_prefix("/tmp/lab-a") == a


def test_every_interface_name_fits_ifnamsiz_and_carries_the_prefix() -> None:
    net = layout(lab_prefix("/x"), default_specs(50))
    names = [n for c in net.clusters for n in (c.underlay_if, c.node_if, c.bridge, c.vxlan)]
    names.append(net.pod_host_if("c50", "0123456789abcdef0123456789abcdef"))
    assert all(len(n) <= IFNAMSIZ and n.startswith(net.prefix) for n in names)
    assert len({c.underlay_if for c in net.clusters}) == 50
    assert net.pod_host_if("c1", "aa") != net.pod_host_if("c2", "aa")
    assert len({c.vxlan_mac for c in net.clusters}) == 50


def test_pod_cidr_splits_between_kwok_and_real_pods() -> None:
    cidr = IPv4Network("10.1.0.0/16")
    assert kwok_range(cidr) == IPv4Network("10.1.0.0/17")
    assert pod_range(cidr) == IPv4Network("10.1.128.0/17")
    spec = default_specs(1)[0]
    ports = ClusterPorts.from_list(list(range(2001, 2001 + len(PORT_NAMES))))
    assert "cidr: 10.1.0.0/17\n" in kwok_config_yaml(spec, ports=ports, pki=ClusterPaths(Path("/nowhere")).pki)
    c = layout("iabcdef", [spec]).clusters[0]
    assert c.gateway == IPv4Address("10.1.128.1")
    assert c.dns_ip == IPv4Address("172.16.16.10")
    assert (c.underlay_ip, c.node_ip) == (IPv4Address("192.168.1.1"), IPv4Address("192.168.1.2"))
    with pytest.raises(ValueError, match="too small"):
        pod_range(IPv4Network("10.1.0.0/29"))


def test_resolv_conf_is_the_kubelets() -> None:
    assert resolv_conf(IPv4Address("172.16.16.10"), "cassandra") == (
        "nameserver 172.16.16.10\n"
        "search cassandra.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")


def test_route_mtu_follows_the_planner_and_the_smallest_underlay() -> None:
    base = [replace(s, route_mtu=None) for s in default_specs(2)]
    tunnel = complete_network([base[0], replace(base[1], underlay_mtu=9000)])
    assert {s.route_mtu for s in tunnel} == {1450}
    native = complete_network([replace(s, routing=RoutingMode.NATIVE) for s in base])
    assert {s.route_mtu for s in native} == {1500}
    wg = complete_network([replace(s, encryption=Encryption.WIREGUARD) for s in base])
    assert {s.route_mtu for s in wg} == {1500 - 50 - 80}


def test_missing_kernel_features_fall_back_and_say_so() -> None:
    specs = complete_network([replace(s, route_mtu=None, tunnel_protocol=TunnelProtocol.GENEVE,
                                      encryption=Encryption.WIREGUARD) for s in default_specs(2)])
    net = layout("iabcdef", specs)
    assert net.tunnel is TunnelProtocol.VXLAN and net.encryption is Encryption.NONE
    assert any("geneve -> vxlan" in f for f in net.fallbacks)
    assert any("wireguard -> none" in f for f in net.fallbacks)
    assert net.route_mtu == 1370  # the plan's figure stands
    assert layout("iabcdef", default_specs(2)).fallbacks == ()


def test_node_cidrs_are_filled_without_overlap_and_round_trip() -> None:
    a = LabClusterSpec(name="a", region="r", zones={"z": 1}, pod_cidr="192.168.1.0/24", service_cidr="10.9.0.0/16")
    b = LabClusterSpec(name="b", region="r", zones={"z": 1}, pod_cidr="10.2.0.0/16", service_cidr="10.10.0.0/16")
    done = complete_network([a, b])
    assert [s.node_cidr for s in done] == ["192.168.2.0/24", "192.168.3.0/24"]
    check_lab_specs(done)
    assert all(LabClusterSpec.from_json(s.to_json()) == s for s in done)
    with pytest.raises(ValueError, match="overlaps"):
        replace(a, node_cidr="192.168.1.0/25")


def test_lab_wide_network_settings_must_agree() -> None:
    specs = list(default_specs(2))
    specs[1] = replace(specs[1], routing=RoutingMode.NATIVE)
    with pytest.raises(ValueError, match="routing of cluster 'c2' is native"):
        check_lab_specs(specs)


def test_specs_from_a_fleet_carry_its_network_plan() -> None:
    fleet = load_file(EXAMPLES / "fleet.yaml").fleet
    assert fleet is not None
    planned = plan(fleet)
    specs = specs_from_fleet(fleet, planned)
    assert [s.node_cidr for s in specs] == ["10.128.0.0/20", "10.142.0.0/20", "10.160.0.0/20"]
    assert [s.underlay_mtu for s in specs] == [1500, 1500, 1460]
    assert {s.route_mtu for s in specs} == {planned.mesh_mtu.route_mtu} == {1460 - 50 - 80}
    assert {(s.routing, s.tunnel_protocol, s.encryption) for s in specs} == {
        (RoutingMode.TUNNEL, TunnelProtocol.VXLAN, Encryption.WIREGUARD)}
    net = layout("iabcdef", specs)
    assert net.encryption is Encryption.NONE and net.route_mtu == 1330
    assert net.fallbacks == ("encryption wireguard -> none: this kernel has no wireguard module"
                             " (pods keep the planned route MTU 1330)",)
