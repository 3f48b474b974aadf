"""Istio objects: well-formed, one network per region on an Istio-only mesh, secrets never in hashes."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.netplan import NetworkPlan
from isthmus.render import RenderError
from isthmus.render.istio import (
    FLAT_NETWORK,
    NETWORK_LABEL,
    istio_networks,
    istio_values,
    render_istio,
)
from isthmus.spec import Mesh

from ._mesh import CERT, example, istio_cas, kubeconfigs, planned, with_network

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def plan() -> NetworkPlan:
    return planned(with_network(example()[0], mesh=Mesh.ISTIO))


def _kinds(objs: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def test_values_name_mesh_cluster_and_network(plan: NetworkPlan) -> None:
    v = istio_values(plan, "eu-west")
    assert v == {"global": {"meshID": "global", "multiCluster": {"clusterName": "eu-west"},
                            "network": "net-europe-west1"}}


def test_one_network_per_region_on_istio_only_and_one_flat_network_with_cilium(plan: NetworkPlan) -> None:
    assert len(set(istio_networks(plan).values())) == 3
    both = planned(with_network(example()[0], mesh=Mesh.BOTH))
    assert set(istio_networks(both).values()) == {FLAT_NETWORK}


def test_rendered_objects_per_cluster(plan: NetworkPlan) -> None:
    m = render_istio(plan, cas=istio_cas(plan), kubeconfigs=kubeconfigs(plan))
    for c in plan.clusters:
        objs = m.for_cluster(c.name)
        (ns,) = _kinds(objs, "Namespace")
        assert ns["metadata"]["labels"][NETWORK_LABEL] == istio_networks(plan)[c.name]
        (gw,) = _kinds(objs, "Gateway")
        assert gw["apiVersion"] == "networking.istio.io/v1"
        (server,) = gw["spec"]["servers"]
        assert server["port"]["number"] == 15443 and server["port"]["protocol"] == "TLS"
        assert server["tls"] == {"mode": "AUTO_PASSTHROUGH"} and server["hosts"] == ["*.local"]
        remotes = [s for s in _kinds(objs, "Secret") if s["metadata"]["name"].startswith("istio-remote-secret-")]
        peers = sorted(p.name for p in plan.clusters if p.name != c.name)
        assert sorted(s["metadata"]["annotations"]["networking.istio.io/cluster"] for s in remotes) == peers
        for s in remotes:
            peer = s["metadata"]["annotations"]["networking.istio.io/cluster"]
            assert s["metadata"]["labels"]["istio/multiCluster"] == "true"
            assert list(s["stringData"]) == [peer] and "clusters:" in s["stringData"][peer]
        (ca,) = [s for s in _kinds(objs, "Secret") if s["metadata"]["name"] == "cacerts"]
        assert set(ca["stringData"]) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}
        assert ca["metadata"]["namespace"] == "istio-system"


def test_no_eastwest_gateway_on_one_flat_network() -> None:
    both = planned(with_network(example()[0], mesh=Mesh.BOTH))
    m = render_istio(both, cas=istio_cas(both), kubeconfigs=kubeconfigs(both))
    assert not any(o["kind"] == "Gateway" for c in m.clusters for o in m.for_cluster(c))


def test_byte_stable_and_hashes_hide_keys_and_tokens(plan: NetworkPlan) -> None:
    a = render_istio(plan, cas=istio_cas(plan), kubeconfigs=kubeconfigs(plan))
    b = render_istio(plan, cas=istio_cas(plan), kubeconfigs=kubeconfigs(plan))
    assert a.to_yaml("us-east") == b.to_yaml("us-east")
    other = {n: k.replace("TOKEN", "OTHER") for n, k in kubeconfigs(plan).items()}
    c = render_istio(plan, cas=istio_cas(plan), kubeconfigs=other)
    hashes = [[o["metadata"]["annotations"] for o in m.for_cluster("us-east")] for m in (a, c)]
    assert hashes[0] == hashes[1]


def test_intermediates_must_share_one_root(plan: NetworkPlan) -> None:
    cas = istio_cas(plan)
    cas["eu-west"] = istio_cas(plan, root=CERT.format("other-root"))["eu-west"]
    with pytest.raises(RenderError, match="one root"):
        render_istio(plan, cas=cas, kubeconfigs=kubeconfigs(plan))


def test_missing_kubeconfig_is_named(plan: NetworkPlan) -> None:
    configs = kubeconfigs(plan)
    del configs["ap-south"]
    with pytest.raises(RenderError, match="ap-south"):
        render_istio(plan, cas=istio_cas(plan), kubeconfigs=configs)


def test_remote_secrets_left_out_when_made_elsewhere(plan: NetworkPlan) -> None:
    m = render_istio(plan, cas=istio_cas(plan), kubeconfigs=None)
    for c in plan.clusters:
        names = {o["metadata"]["name"] for o in m.for_cluster(c.name) if o["kind"] == "Secret"}
        assert names == {"cacerts"}
