"""Istio multi-primary across the fleet: istiod values, networks, east-west gateway, secrets.

Owns: the per-cluster Istio settings (``global.meshID``, ``global.multiCluster.clusterName``,
``global.network`` for the ``istiod`` chart — no IstioOperator), the ``istio-system`` Namespace
with its ``topology.istio.io/network`` label, the east-west ``Gateway`` when the mesh spans
networks, the remote secrets that let each istiod watch its peers, and the plug-in CA
(``cacerts``) of every cluster. Must not: generate certificates or read kubeconfig files — the
caller passes one shared root with a per-cluster intermediate, and each peer's kubeconfig text.

Networks
========
* ``mesh: istio`` — Istio alone connects the clusters, so pod IPs of another region are not
  routable: **one network per region** (``net-<region>``), and cross-network traffic goes through
  each network's east-west gateway on 15443 (``AUTO_PASSTHROUGH``: SNI-routed mTLS, hosts
  ``*.local``).
* ``mesh: both`` — Cilium ClusterMesh makes every pod IP routable everywhere, so all clusters
  share **one network** (``net-flat``) and no east-west gateway is rendered: sidecars talk
  pod-to-pod directly, and Istio adds mTLS and authorization only.

Cassandra nodes gossip with pod IPs (``broadcast_address`` is the pod IP), which only a flat
network carries; :mod:`isthmus.render.meshcheck` refuses a Cassandra app on an Istio-only mesh that
spans several networks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..netplan import NetworkPlan
from ..spec.fleet import Mesh
from .errors import RenderError
from .hashing import stamp
from .manifests import Manifests

__all__ = [
    "CACERTS_SECRET",
    "EASTWEST_GATEWAY_NAME",
    "EASTWEST_PORT",
    "EASTWEST_SELECTOR",
    "FLAT_NETWORK",
    "ISTIO_NAMESPACE",
    "NETWORK_LABEL",
    "REMOTE_SECRET_LABEL",
    "IstioIntermediateCA",
    "cacerts_secret",
    "eastwest_gateway",
    "istio_namespace",
    "istio_networks",
    "istio_values",
    "remote_secret",
    "render_istio",
]

ISTIO_NAMESPACE: Final = "istio-system"
NETWORK_LABEL: Final = "topology.istio.io/network"
REMOTE_SECRET_LABEL: Final = "istio/multiCluster"
REMOTE_SECRET_ANNOTATION: Final = "networking.istio.io/cluster"
CACERTS_SECRET: Final = "cacerts"
EASTWEST_GATEWAY_NAME: Final = "cross-network-gateway"
EASTWEST_SELECTOR: Final = {"istio": "eastwestgateway"}
EASTWEST_PORT: Final = 15443
FLAT_NETWORK: Final = "net-flat"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")
_MANAGED = {"app.kubernetes.io/managed-by": "isthmus"}


@dataclass(frozen=True)
class IstioIntermediateCA:
    """One cluster's plug-in CA, PEM text: its intermediate, signed by the mesh's shared root."""

    root_cert_pem: str
    ca_cert_pem: str
    ca_key_pem: str = field(repr=False)
    cert_chain_pem: str

    def __post_init__(self) -> None:
        for name in ("root_cert_pem", "ca_cert_pem", "cert_chain_pem"):
            if "BEGIN CERTIFICATE" not in getattr(self, name):
                raise RenderError(f"Istio CA: {name} is not a PEM certificate")
        if "PRIVATE KEY" not in self.ca_key_pem:
            raise RenderError("Istio CA: ca_key_pem is not a PEM private key")


def istio_networks(plan: NetworkPlan) -> dict[str, str]:
    """The Istio network of every cluster: one per region on an Istio-only mesh, one in all otherwise."""
    if plan.network.mesh is Mesh.ISTIO:
        return {c.name: "net-" + _LABEL_VALUE.sub("-", c.region).strip("-.")[:59] for c in plan.clusters}
    return {c.name: FLAT_NETWORK for c in plan.clusters}


def _network(plan: NetworkPlan, cluster: str) -> str:
    networks = istio_networks(plan)
    if cluster not in networks:
        raise RenderError(f"cluster {cluster!r} is not in the plan of fleet {plan.fleet}")
    return networks[cluster]


def istio_values(plan: NetworkPlan, cluster: str, *, mesh_id: str | None = None) -> dict[str, Any]:
    """Values for the ``istiod`` Helm chart of ``cluster`` (mesh ID defaults to the fleet name)."""
    return {"global": {"meshID": mesh_id or plan.fleet, "multiCluster": {"clusterName": cluster},
                       "network": _network(plan, cluster)}}


def istio_namespace(plan: NetworkPlan, cluster: str) -> dict[str, Any]:
    """``istio-system``, labelled with the cluster's network (istiod reads it from there)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ISTIO_NAMESPACE, "labels": {**_MANAGED, NETWORK_LABEL: _network(plan, cluster)}}}


def eastwest_gateway() -> dict[str, Any]:
    """Expose every ``*.local`` service of this network to the others, mTLS passed through by SNI.

    Selects the pods of Istio's ``gateway`` chart installed as ``istio-eastwestgateway`` (label
    ``istio: eastwestgateway``, Service port 15443, network label on the pods).
    """
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": EASTWEST_GATEWAY_NAME, "namespace": ISTIO_NAMESPACE, "labels": dict(_MANAGED)},
        "spec": {"selector": dict(EASTWEST_SELECTOR), "servers": [{
            "port": {"number": EASTWEST_PORT, "name": "tls", "protocol": "TLS"},
            "tls": {"mode": "AUTO_PASSTHROUGH"},
            "hosts": ["*.local"],
        }]},
    }


def remote_secret(peer: str, kubeconfig: str) -> dict[str, Any]:
    """The secret that lets this cluster's istiod watch ``peer`` (what ``istioctl create-remote-secret`` makes).

    The content hash covers everything but the kubeconfig.
    """
    if "clusters:" not in kubeconfig:
        raise RenderError(f"the kubeconfig for Istio remote cluster {peer} has no 'clusters:' section")

    def secret(data: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": f"istio-remote-secret-{peer}", "namespace": ISTIO_NAMESPACE,
                             "labels": {**_MANAGED, REMOTE_SECRET_LABEL: "true"},
                             "annotations": {REMOTE_SECRET_ANNOTATION: peer}},
                "stringData": {peer: data}}

    return stamp(secret(kubeconfig), hashed_as=secret(""))


def cacerts_secret(ca: IstioIntermediateCA) -> dict[str, Any]:
    """The plug-in CA Secret istiod signs workload certificates with (key never in the hash)."""
    def secret(key: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": CACERTS_SECRET, "namespace": ISTIO_NAMESPACE, "labels": dict(_MANAGED)},
                "stringData": {"ca-cert.pem": ca.ca_cert_pem, "ca-key.pem": key,
                               "root-cert.pem": ca.root_cert_pem, "cert-chain.pem": ca.cert_chain_pem}}

    return stamp(secret(ca.ca_key_pem), hashed_as=secret(""))


def render_istio(plan: NetworkPlan, *, cas: Mapping[str, IstioIntermediateCA],
                 kubeconfigs: Mapping[str, str] | None) -> Manifests:
    """Per cluster: the labelled ``istio-system``, ``cacerts``, a remote secret per peer, and the
    east-west Gateway when the clusters are on more than one network.

    ``cas`` and ``kubeconfigs`` need an entry for every cluster, and every CA the same root.
    ``kubeconfigs=None`` leaves the remote secrets out, for a caller whose remote secrets come from
    elsewhere (``istioctl create-remote-secret`` with a reader service account, for example).
    """
    names = [c.name for c in plan.clusters]
    wanted = (("an Istio CA", cas),) + ((("a kubeconfig", kubeconfigs),) if kubeconfigs is not None else ())
    for what, given in wanted:
        missing = [n for n in names if n not in given]
        if missing:
            raise RenderError(f"no {what} for cluster(s) {', '.join(missing)}; pass one for every cluster")
    roots = {cas[n].root_cert_pem.strip() for n in names}
    if len(roots) > 1:
        raise RenderError("the Istio intermediate CAs do not share one root certificate; sign every cluster's "
                          "intermediate with the same root, or cross-cluster mTLS fails")
    multi_network = len(set(istio_networks(plan).values())) > 1
    pairs: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        pairs += [(name, stamp(istio_namespace(plan, name))), (name, cacerts_secret(cas[name]))]
        if kubeconfigs is not None:
            pairs += [(name, remote_secret(peer, kubeconfigs[peer])) for peer in names if peer != name]
        if multi_network:
            pairs.append((name, stamp(eastwest_gateway())))
    return Manifests.build(pairs)
