"""Cilium for one mesh: the Helm values of every cluster and the shared ``cilium-ca`` Secret.

Owns: what Isthmus tells the Cilium Helm chart (every key is listed in :data:`HELM_KEYS` and in
``docs/helm-values.md``; a test holds the two and the rendered values together) and the CA Secret
the chart reads. Must not: generate keys or certificates, talk to a cluster or run Helm — the
caller creates the CA once for the whole mesh and passes it in; the applier runs Helm.

Decisions
=========
* **``MTU`` is the device MTU, not the route MTU.** The chart's ``MTU`` "overwrites the
  auto-detected MTU of the underlying network" and sets the MTU of ``cilium_host``/``cilium_net``/
  ``cilium_vxlan``; the agent then derives the pod *route* MTU by subtracting the tunnel and
  encryption overheads itself (``pkg/mtu``: ``GetRouteMTU``). Isthmus therefore writes the plan's
  ``mesh_mtu.underlay_mtu`` — the *smallest* underlay MTU of the fleet, the same number in every
  cluster — and Cilium arrives at ``mesh_mtu.route_mtu``. Writing the route MTU would subtract the
  overheads twice; writing each cluster's own underlay would give pods in a 1500-byte cluster a
  route MTU that does not fit through a 1460-byte peer.
* **One peer list, identical in every cluster.** ``clustermesh.config.clusters`` names every
  cluster of the fleet, the local one included: the agent skips the entry named after its own
  cluster ("Ignoring configuration for own cluster"), so one list serves all and a test can say
  "identical". Each peer is ``{name, address: <name>.<domain>, port}``; when the caller knows the
  clustermesh-apiserver addresses it passes them and the peer also gets ``ips``, from which the
  chart writes host aliases for ``<name>.<domain>`` (no DNS record needed). Without ``ips`` the
  ``<name>.mesh.isthmus.local`` names must resolve (a DNS zone the operator maintains).
* **Exposure.** ``LoadBalancer`` on port 2379 by default (:class:`ApiServerExposure`); ``NodePort``
  uses 32379 and then the peer ``ips`` are node addresses.
* **The CA.** Every cluster gets the same ``cilium-ca`` Secret (``ca.crt``, ``ca.key``) in
  ``kube-system``. The chart's ``cilium.ca.setup`` uses ``tls.ca.cert``/``tls.ca.key`` when set, else
  ``lookup``\\ s the ``cilium-ca`` Secret of the release namespace, else generates a fresh CA. The
  values from :func:`cilium_values` carry no key material (they are safe to print); the Secret
  carries Helm's adoption metadata so ``helm upgrade --install`` takes it over instead of
  refusing it. ``lookup`` answers nothing under ``helm template``: a caller that templates offline
  must merge :func:`cilium_ca_values` (base64 PEM, secret, never printed) into the values.
* **MCS and headless Services.** Remote seeds are ``clusterset.local`` names of headless
  Services, so MCS-API support (with CoreDNS auto-configuration) and EndpointSlice
  synchronisation are on.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from ..netplan import ClusterPlan, NetworkPlan
from ..spec.fleet import Encryption, RoutingMode
from .errors import RenderError
from .hashing import stamp
from .manifests import Manifests

__all__ = [
    "CA_SECRET_NAME",
    "CILIUM_NAMESPACE",
    "CILIUM_RELEASE",
    "CLUSTERMESH_APISERVER_PORT",
    "CLUSTERMESH_NODE_PORT",
    "HELM_KEYS",
    "MESH_DOMAIN",
    "ApiServerExposure",
    "CiliumCA",
    "cilium_ca_secret",
    "cilium_ca_values",
    "cilium_values",
    "clustermesh_peers",
    "flatten_keys",
    "render_cilium",
]

CILIUM_NAMESPACE: Final = "kube-system"
CILIUM_RELEASE: Final = "cilium"
CA_SECRET_NAME: Final = "cilium-ca"
MESH_DOMAIN: Final = "mesh.isthmus.local"
CLUSTERMESH_APISERVER_PORT: Final = 2379
CLUSTERMESH_NODE_PORT: Final = 32379

#: Every Helm key (dotted path) Isthmus may write, documented in docs/helm-values.md.
#: ``tls.ca.*`` appear only in :func:`cilium_ca_values`, never in :func:`cilium_values`.
HELM_KEYS: Final = frozenset({
    "cluster.name",
    "cluster.id",
    "ipam.mode",
    "ipam.operator.clusterPoolIPv4PodCIDRList",
    "ipam.operator.clusterPoolIPv4MaskSize",
    "ipam.operator.clusterPoolIPv6PodCIDRList",
    "ipam.operator.clusterPoolIPv6MaskSize",
    "ipv4.enabled",
    "ipv6.enabled",
    "routingMode",
    "tunnelProtocol",
    "ipv4NativeRoutingCIDR",
    "ipv6NativeRoutingCIDR",
    "MTU",
    "encryption.enabled",
    "encryption.type",
    "clustermesh.useAPIServer",
    "clustermesh.maxConnectedClusters",
    "clustermesh.enableEndpointSliceSynchronization",
    "clustermesh.mcsapi.enabled",
    "clustermesh.mcsapi.corednsAutoConfigure.enabled",
    "clustermesh.apiserver.service.type",
    "clustermesh.apiserver.service.nodePort",
    "clustermesh.config.enabled",
    "clustermesh.config.domain",
    "clustermesh.config.clusters",
    "tls.ca.cert",
    "tls.ca.key",
})


class ApiServerExposure(StrEnum):
    """How each cluster's clustermesh-apiserver is reached by its peers."""

    LOAD_BALANCER = "LoadBalancer"  # port 2379 on a load-balancer address
    NODE_PORT = "NodePort"  # port 32379 on every node

    @property
    def port(self) -> int:
        return CLUSTERMESH_APISERVER_PORT if self is ApiServerExposure.LOAD_BALANCER else CLUSTERMESH_NODE_PORT


@dataclass(frozen=True)
class CiliumCA:
    """The mesh's shared CA, PEM text, made once by the caller. ``repr`` never shows the key."""

    cert_pem: str
    key_pem: str = field(repr=False)

    def __post_init__(self) -> None:
        if "BEGIN CERTIFICATE" not in self.cert_pem:
            raise RenderError("the Cilium CA certificate is not PEM (no 'BEGIN CERTIFICATE' line)")
        if "PRIVATE KEY" not in self.key_pem:
            raise RenderError("the Cilium CA key is not a PEM private key (no 'PRIVATE KEY' line)")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def clustermesh_peers(
    plan: NetworkPlan,
    *,
    domain: str = MESH_DOMAIN,
    exposure: ApiServerExposure = ApiServerExposure.LOAD_BALANCER,
    apiserver_ips: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """``clustermesh.config.clusters``: every cluster of the plan, sorted by name, same list everywhere."""
    ips = apiserver_ips or {}
    unknown = sorted(set(ips) - {c.name for c in plan.clusters})
    if unknown:
        raise RenderError(f"apiserver addresses given for {', '.join(unknown)}, not a cluster of fleet {plan.fleet}")
    peers: list[dict[str, Any]] = []
    for cluster in sorted(plan.clusters, key=lambda c: c.name):
        peer: dict[str, Any] = {"name": cluster.name, "address": f"{cluster.name}.{domain}", "port": exposure.port}
        if ips.get(cluster.name):
            peer["ips"] = sorted(ips[cluster.name])
        peers.append(peer)
    return peers


def _ipam(cluster: ClusterPlan) -> tuple[dict[str, Any], dict[str, Any]]:
    operator: dict[str, Any] = {}
    families: dict[str, Any] = {"ipv4": {"enabled": cluster.pod_cidr is not None},
                                "ipv6": {"enabled": cluster.pod_cidr_v6 is not None}}
    if cluster.pod_cidr is not None:
        operator["clusterPoolIPv4PodCIDRList"] = [str(cluster.pod_cidr)]
        operator["clusterPoolIPv4MaskSize"] = cluster.pod_mask_size
    if cluster.pod_cidr_v6 is not None:
        operator["clusterPoolIPv6PodCIDRList"] = [str(cluster.pod_cidr_v6)]
        operator["clusterPoolIPv6MaskSize"] = cluster.pod_mask_size_v6
    if not operator:
        raise RenderError(f"cluster {cluster.name} has no pod CIDR in the plan; run `isthmus plan` first")
    return {"mode": "cluster-pool", "operator": operator}, families


def cilium_values(
    plan: NetworkPlan,
    cluster: str,
    *,
    domain: str = MESH_DOMAIN,
    exposure: ApiServerExposure = ApiServerExposure.LOAD_BALANCER,
    apiserver_ips: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The Cilium Helm values of ``cluster``: identity, IPAM, datapath, encryption and ClusterMesh.

    Holds no secret (see :func:`cilium_ca_values`). Raises ``RenderError`` when the plan gives the
    cluster no Cilium cluster ID (an Istio-only fleet).
    """
    try:
        planned = plan.cluster(cluster)
    except KeyError:
        raise RenderError(f"cluster {cluster!r} is not in the plan of fleet {plan.fleet}") from None
    if planned.cluster_id is None:
        raise RenderError(f"cluster {cluster} has no Cilium cluster ID in the plan (network.mesh is "
                          f"{plan.network.mesh.value}); Cilium values need mesh: cilium or both")
    net = plan.network
    ipam, families = _ipam(planned)
    values: dict[str, Any] = {
        "cluster": {"name": planned.name, "id": planned.cluster_id},
        "ipam": ipam,
        **families,
        "routingMode": net.routing.value,
        "MTU": plan.mesh_mtu.underlay_mtu,
        "encryption": ({"enabled": True, "type": net.encryption.value} if net.encryption is not Encryption.NONE
                       else {"enabled": False}),
        "clustermesh": {
            "useAPIServer": True,
            "maxConnectedClusters": net.max_connected_clusters,
            "enableEndpointSliceSynchronization": True,
            "mcsapi": {"enabled": True, "corednsAutoConfigure": {"enabled": True}},
            "apiserver": {"service": {"type": exposure.value}},
            "config": {
                "enabled": True,
                "domain": domain,
                "clusters": clustermesh_peers(plan, domain=domain, exposure=exposure, apiserver_ips=apiserver_ips),
            },
        },
    }
    if exposure is ApiServerExposure.NODE_PORT:
        values["clustermesh"]["apiserver"]["service"]["nodePort"] = CLUSTERMESH_NODE_PORT
    if net.routing is RoutingMode.TUNNEL:
        values["tunnelProtocol"] = net.tunnel_protocol.value
    else:
        if planned.pod_cidr is not None:
            values["ipv4NativeRoutingCIDR"] = str(net.pod_supernet)
        if planned.pod_cidr_v6 is not None and net.pod_supernet_v6 is not None:
            values["ipv6NativeRoutingCIDR"] = str(net.pod_supernet_v6)
    return values


def cilium_ca_values(ca: CiliumCA) -> dict[str, Any]:
    """The ``tls.ca`` overlay (base64 PEM, as the chart wants): secret — merge late, never print."""
    return {"tls": {"ca": {"cert": _b64(ca.cert_pem), "key": _b64(ca.key_pem)}}}


def cilium_ca_secret(ca: CiliumCA, *, release: str = CILIUM_RELEASE,
                     namespace: str = CILIUM_NAMESPACE) -> dict[str, Any]:
    """The ``cilium-ca`` Secret, identical in every cluster, with Helm's adoption metadata.

    The content-hash annotation covers the certificate only, so it says nothing about the key.
    """
    def secret(key_b64: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": CA_SECRET_NAME, "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "cilium",
                           "isthmus.dev/managed": "true"},
                "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
            },
            "data": {"ca.crt": _b64(ca.cert_pem), "ca.key": key_b64},
        }

    return stamp(secret(_b64(ca.key_pem)), hashed_as=secret(""))


def render_cilium(plan: NetworkPlan, ca: CiliumCA) -> Manifests:
    """The Kubernetes objects Cilium needs before Helm runs: the shared CA Secret in every cluster."""
    return Manifests.build((c.name, cilium_ca_secret(ca)) for c in plan.clusters)


def flatten_keys(values: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of ``values``' leaves; a list (``clustermesh.config.clusters``) is one leaf."""
    keys: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            keys |= flatten_keys(value, f"{path}.")
        else:
            keys.add(path)
    return keys
