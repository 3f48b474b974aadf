"""Firewall explanation: the flows each mode needs between every ordered pair of clusters."""

from __future__ import annotations

import json

from isthmus.render.cilium import ApiServerExposure
from isthmus.render.firewall import FirewallReport, Protocol, firewall_rules
from isthmus.spec import Encryption, Mesh, RoutingMode, TunnelProtocol

from ._mesh import example, planned, with_network


def _report(**network: object) -> FirewallReport:
    fleet = with_network(example()[0], **network)
    return firewall_rules(planned(fleet), fleet)


def _flows(report: FirewallReport, a: str = "eu-west", b: str = "us-east") -> set[tuple[Protocol, int | None]]:
    return {(r.protocol, r.port) for r in report.pair(a, b)}


def test_every_ordered_pair_is_covered() -> None:
    report = _report()
    pairs = {(r.from_cluster, r.to_cluster) for r in report.rules}
    assert len(pairs) == 6 and all(a != b for a, b in pairs)


def test_tunnel_with_wireguard() -> None:
    flows = _flows(_report())
    assert {(Protocol.UDP, 8472), (Protocol.UDP, 51871), (Protocol.TCP, 4240), (Protocol.ICMP, 8),
            (Protocol.TCP, 2379)} == flows  # Cassandra rides inside the tunnel


def test_geneve_tunnel_without_encryption() -> None:
    flows = _flows(_report(tunnel_protocol=TunnelProtocol.GENEVE, encryption=Encryption.NONE))
    assert (Protocol.UDP, 6081) in flows and (Protocol.UDP, 8472) not in flows and (Protocol.UDP, 51871) not in flows


def test_native_routing_opens_cassandra_between_pod_cidrs() -> None:
    report = _report(routing=RoutingMode.NATIVE, encryption=Encryption.NONE)
    rules = report.pair("eu-west", "ap-south")
    cassandra = [r for r in rules if r.component == "cassandra"]
    assert {r.port for r in cassandra} == {7000, 7001, 9042}
    p = planned(with_network(example()[0], routing=RoutingMode.NATIVE))
    assert {(r.source, r.destination) for r in cassandra} == {(str(p.cluster("eu-west").pod_cidr),
                                                                str(p.cluster("ap-south").pod_cidr))}
    assert not any(r.port in (8472, 6081) for r in rules)


def test_native_routing_with_wireguard_hides_cassandra_and_ipsec_is_esp() -> None:
    assert not any(r.component == "cassandra" for r in _report(routing=RoutingMode.NATIVE).rules)
    assert (Protocol.ESP, None) in _flows(_report(encryption=Encryption.IPSEC))


def test_node_port_exposure_uses_32379_between_node_cidrs() -> None:
    fleet = example()[0]
    report = firewall_rules(planned(fleet), fleet, apiserver_exposure=ApiServerExposure.NODE_PORT)
    (rule,) = [r for r in report.pair("us-east", "eu-west") if r.port == 32379]
    assert (rule.source, rule.destination) == ("10.142.0.0/20", "10.128.0.0/20")


def test_istio_flows() -> None:
    istio = _flows(_report(mesh=Mesh.ISTIO))
    assert {(Protocol.TCP, 15443), (Protocol.TCP, 15012), (Protocol.TCP, 15017), (Protocol.TCP, 6443)} == istio
    both = _flows(_report(mesh=Mesh.BOTH))
    assert (Protocol.TCP, 15443) not in both and (Protocol.UDP, 8472) in both and (Protocol.TCP, 6443) in both


def test_json_and_text() -> None:
    report = _report()
    data = json.loads(json.dumps(report.to_dict()))
    assert data["mode"]["encryption"] == "wireguard" and len(data["pairs"]) == 6
    assert data["pairs"][0]["rules"][0]["ipProtocol"] == 17
    text = report.to_text()
    assert "[eu-west -> us-east]" in text and "allow udp/8472" in text
