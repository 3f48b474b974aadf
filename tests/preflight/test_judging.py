"""Preflight decisions, pure: cluster facts in, findings out (no cluster needed)."""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from fixtures.labspecs import fleet_doc
from isthmus.kube.preflight import ClusterFacts, PreflightCheck, PreflightSeverity, dns_domain_of, judge
from isthmus.netplan import NetworkPlan, plan
from isthmus.spec import load_text

COREDNS = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n    }\n}\n"


def _plan() -> NetworkPlan:
    doc: dict[str, Any] = fleet_doc()
    for i, c in enumerate(doc["spec"]["clusters"], start=1):
        c["podCIDR"], c["serviceCIDR"] = f"10.{i}.0.0/16", f"172.16.{i * 16}.0/20"
    fleet = load_text(yaml.safe_dump(doc)).fleet
    assert fleet is not None
    return plan(fleet)


def _facts(i: int, **changes: object) -> ClusterFacts:
    base: dict[str, object] = {
        "name": f"c{i}",
        "node_ips": {f"c{i}-n1": (ipaddress.ip_address(f"192.168.{i}.10"),)},
        "node_pod_cidrs": {f"c{i}-n1": (ipaddress.ip_network(f"10.{i}.3.0/24"),)},
        "cluster_ips": {"default/kubernetes": (ipaddress.ip_address(f"172.16.{i * 16}.1"),),
                        "kube-system/kube-dns": (ipaddress.ip_address(f"172.16.{i * 16}.10"),)},
        "dns_domain": "cluster.local",
    }
    base.update(changes)
    return ClusterFacts(**base)  # type: ignore[arg-type]


def _all(**per_cluster: ClusterFacts) -> dict[str, ClusterFacts]:
    facts = {f"c{i}": _facts(i) for i in (1, 2, 3)}
    facts.update(per_cluster)
    return facts


def test_a_matching_fleet_has_no_findings() -> None:
    assert judge(_plan(), _all()) == ()


def test_kubernetes_service_outside_the_planned_service_cidr_blocks() -> None:
    wrong = _facts(2, cluster_ips={"default/kubernetes": (ipaddress.ip_address("10.96.0.1"),)})
    (finding,) = judge(_plan(), _all(c2=wrong))
    assert finding.check is PreflightCheck.SERVICE_CIDR and finding.severity is PreflightSeverity.BLOCKER
    assert finding.cluster == "c2" and "10.96.0.1" in finding.message
    assert "--service-cluster-ip-range" in finding.message


def test_any_clusterip_outside_blocks_and_headless_is_ignored() -> None:
    ips = {**_facts(1).cluster_ips, "shop/db": (ipaddress.ip_address("10.250.0.7"),), "shop/seeds": ()}
    (finding,) = judge(_plan(), _all(c1=_facts(1, cluster_ips=ips)))
    assert finding.check is PreflightCheck.SERVICE_CIDR and "shop/db (10.250.0.7)" in finding.message


def test_a_node_address_inside_any_planned_pod_cidr_blocks() -> None:
    # c3's node sits inside c1's planned pod CIDR: ClusterMesh would route it as c1's pods.
    clash = _facts(3, node_ips={"c3-n1": (ipaddress.ip_address("10.1.200.5"),)})
    findings = judge(_plan(), _all(c3=clash))
    assert [(f.cluster, f.check) for f in findings] == [("c1", PreflightCheck.POD_CIDR)]
    assert "node c3-n1 (10.1.200.5) of c3" in findings[0].message


def test_nodes_with_pod_cidrs_outside_the_plan_block() -> None:
    odd = _facts(2, node_pod_cidrs={"c2-n1": (ipaddress.ip_network("10.244.1.0/24"),)})
    (finding,) = judge(_plan(), _all(c2=odd))
    assert finding.check is PreflightCheck.POD_CIDR and "10.244.1.0/24" in finding.message


def test_cilium_config_with_another_id_name_or_mtu_blocks() -> None:
    live = _facts(1, cilium_config={"cluster-id": "9", "cluster-name": "prod-a", "mtu": "9001"})
    findings = judge(_plan(), _all(c1=live))
    assert {f.check for f in findings} == {PreflightCheck.CLUSTER_ID, PreflightCheck.MTU}
    assert all(f.severity is PreflightSeverity.BLOCKER for f in findings)
    text = " ".join(f.message for f in findings)
    assert "cluster-id 9" in text and "'prod-a'" in text and "MTU 9001" in text


def test_the_same_live_id_in_two_clusters_blocks() -> None:
    same = {"cluster-id": "1", "cluster-name": "default"}
    findings = judge(_plan(), _all(c2=_facts(2, cilium_config=same), c3=_facts(3, cilium_config=same)))
    duplicate = [f for f in findings if "live in both" in f.message]
    assert len(duplicate) == 1 and duplicate[0].cluster == "c3" and "c2" in duplicate[0].message


def test_cilium_without_an_id_and_unknown_dns_only_warn() -> None:
    findings = judge(_plan(), _all(c1=_facts(1, cilium_config={"cluster-id": "0", "cluster-name": "default"},
                                             dns_domain=None)))
    assert {f.check for f in findings} == {PreflightCheck.CLUSTER_ID, PreflightCheck.DNS_DOMAIN}
    assert all(f.severity is PreflightSeverity.WARNING for f in findings)


def test_dns_domain_is_read_from_the_corefile() -> None:
    assert dns_domain_of(COREDNS) == "cluster.local"
    assert dns_domain_of(COREDNS.replace("cluster.local", "corp.example.")) == "corp.example"
    assert dns_domain_of(".:53 {\n forward . /etc/resolv.conf\n}\n") is None
