"""How a CassandraCluster's names resolve across clusters: MCS exports, global and mesh services.

Owns: the objects that make the names in :mod:`isthmus.render.seeds` and the client address
resolve beyond one cluster, and the list of those client addresses per mode (for the README and
``isthmus explain``). Must not: change the objects :mod:`isthmus.render.cassandra` renders — what
is here is added next to them (``Manifests.merge``).

What is rendered
================
* **MCS ``ServiceExport``** (``multicluster.x-k8s.io/v1alpha1``) for each datacenter's ``-seeds``
  and ``-client`` Service in the datacenter's cluster, and for the fleet-wide ``<app>-client`` in
  every cluster. That is what makes ``<app>-<dc>-seeds.<ns>.svc.clusterset.local`` (the remote seeds)
  resolve, through Cilium's MCS-API support (with CoreDNS auto-configuration, see
  :mod:`isthmus.render.cilium`) on ``mesh: cilium|both``. On ``mesh: istio`` nothing Isthmus
  renders answers ``clusterset.local`` (Istio's MCS support is experimental and not configured),
  which is one reason :mod:`isthmus.render.meshcheck` refuses a multi-cluster Cassandra there.
* **One fleet-wide client Service, ``<app>-client``, in every cluster of the fleet** — not only
  the ones with a datacenter. Cilium merges a global Service's remote backends only into clusters
  that have a Service of the same name and namespace, so a client in a cluster without one would
  have nothing to resolve. Annotations (``mesh: cilium|both``):

  - ``service.cilium.io/global: "true"`` — merge the backends of every cluster;
  - ``service.cilium.io/shared: "true"`` — offer this cluster's backends to the others;
  - ``service.cilium.io/affinity: "local"`` — set deliberately: a client prefers the nodes of its
    own datacenter (low latency, ``LOCAL_QUORUM`` stays local) and fails over to remote ones only
    when no local backend is healthy. Drivers use the contact point only to bootstrap; after
    that their DC-aware policy picks nodes, so ``local`` affinity matches what the driver does.

  In a cluster with no datacenter the selector matches nothing locally and every backend is
  remote. The Namespace is rendered there too (the Cassandra renderer only creates it where a
  datacenter lives), spelt exactly as the Cassandra renderer spells it.
* **Istio** (``mesh: istio|both``): Istio merges the endpoints of same-named Services in every
  cluster of the mesh, so the same ``<app>-client`` Service serves; no ServiceEntry is needed.
  A ``DestinationRule`` turns on locality load balancing (which needs outlier detection to act),
  the Istio twin of Cilium's ``affinity: local``.

Who deploys what
================
* :func:`app_discovery` — the objects of the clusters that host a datacenter. ``render`` merges
  them into the app's manifests, so ``isthmus apply``, the operator, prune, drift and
  ``isthmus delete`` handle them like every other object of the app.
* :func:`outside_discovery` — the rest: the ``<app>-client`` Service (and its Namespace and
  export) in clusters with no datacenter, which the app's rollout never writes to;
  ``isthmus mesh render`` writes them to files.
* A Fleet of one cluster needs no name to resolve beyond it: nothing is rendered at all (and no
  member then needs the MCS CRDs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from ..spec.cassandra import CassandraCluster
from ..spec.fleet import Fleet, Mesh
from .cassandra_config import CQL_PORT
from .errors import RenderError
from .hashing import stamp
from .manifests import Manifests
from .naming import CassandraNames
from .seeds import DEFAULT_CLUSTER_DOMAIN, DEFAULT_CLUSTERSET_DOMAIN

__all__ = [
    "CILIUM_AFFINITY_ANNOTATION",
    "CILIUM_GLOBAL_ANNOTATION",
    "CILIUM_SHARED_ANNOTATION",
    "MCS_API_VERSION",
    "ClientAddress",
    "DiscoveryMode",
    "app_discovery",
    "client_addresses",
    "fleet_client_service",
    "fleet_client_service_name",
    "needs_discovery",
    "outside_discovery",
    "render_discovery",
    "service_export",
]

MCS_API_VERSION: Final = "multicluster.x-k8s.io/v1alpha1"
CILIUM_GLOBAL_ANNOTATION: Final = "service.cilium.io/global"
CILIUM_SHARED_ANNOTATION: Final = "service.cilium.io/shared"
CILIUM_AFFINITY_ANNOTATION: Final = "service.cilium.io/affinity"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class DiscoveryMode(StrEnum):
    """How a client finds the cluster: the name it dials and who resolves it."""

    CILIUM_GLOBAL = "cilium-global"  # <app>-client.<ns>.svc.cluster.local, local DC preferred
    MCS = "mcs"  # <app>-client.<ns>.svc.clusterset.local, every DC alike
    ISTIO = "istio"  # <app>-client.<ns>.svc.cluster.local, endpoints merged by istiod


@dataclass(frozen=True)
class ClientAddress:
    """The name a client in ``cluster`` dials in ``mode``, and what answers it."""

    cluster: str
    mode: DiscoveryMode
    host: str
    port: int
    behaviour: str

    def to_dict(self) -> dict[str, object]:
        return {"cluster": self.cluster, "mode": self.mode.value, "host": self.host, "port": self.port,
                "behaviour": self.behaviour}


def fleet_client_service_name(app: CassandraCluster) -> str:
    name = f"{app.metadata.name}-client"
    if len(name) > 63 or not _DNS1035.match(name):
        raise RenderError(f"Service name {name!r} is not a DNS-1035 label (at most 63 characters, starting with a "
                          "letter); shorten the CassandraCluster name")
    return name


def _selector(app: CassandraCluster) -> dict[str, str]:
    # The identity labels the Cassandra renderer puts on every pod of the app (all datacenters).
    return {"app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": app.metadata.name}


def _labels(app: CassandraCluster) -> dict[str, str]:
    return {**_selector(app), "app.kubernetes.io/managed-by": "isthmus", "isthmus.dev/app": app.metadata.name}


def _cilium(mesh: Mesh) -> bool:
    return mesh in (Mesh.CILIUM, Mesh.BOTH)


def _istio(mesh: Mesh) -> bool:
    return mesh in (Mesh.ISTIO, Mesh.BOTH)


def service_export(app: CassandraCluster, service: str) -> dict[str, Any]:
    """A ``ServiceExport`` named like the Service it exports (that is how MCS pairs them)."""
    return {"apiVersion": MCS_API_VERSION, "kind": "ServiceExport",
            "metadata": {"name": service, "namespace": app.namespace, "labels": _labels(app)}}


def fleet_client_service(app: CassandraCluster, mesh: Mesh) -> dict[str, Any]:
    """``<app>-client``: the same object in every cluster; global with local affinity under Cilium."""
    meta: dict[str, Any] = {"name": fleet_client_service_name(app), "namespace": app.namespace,
                            "labels": _labels(app)}
    if _cilium(mesh):
        meta["annotations"] = {CILIUM_GLOBAL_ANNOTATION: "true", CILIUM_SHARED_ANNOTATION: "true",
                               CILIUM_AFFINITY_ANNOTATION: "local"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"type": "ClusterIP", "selector": _selector(app),
                     "ports": [{"name": "cql", "port": CQL_PORT, "targetPort": CQL_PORT, "protocol": "TCP"}]}}


def _destination_rule(app: CassandraCluster, cluster_domain: str) -> dict[str, Any]:
    host = f"{fleet_client_service_name(app)}.{app.namespace}.svc.{cluster_domain}"
    return {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": fleet_client_service_name(app), "namespace": app.namespace, "labels": _labels(app)},
        "spec": {"host": host, "trafficPolicy": {
            "loadBalancer": {"localityLbSetting": {"enabled": True}},
            # Locality failover only acts with outlier detection: eject a backend that fails to connect.
            "outlierDetection": {"consecutive5xxErrors": 3, "interval": "10s", "baseEjectionTime": "30s"},
        }},
    }


def _namespace(app: CassandraCluster) -> dict[str, Any]:
    # Spelt as isthmus.render.cassandra spells it, so both renderers agree where both render it.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": app.namespace, "labels": {"app.kubernetes.io/managed-by": "isthmus"}}}


def render_discovery(app: CassandraCluster, fleet: Fleet, *, mesh: Mesh | None = None,
                     cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Manifests:
    """The discovery objects of ``app`` in every cluster of ``fleet`` (merge with the app's manifests)."""
    mesh = fleet.spec.network.mesh if mesh is None else mesh
    clusters = [c.name for c in fleet.spec.clusters]
    for dc in app.spec.datacenters:
        if dc.cluster not in clusters:
            raise RenderError(f"datacenter {dc.name!r} names cluster {dc.cluster!r}, which Fleet "
                              f"{fleet.metadata.name!r} does not have ({', '.join(clusters)})")
    names = CassandraNames(app.metadata.name, app.namespace)
    members = set(app.member_clusters())
    pairs: list[tuple[str, dict[str, Any]]] = []
    for dc in app.spec.datacenters:
        pairs += [(dc.cluster, stamp(service_export(app, names.seed_service(dc.name)))),
                  (dc.cluster, stamp(service_export(app, names.client_service(dc.name))))]
    for cluster in clusters:
        if cluster not in members:
            pairs.append((cluster, stamp(_namespace(app))))
        pairs += [(cluster, stamp(fleet_client_service(app, mesh))),
                  (cluster, stamp(service_export(app, fleet_client_service_name(app))))]
        if _istio(mesh):
            pairs.append((cluster, stamp(_destination_rule(app, cluster_domain))))
    return Manifests.build(pairs)


def needs_discovery(fleet: Fleet) -> bool:
    """Whether any name must resolve beyond one cluster: only when the Fleet has several."""
    return len(fleet.spec.clusters) > 1


def _split(app: CassandraCluster, fleet: Fleet, mesh: Mesh | None, cluster_domain: str,
           *, members: bool) -> Manifests:
    if not needs_discovery(fleet):
        return Manifests()
    every = render_discovery(app, fleet, mesh=mesh, cluster_domain=cluster_domain)
    hosts = set(app.member_clusters())
    return Manifests({c: every.for_cluster(c) for c in every.clusters if (c in hosts) is members})


def app_discovery(app: CassandraCluster, fleet: Fleet, *, mesh: Mesh | None = None,
                  cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Manifests:
    """The discovery objects of the clusters hosting a datacenter of ``app`` (part of the app's manifests)."""
    return _split(app, fleet, mesh, cluster_domain, members=True)


def outside_discovery(app: CassandraCluster, fleet: Fleet, *, mesh: Mesh | None = None,
                      cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Manifests:
    """The discovery objects of the Fleet's clusters that host no datacenter of ``app`` (for files)."""
    return _split(app, fleet, mesh, cluster_domain, members=False)


def client_addresses(app: CassandraCluster, fleet: Fleet, *, mode: DiscoveryMode | None = None,
                     cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
                     clusterset_domain: str = DEFAULT_CLUSTERSET_DOMAIN) -> list[ClientAddress]:
    """The address a client in each cluster dials, per mode (all modes the fleet's mesh supports by default)."""
    mesh = fleet.spec.network.mesh
    if mode is not None:
        modes = [mode]
    else:
        modes = ([DiscoveryMode.CILIUM_GLOBAL, DiscoveryMode.MCS] if _cilium(mesh) else [DiscoveryMode.MCS])
        modes += [DiscoveryMode.ISTIO] if _istio(mesh) else []
    service = fleet_client_service_name(app)
    ns = app.namespace
    out: list[ClientAddress] = []
    for m in modes:
        if m is DiscoveryMode.CILIUM_GLOBAL:
            host = f"{service}.{ns}.svc.{cluster_domain}"
            how = "Cilium global service: this cluster's datacenter first (affinity local), others on failover"
        elif m is DiscoveryMode.MCS:
            host = f"{service}.{ns}.svc.{clusterset_domain}"
            how = "MCS ServiceImport: every datacenter's nodes alike; the driver's DC-aware policy picks"
        else:
            host = f"{service}.{ns}.svc.{cluster_domain}"
            how = "Istio merges every cluster's endpoints; locality load balancing prefers this cluster's"
        out += [ClientAddress(c.name, m, host, CQL_PORT, how) for c in fleet.spec.clusters]
    return out
