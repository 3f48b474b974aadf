"""Cilium values: every cluster agrees with the others and with the plan, one invariant per test."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from isthmus.netplan import NetworkPlan, calculate_mtu
from isthmus.render import RenderError
from isthmus.render.cilium import (
    CA_SECRET_NAME,
    HELM_KEYS,
    ApiServerExposure,
    cilium_ca_secret,
    cilium_ca_values,
    cilium_values,
    flatten_keys,
    render_cilium,
)
from isthmus.render.hashing import content_hash
from isthmus.spec import Encryption, Mesh, RoutingMode, TunnelProtocol

from ._mesh import CA, DOCS, KEY, example, planned, with_network

Values = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def plan() -> NetworkPlan:
    return planned(example()[0])


@pytest.fixture(scope="module")
def values(plan: NetworkPlan) -> Values:
    return {c.name: cilium_values(plan, c.name) for c in plan.clusters}


def test_rendering_is_byte_stable(plan: NetworkPlan) -> None:
    first = json.dumps([cilium_values(plan, c.name) for c in plan.clusters], sort_keys=True)
    again = planned(example()[0])
    assert json.dumps([cilium_values(again, c.name) for c in again.clusters], sort_keys=True) == first
    assert render_cilium(plan, CA).to_yaml("eu-west") == render_cilium(again, CA).to_yaml("eu-west")


def test_cluster_ids_are_distinct_and_from_the_plan(plan: NetworkPlan, values: Values) -> None:
    ids = [v["cluster"]["id"] for v in values.values()]
    assert len(set(ids)) == len(ids)
    assert all(values[c.name]["cluster"] == {"name": c.name, "id": c.cluster_id} for c in plan.clusters)


def test_peer_lists_are_identical_and_name_every_cluster(plan: NetworkPlan, values: Values) -> None:
    lists = [v["clustermesh"]["config"]["clusters"] for v in values.values()]
    assert all(peers == lists[0] for peers in lists)
    assert [p["name"] for p in lists[0]] == sorted(c.name for c in plan.clusters)
    assert all(p["port"] == 2379 and p["address"] == f"{p['name']}.mesh.isthmus.local" for p in lists[0])


def test_pod_cidr_and_mask_are_the_plan(plan: NetworkPlan, values: Values) -> None:
    for c in plan.clusters:
        operator = values[c.name]["ipam"]["operator"]
        assert values[c.name]["ipam"]["mode"] == "cluster-pool"
        assert operator["clusterPoolIPv4PodCIDRList"] == [str(c.pod_cidr)]
        assert operator["clusterPoolIPv4MaskSize"] == c.pod_mask_size


def test_mtu_is_the_mesh_device_mtu_and_gives_the_plans_route_mtu(plan: NetworkPlan, values: Values) -> None:
    net = plan.network
    for v in values.values():
        assert v["MTU"] == plan.mesh_mtu.underlay_mtu == 1460  # ap-south's underlay, everywhere
        derived = calculate_mtu(v["MTU"], routing=net.routing, tunnel_protocol=net.tunnel_protocol,
                                encryption=net.encryption)
        assert derived.route_mtu == plan.mesh_mtu.route_mtu


@pytest.mark.parametrize("path", ["routingMode", "tunnelProtocol", "encryption", "clustermesh.maxConnectedClusters"])
def test_fleet_wide_settings_are_the_same_everywhere(values: Values, path: str) -> None:
    def get(v: dict[str, Any]) -> Any:
        for part in path.split("."):
            v = v[part]
        return v
    assert len({json.dumps(get(v), sort_keys=True) for v in values.values()}) == 1


def test_encryption_and_routing_follow_the_spec(values: Values) -> None:
    v = values["eu-west"]
    assert v["encryption"] == {"enabled": True, "type": "wireguard"}
    assert v["routingMode"] == "tunnel" and v["tunnelProtocol"] == "vxlan"
    assert "ipv4NativeRoutingCIDR" not in v


def test_native_routing_sets_the_supernet_and_drops_the_tunnel() -> None:
    fleet = with_network(example()[0], routing=RoutingMode.NATIVE, encryption=Encryption.NONE)
    p = planned(fleet)
    v = cilium_values(p, "us-east")
    assert v["routingMode"] == "native" and "tunnelProtocol" not in v
    assert v["ipv4NativeRoutingCIDR"] == fleet.spec.network.pod_supernet == "10.0.0.0/12"
    assert v["encryption"] == {"enabled": False}
    assert v["MTU"] == p.mesh_mtu.underlay_mtu == p.mesh_mtu.route_mtu


def test_clustermesh_settings(values: Values) -> None:
    mesh = values["us-east"]["clustermesh"]
    assert mesh["useAPIServer"] is True and mesh["config"]["enabled"] is True
    assert mesh["mcsapi"]["enabled"] is True and mesh["enableEndpointSliceSynchronization"] is True


def test_node_port_exposure_and_known_addresses(plan: NetworkPlan) -> None:
    v = cilium_values(plan, "eu-west", exposure=ApiServerExposure.NODE_PORT,
                      apiserver_ips={"us-east": ["10.142.0.9", "10.142.0.5"]})
    assert v["clustermesh"]["apiserver"]["service"] == {"type": "NodePort", "nodePort": 32379}
    peers = {p["name"]: p for p in v["clustermesh"]["config"]["clusters"]}
    assert peers["us-east"]["ips"] == ["10.142.0.5", "10.142.0.9"] and "ips" not in peers["ap-south"]
    assert {p["port"] for p in peers.values()} == {32379}
    with pytest.raises(RenderError, match="nowhere"):
        cilium_values(plan, "eu-west", apiserver_ips={"nowhere": ["1.2.3.4"]})


def _documented_keys() -> set[str]:
    table = (DOCS / "helm-values.md").read_text()
    return set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))


def test_documented_table_is_exactly_the_declared_keys() -> None:
    assert _documented_keys() == set(HELM_KEYS)


@pytest.mark.parametrize("variant", [
    {},
    {"routing": RoutingMode.NATIVE, "encryption": Encryption.IPSEC},
    {"tunnel_protocol": TunnelProtocol.GENEVE, "encryption": Encryption.NONE},
])
def test_rendered_keys_are_documented(variant: dict[str, Any]) -> None:
    p = planned(with_network(example()[0], **variant))
    used: set[str] = set()
    for c in p.clusters:
        used |= flatten_keys(cilium_values(p, c.name, exposure=ApiServerExposure.NODE_PORT))
    used |= flatten_keys(cilium_ca_values(CA))
    assert used <= _documented_keys(), used - _documented_keys()


def test_values_never_carry_key_material(values: Values) -> None:
    assert "PRIVATE KEY" not in json.dumps(values) and "tls" not in values["eu-west"]


def test_ca_secret_is_what_the_chart_looks_up(plan: NetworkPlan) -> None:
    m = render_cilium(plan, CA)
    secrets = [m.for_cluster(c.name) for c in plan.clusters]
    assert all(s == secrets[0] for s in secrets)
    (secret,) = secrets[0]
    assert secret["metadata"]["name"] == CA_SECRET_NAME == "cilium-ca"
    assert secret["metadata"]["namespace"] == "kube-system"
    assert set(secret["data"]) == {"ca.crt", "ca.key"}
    assert secret["metadata"]["annotations"]["meta.helm.sh/release-name"] == "cilium"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_ca_hash_and_repr_reveal_nothing_of_the_key() -> None:
    other = type(CA)(cert_pem=CA.cert_pem, key_pem=KEY.format("another"))
    a, b = cilium_ca_secret(CA), cilium_ca_secret(other)
    assert a["metadata"]["annotations"] == b["metadata"]["annotations"]
    assert content_hash(a) != content_hash(b)  # the live diff still sees a changed key
    assert "SECRET" not in repr(CA)


def test_istio_only_plan_has_no_cilium_values() -> None:
    p = planned(with_network(example()[0], mesh=Mesh.ISTIO))
    assert all(c.cluster_id is None for c in p.clusters)
    with pytest.raises(RenderError, match="no Cilium cluster ID"):
        cilium_values(p, "eu-west")


def test_unknown_cluster_is_a_render_error(plan: NetworkPlan) -> None:
    with pytest.raises(RenderError, match="not in the plan"):
        cilium_values(plan, "mars")


def test_bad_pem_is_refused() -> None:
    with pytest.raises(RenderError, match="PEM"):
        type(CA)(cert_pem="nope", key_pem=CA.key_pem)
