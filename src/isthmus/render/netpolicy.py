"""Network policy for a CassandraCluster: who may reach its nodes, across clusters.

Owns: the policy objects of each cluster that hosts a datacenter —

* **Cilium** (``cilium.io/v2`` ``CiliumNetworkPolicy``, ``mesh: cilium|both``):
  ``<app>-default-deny`` selects every pod of the namespace with one empty ingress rule, i.e.
  ingress default-deny for the namespace; ``<app>-internode`` lets this app's pods reach each
  other on 7000/7001 from every cluster hosting a datacenter; ``<app>-clients`` opens 9042 to the
  allowed clients. Every peer selector names its clusters with ``io.cilium.k8s.policy.cluster``
  explicitly: Cilium 1.19 (``policy-default-local-cluster``) has a selector without it match only
  the local cluster, older releases every cluster; relying on either default would let the
  policy change meaning with the Cilium version or its configuration. Egress is not restricted
  (backups, DNS and metrics leave the pods).
* **Kubernetes** (``networking.k8s.io/v1`` ``NetworkPolicy``, the fallback for a CNI without
  ClusterMesh identities): the same three, with remote datacenters allowed by their pod CIDRs
  (``ipBlock``) because a pod selector only sees the local cluster. Clients are local only: there
  is no portable way to name a namespace of another cluster.
* **Istio** (``mesh: istio|both``): a ``PeerAuthentication`` demanding STRICT mTLS for the app's
  pods and ``AuthorizationPolicy`` objects mirroring the two allow rules by SPIFFE principal.

With ``spec.access`` enabled the client port is the cqlguard sidecar's (:mod:`isthmus.render.access`:
the guard listens on the pod IP, Cassandra on loopback, so only the guard is reachable and no
policy needs to shield Cassandra's own port). With ``enforcement: legacyCiliumL7`` (deprecated,
Cilium only) ``<app>-clients`` is replaced by ``<app>-clients-legacy-l7``, one ingress rule per
access rule carrying Cilium's Cassandra L7 rules; the two are never rendered together, since an
L4-only allow on the port would disable the L7 filtering for the peers it selects.

Allowed clients come from ``spec.access.rules`` when any rule names them — ``clientLabels`` (a
label map: pods of the namespace, in any cluster of the fleet), ``identities.cidrs`` (CIDR
sources) and ``identities.principals`` (Istio) — else any pod of the app's namespace may connect.
Must not: decide CQL permissions (that is cqlguard's), or do I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from ..netplan import NetworkPlan
from ..spec.cassandra import CassandraCluster
from ..spec.fleet import Fleet, Mesh
from .access import DEPRECATED_ANNOTATION, client_port, legacy_l7_enabled, legacy_l7_grants
from .cassandra_config import INTRA_NODE_PORT, TLS_INTRA_NODE_PORT
from .errors import RenderError
from .hashing import stamp
from .manifests import Manifests
from .naming import CassandraNames

__all__ = [
    "CILIUM_CLUSTER_LABEL",
    "ClientAccess",
    "PolicyFlavor",
    "client_access",
    "render_policies",
]

CILIUM_CLUSTER_LABEL: Final = "io.cilium.k8s.policy.cluster"
INTERNODE_PORTS: Final = (INTRA_NODE_PORT, TLS_INTRA_NODE_PORT)


class PolicyFlavor(StrEnum):
    CILIUM = "cilium"  # CiliumNetworkPolicy with cluster-aware selectors
    KUBERNETES = "kubernetes"  # plain NetworkPolicy: remote peers by pod CIDR


@dataclass(frozen=True)
class ClientAccess:
    """Who may open CQL connections; all empty means "any pod of the namespace"."""

    label_sets: tuple[tuple[tuple[str, str], ...], ...] = ()
    cidrs: tuple[str, ...] = ()
    principals: tuple[str, ...] = field(default=())

    @property
    def any_pod(self) -> bool:
        return not (self.label_sets or self.cidrs)


def _str_map(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) and isinstance(v, str)
                                                             for k, v in value.items()):
        raise RenderError(f"{where} must be a non-empty map of label names to string values")
    return tuple(sorted(value.items()))


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RenderError(f"{where} must be a list of strings")
    return tuple(value)


def client_access(app: CassandraCluster) -> ClientAccess:
    """Read the allowed clients from ``spec.access.rules`` (see the module docstring)."""
    labels: list[tuple[tuple[str, str], ...]] = []
    cidrs: list[str] = []
    principals: list[str] = []
    for index, rule in enumerate(app.spec.access.rules):
        where = f"spec.access.rules[{index}]"
        if "clientLabels" in rule:
            labels.append(_str_map(rule["clientLabels"], f"{where}.clientLabels"))
        identities = rule.get("identities") or {}
        if not isinstance(identities, dict):
            raise RenderError(f"{where}.identities must be a map")
        if "cidrs" in identities:
            cidrs += _str_list(identities["cidrs"], f"{where}.identities.cidrs")
        if "principals" in identities:
            principals += _str_list(identities["principals"], f"{where}.identities.principals")
    return ClientAccess(tuple(sorted(set(labels))), tuple(sorted(set(cidrs))), tuple(sorted(set(principals))))


def _selector(app: CassandraCluster) -> dict[str, str]:
    return {"app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": app.metadata.name}


def _meta(app: CassandraCluster, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": app.namespace,
            "labels": {**_selector(app), "app.kubernetes.io/managed-by": "isthmus",
                       "isthmus.dev/app": app.metadata.name}}


def _in_clusters(clusters: Sequence[str]) -> dict[str, Any]:
    return {"key": CILIUM_CLUSTER_LABEL, "operator": "In", "values": sorted(clusters)}


def _cilium_ports(ports: Sequence[int]) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]


def _cilium(app: CassandraCluster, members: Sequence[str], fleet_clusters: Sequence[str],
            access: ClientAccess) -> list[dict[str, Any]]:
    api = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy"}
    deny = {**api, "metadata": _meta(app, f"{app.metadata.name}-default-deny"),
            "spec": {"endpointSelector": {}, "ingress": [{}]}}
    internode = {**api, "metadata": _meta(app, f"{app.metadata.name}-internode"), "spec": {
        "endpointSelector": {"matchLabels": _selector(app)},
        "ingress": [{"fromEndpoints": [{"matchLabels": _selector(app), "matchExpressions": [_in_clusters(members)]}],
                     "toPorts": _cilium_ports(INTERNODE_PORTS)}],
    }}
    rules: list[dict[str, Any]] = []
    if access.any_pod:
        rules.append({"fromEndpoints": [{"matchExpressions": [_in_clusters(fleet_clusters)]}]})
    if access.label_sets:
        rules.append({"fromEndpoints": [{"matchLabels": dict(ls), "matchExpressions": [_in_clusters(fleet_clusters)]}
                                        for ls in access.label_sets]})
    if access.cidrs:
        rules.append({"fromCIDR": list(access.cidrs)})
    if legacy_l7_enabled(app):
        return [deny, internode, _cilium_legacy_l7(app, fleet_clusters)]
    clients = {**api, "metadata": _meta(app, f"{app.metadata.name}-clients"), "spec": {
        "endpointSelector": {"matchLabels": _selector(app)},
        "ingress": [{**r, "toPorts": _cilium_ports([client_port(app)])} for r in rules],
    }}
    return [deny, internode, clients]


def _cilium_legacy_l7(app: CassandraCluster, fleet_clusters: Sequence[str]) -> dict[str, Any]:
    """Clients per access rule, each limited to its queries by Cilium's deprecated Cassandra parser."""
    ingress: list[dict[str, Any]] = []
    for grant in legacy_l7_grants(app):
        to_ports = [{**_cilium_ports([client_port(app)])[0],
                     "rules": {"l7proto": "cassandra", "l7": [dict(r) for r in grant.l7]}}]
        if grant.label_sets:
            peers = [{"matchLabels": dict(ls), "matchExpressions": [_in_clusters(fleet_clusters)]}
                     for ls in grant.label_sets]
            ingress.append({"fromEndpoints": peers, "toPorts": to_ports})
        if grant.cidrs:
            ingress.append({"fromCIDR": list(grant.cidrs), "toPorts": to_ports})
    meta = _meta(app, f"{app.metadata.name}-clients-legacy-l7")
    meta["annotations"] = {DEPRECATED_ANNOTATION: (
        "Cilium's proxylib Cassandra parser (l7proto: cassandra) is deprecated upstream; it reads protocol v3/v4 "
        "without compression only. Prefer spec.access.enforcement: guard.")}
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta, "spec": {
        "endpointSelector": {"matchLabels": _selector(app)}, "ingress": ingress}}


def _k8s_ports(ports: Sequence[int]) -> list[dict[str, Any]]:
    return [{"port": p, "protocol": "TCP"} for p in ports]


def _kubernetes(app: CassandraCluster, cluster: str, members: Sequence[str], plan: NetworkPlan,
                access: ClientAccess) -> list[dict[str, Any]]:
    api = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    remote_cidrs: list[str] = []
    for other in members:
        if other == cluster:
            continue
        planned = plan.cluster(other)
        cidrs = [str(c) for c in (planned.pod_cidr, planned.pod_cidr_v6) if c is not None]
        if not cidrs:
            raise RenderError(f"cluster {other} has no pod CIDR in the plan; run `isthmus plan` first")
        remote_cidrs += cidrs
    deny = {**api, "metadata": _meta(app, f"{app.metadata.name}-default-deny"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": _selector(app)}}]
    peers += [{"ipBlock": {"cidr": c}} for c in sorted(remote_cidrs)]
    internode = {**api, "metadata": _meta(app, f"{app.metadata.name}-internode"), "spec": {
        "podSelector": {"matchLabels": _selector(app)}, "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": _k8s_ports(INTERNODE_PORTS)}],
    }}
    sources: list[dict[str, Any]] = []
    if access.any_pod:
        sources.append({"podSelector": {}})
    sources += [{"podSelector": {"matchLabels": dict(ls)}} for ls in access.label_sets]
    sources += [{"ipBlock": {"cidr": c}} for c in access.cidrs]
    clients = {**api, "metadata": _meta(app, f"{app.metadata.name}-clients"), "spec": {
        "podSelector": {"matchLabels": _selector(app)}, "policyTypes": ["Ingress"],
        "ingress": [{"from": sources, "ports": _k8s_ports([client_port(app)])}],
    }}
    return [deny, internode, clients]


def _istio(app: CassandraCluster, access: ClientAccess, trust_domain: str) -> list[dict[str, Any]]:
    names = CassandraNames(app.metadata.name, app.namespace)
    selector = {"matchLabels": _selector(app)}
    peer = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": _meta(app, app.metadata.name),
            "spec": {"selector": selector, "mtls": {"mode": "STRICT"}}}
    authz = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy"}
    node_principal = f"{trust_domain}/ns/{app.namespace}/sa/{names.service_account}"
    internode = {**authz, "metadata": _meta(app, f"{app.metadata.name}-internode"), "spec": {
        "selector": selector, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [node_principal]}}],
                   "to": [{"operation": {"ports": [str(p) for p in INTERNODE_PORTS]}}]}],
    }}
    if access.principals:
        source: dict[str, Any] = {"principals": [p.removeprefix("spiffe://") for p in access.principals]}
    else:
        source = {"namespaces": [app.namespace]}
    clients = {**authz, "metadata": _meta(app, f"{app.metadata.name}-clients"), "spec": {
        "selector": selector, "action": "ALLOW",
        "rules": [{"from": [{"source": source}], "to": [{"operation": {"ports": [str(client_port(app))]}}]}],
    }}
    return [peer, internode, clients]


def render_policies(app: CassandraCluster, fleet: Fleet, plan: NetworkPlan, *, flavor: PolicyFlavor | None = None,
                    mesh: Mesh | None = None, trust_domain: str = "cluster.local") -> Manifests:
    """The policy objects of ``app`` in each cluster hosting one of its datacenters.

    ``flavor`` defaults to Cilium when the mesh includes Cilium, else plain Kubernetes; Istio
    objects are added when the mesh includes Istio.
    """
    mesh = fleet.spec.network.mesh if mesh is None else mesh
    if flavor is None:
        flavor = PolicyFlavor.CILIUM if mesh in (Mesh.CILIUM, Mesh.BOTH) else PolicyFlavor.KUBERNETES
    fleet_clusters = [c.name for c in fleet.spec.clusters]
    members = app.member_clusters()
    missing = [m for m in members if m not in fleet_clusters]
    if missing:
        raise RenderError(f"app {app.metadata.name} has datacenters in {', '.join(missing)}, not in fleet "
                          f"{fleet.metadata.name}")
    if legacy_l7_enabled(app) and flavor is not PolicyFlavor.CILIUM:
        raise RenderError(f"app {app.metadata.name}: spec.access.enforcement legacyCiliumL7 needs Cilium network "
                          f"policy (this render uses {flavor.value}); use enforcement: guard")
    access = client_access(app)
    pairs: list[tuple[str, dict[str, Any]]] = []
    for cluster in members:
        objects = (_cilium(app, members, fleet_clusters, access) if flavor is PolicyFlavor.CILIUM
                   else _kubernetes(app, cluster, members, plan, access))
        if mesh in (Mesh.ISTIO, Mesh.BOTH):
            objects += _istio(app, access, trust_domain)
        pairs += [(cluster, stamp(o)) for o in objects]
    return Manifests.build(pairs)
