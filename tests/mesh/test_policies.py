"""Network policy: cluster-explicit Cilium selectors, the Kubernetes fallback, Istio mTLS."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.render import RenderError
from isthmus.render.netpolicy import CILIUM_CLUSTER_LABEL, PolicyFlavor, render_policies
from isthmus.spec import CassandraCluster, Mesh

from ._mesh import example, planned, with_network

Obj = dict[str, Any]


def _named(objs: tuple[Obj, ...], kind: str, suffix: str) -> Obj:
    (obj,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return obj


def _with_access(app: CassandraCluster, rules: list[dict[str, Any]]) -> CassandraCluster:
    access = app.spec.access.model_copy(update={"rules": rules})
    return app.model_copy(update={"spec": app.spec.model_copy(update={"access": access})})


def _selectors(cnp: Obj) -> list[Obj]:
    return [sel for rule in cnp["spec"]["ingress"] for sel in rule.get("fromEndpoints", [])]


def test_every_cnp_peer_selector_names_its_clusters() -> None:
    fleet, app = example()
    m = render_policies(app, fleet, planned(fleet))
    for cluster in m.clusters:
        cnps = [o for o in m.for_cluster(cluster) if o["kind"] == "CiliumNetworkPolicy"]
        assert {o["apiVersion"] for o in cnps} == {"cilium.io/v2"} and len(cnps) == 3
        for cnp in cnps:
            for sel in _selectors(cnp):
                keys = [e["key"] for e in sel["matchExpressions"]]
                assert keys == [CILIUM_CLUSTER_LABEL], cnp["metadata"]["name"]


def test_internode_ports_only_between_this_apps_pods_in_member_clusters() -> None:
    fleet, app = example()
    objs = render_policies(app, fleet, planned(fleet)).for_cluster("eu-west")
    cnp = _named(objs, "CiliumNetworkPolicy", "-internode")
    (rule,) = cnp["spec"]["ingress"]
    (sel,) = rule["fromEndpoints"]
    assert sel["matchLabels"] == {"app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": "orders"}
    assert sel["matchExpressions"][0]["values"] == sorted(app.member_clusters())
    assert [p["port"] for p in rule["toPorts"][0]["ports"]] == ["7000", "7001"]


def test_default_deny_and_clients_default_to_the_namespace() -> None:
    fleet, app = example()
    objs = render_policies(app, fleet, planned(fleet)).for_cluster("us-east")
    deny = _named(objs, "CiliumNetworkPolicy", "-default-deny")
    assert deny["spec"] == {"endpointSelector": {}, "ingress": [{}]}
    clients = _named(objs, "CiliumNetworkPolicy", "-clients")
    (rule,) = clients["spec"]["ingress"]
    assert "matchLabels" not in rule["fromEndpoints"][0]
    assert rule["toPorts"][0]["ports"] == [{"port": "9042", "protocol": "TCP"}]


def test_clients_come_from_access_rules() -> None:
    fleet, app = example()
    app = _with_access(app, [{"name": "sales", "clientLabels": {"app": "sales"},
                              "identities": {"cidrs": ["10.20.0.0/16"]}}])
    objs = render_policies(app, fleet, planned(fleet)).for_cluster("us-east")
    rules = _named(objs, "CiliumNetworkPolicy", "-clients")["spec"]["ingress"]
    assert rules[0]["fromEndpoints"][0]["matchLabels"] == {"app": "sales"}
    assert rules[1]["fromCIDR"] == ["10.20.0.0/16"]
    with pytest.raises(RenderError, match="clientLabels"):
        render_policies(_with_access(app, [{"clientLabels": ["x"]}]), fleet, planned(fleet))


def test_kubernetes_fallback_allows_remote_datacenters_by_pod_cidr() -> None:
    fleet, app = example()
    p = planned(fleet)
    objs = render_policies(app, fleet, p, flavor=PolicyFlavor.KUBERNETES).for_cluster("eu-west")
    assert {o["apiVersion"] for o in objs} == {"networking.k8s.io/v1"}
    internode = _named(objs, "NetworkPolicy", "-internode")
    blocks = {f["ipBlock"]["cidr"] for f in internode["spec"]["ingress"][0]["from"] if "ipBlock" in f}
    assert blocks == {str(p.cluster("us-east").pod_cidr), str(p.cluster("ap-south").pod_cidr)}
    assert _named(objs, "NetworkPolicy", "-default-deny")["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_istio_adds_strict_mtls_and_authorization() -> None:
    fleet, app = example()
    fleet = with_network(fleet, mesh=Mesh.BOTH)
    objs = render_policies(app, fleet, planned(fleet)).for_cluster("ap-south")
    peer = _named(objs, "PeerAuthentication", "orders")
    assert peer["apiVersion"] == "security.istio.io/v1" and peer["spec"]["mtls"] == {"mode": "STRICT"}
    internode = _named(objs, "AuthorizationPolicy", "-internode")
    assert internode["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "cluster.local/ns/cassandra/sa/orders"]
    clients = _named(objs, "AuthorizationPolicy", "-clients")
    assert clients["spec"]["rules"][0]["from"][0]["source"] == {"namespaces": ["cassandra"]}
    assert any(o["kind"] == "CiliumNetworkPolicy" for o in objs)


def test_byte_stable() -> None:
    fleet, app = example()
    a = render_policies(app, fleet, planned(fleet)).to_yaml("eu-west")
    assert a == render_policies(app, fleet, planned(fleet)).to_yaml("eu-west")
