"""Refusing a plan that does not fit the mesh, naming the rule it breaks.

Owns: the mesh's own rules — the ones Cilium ClusterMesh and Istio enforce at run time, often
only as a log line on one agent — checked before anything is applied. Must not: plan (that is
``isthmus.netplan``) or render; it only reads a plan, an app and rendered Helm values.

What can differ between clusters: the spec makes routing, tunnel protocol, encryption, the mesh
and ``maxConnectedClusters`` fleet-wide, so a plan cannot mix them; the *rendered values* can
(a per-cluster Helm override), so :func:`check_cilium_values` compares them across clusters.
Per cluster and free to differ: name, ID, CIDRs, node CIDR and underlay MTU (the mesh runs at
the smallest, which :func:`check_mesh` confirms every cluster was planned with).

Errors::

    UserError
    └── RenderError
        └── MeshCheckError     the plan, app or values break a mesh rule; ``violations`` lists all
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from ..netplan import NetworkPlan
from ..spec.cassandra import CassandraCluster
from ..spec.fleet import CLUSTER_NAME_PATTERN, Mesh, RoutingMode
from .errors import RenderError

__all__ = [
    "CILIUM_CLUSTER_NAME_MAX",
    "MeshCheckError",
    "MeshRule",
    "MeshViolation",
    "check_cilium_values",
    "check_mesh",
    "require_mesh_fit",
]

CILIUM_CLUSTER_NAME_MAX = 32


class MeshRule(StrEnum):
    """The rules, named so a message, a test and the docs can point at one."""

    CLUSTER_ID_MISSING = "cluster-id-missing"  # Cilium needs an ID on every cluster of the mesh
    CLUSTER_ID_RANGE = "cluster-id-range"  # 1..maxConnectedClusters; 0 means "no mesh"
    CLUSTER_ID_UNIQUE = "cluster-id-unique"  # two clusters with one ID corrupt identities
    CLUSTER_COUNT = "cluster-count"  # more clusters than maxConnectedClusters
    CLUSTER_NAME = "cluster-name"  # <= 32 chars, [a-z0-9-], alnum at both ends, not "default"
    POD_CIDR_DISJOINT = "pod-cidr-disjoint"  # ClusterMesh routes by pod IP: CIDRs must not overlap
    NATIVE_ROUTING_CIDR = "native-routing-cidr"  # native routing: pod CIDRs inside the supernet
    MESH_MTU = "mesh-mtu"  # every cluster planned with the mesh's MTU
    SAME_SETTING = "same-setting"  # rendered values agree on routing, encryption, MTU, limits, peers
    FLAT_NETWORK = "flat-network"  # Cassandra gossips by pod IP and seeds by clusterset.local


@dataclass(frozen=True)
class MeshViolation:
    rule: MeshRule
    message: str
    cluster: str | None = None

    def __str__(self) -> str:
        where = f"cluster {self.cluster}: " if self.cluster else ""
        return f"[{self.rule.value}] {where}{self.message}"


class MeshCheckError(RenderError):
    """The plan, app or values break a mesh rule; the message names the first, ``violations`` all."""

    def __init__(self, violations: Sequence[MeshViolation]) -> None:
        self.violations = tuple(violations)
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(f"the mesh refuses this plan: {self.violations[0]}{more}")


def _cilium_checks(plan: NetworkPlan) -> list[MeshViolation]:
    out: list[MeshViolation] = []
    limit = plan.network.max_connected_clusters
    if len(plan.clusters) > limit:
        out.append(MeshViolation(MeshRule.CLUSTER_COUNT, f"{len(plan.clusters)} clusters but maxConnectedClusters is "
                                 f"{limit}; raise it to 511 or split the fleet"))
    owners: dict[int, str] = {}
    for c in plan.clusters:
        if c.cluster_id is None:
            out.append(MeshViolation(MeshRule.CLUSTER_ID_MISSING, "no Cilium cluster ID; plan with mesh cilium or both",
                                     c.name))
            continue
        if not 1 <= c.cluster_id <= limit:
            out.append(MeshViolation(MeshRule.CLUSTER_ID_RANGE, f"cluster ID {c.cluster_id} is outside 1..{limit} "
                                     "(maxConnectedClusters)", c.name))
        if c.cluster_id in owners:
            out.append(MeshViolation(MeshRule.CLUSTER_ID_UNIQUE, f"cluster ID {c.cluster_id} is also "
                                     f"{owners[c.cluster_id]}'s", c.name))
        owners.setdefault(c.cluster_id, c.name)
    return out


def _inside(net: IPv4Network | IPv6Network, supernet: IPv4Network | IPv6Network | None) -> bool:
    if isinstance(net, IPv4Network) and isinstance(supernet, IPv4Network):
        return net.subnet_of(supernet)
    if isinstance(net, IPv6Network) and isinstance(supernet, IPv6Network):
        return net.subnet_of(supernet)
    return False


def check_mesh(plan: NetworkPlan, *, app: CassandraCluster | None = None) -> tuple[MeshViolation, ...]:
    """Every mesh rule ``plan`` (and ``app``, if given) breaks; empty when it fits."""
    net = plan.network
    out: list[MeshViolation] = []
    for c in plan.clusters:
        if len(c.name) > CILIUM_CLUSTER_NAME_MAX or not CLUSTER_NAME_PATTERN.match(c.name) or c.name == "default":
            out.append(MeshViolation(MeshRule.CLUSTER_NAME, f"Cilium rejects the name {c.name!r}: at most "
                                     f"{CILIUM_CLUSTER_NAME_MAX} of a-z, 0-9 and '-', alphanumeric at both ends, "
                                     "and not 'default'", c.name))
        if c.mtu != plan.mesh_mtu:
            out.append(MeshViolation(MeshRule.MESH_MTU, f"planned with route MTU {c.mtu.route_mtu}, the mesh runs at "
                                     f"{plan.mesh_mtu.route_mtu}; re-plan", c.name))
    if net.mesh in (Mesh.CILIUM, Mesh.BOTH):
        out += _cilium_checks(plan)
    pods = [(c.name, n) for c in plan.clusters for n in (c.pod_cidr, c.pod_cidr_v6) if n is not None]
    for i, (a, net_a) in enumerate(pods):
        for b, net_b in pods[i + 1:]:
            if a != b and net_a.version == net_b.version and net_a.overlaps(net_b):
                out.append(MeshViolation(MeshRule.POD_CIDR_DISJOINT, f"pod CIDR {net_a} overlaps {b}'s {net_b}", a))
    if net.routing is RoutingMode.NATIVE and net.mesh in (Mesh.CILIUM, Mesh.BOTH):
        for name, pod in pods:
            supernet = net.pod_supernet if pod.version == 4 else net.pod_supernet_v6
            if not _inside(pod, supernet):
                out.append(MeshViolation(MeshRule.NATIVE_ROUTING_CIDR, f"pod CIDR {pod} is outside the native-routing "
                                         f"CIDR {supernet}; Cilium would masquerade traffic to it", name))
    if app is not None and len(app.member_clusters()) > 1 and net.mesh is Mesh.ISTIO:
        out.append(MeshViolation(MeshRule.FLAT_NETWORK, f"CassandraCluster {app.metadata.name} spans "
                                 f"{len(app.member_clusters())} clusters, but Cassandra nodes gossip with pod IPs and "
                                 "find remote seeds by clusterset.local names, which an Istio-only mesh routes and "
                                 "resolves for neither; use network.mesh: both (Cilium carries the pods, Istio adds "
                                 "mTLS) or cilium"))
    return tuple(out)


def _get(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


_SAME = ("routingMode", "tunnelProtocol", "encryption.enabled", "encryption.type", "MTU",
         "clustermesh.maxConnectedClusters", "clustermesh.config.clusters", "clustermesh.config.domain",
         "ipv4NativeRoutingCIDR")


def check_cilium_values(values: Mapping[str, Mapping[str, Any]]) -> tuple[MeshViolation, ...]:
    """Rendered (possibly overridden) Cilium values, cluster -> values: do they agree where they must?"""
    out: list[MeshViolation] = []
    names = sorted(values)
    for path in _SAME:
        seen = {name: _get(values[name], path) for name in names}
        distinct = {repr(v) for v in seen.values()}
        if len(distinct) > 1:
            detail = ", ".join(f"{n}={seen[n]!r}" for n in names if not isinstance(seen[n], list))
            out.append(MeshViolation(MeshRule.SAME_SETTING, f"{path} differs between clusters"
                                     f"{': ' + detail if detail else ''}; every cluster of the mesh needs the same"))
    owners: dict[object, str] = {}
    for name in names:
        cid = _get(values[name], "cluster.id")
        if _get(values[name], "cluster.name") != name:
            out.append(MeshViolation(MeshRule.CLUSTER_NAME, f"values name the cluster "
                                     f"{_get(values[name], 'cluster.name')!r}", name))
        if cid in owners:
            out.append(MeshViolation(MeshRule.CLUSTER_ID_UNIQUE, f"cluster.id {cid} is also {owners[cid]}'s", name))
        owners.setdefault(cid, name)
    return tuple(out)


def require_mesh_fit(plan: NetworkPlan, *, app: CassandraCluster | None = None,
                     values: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Raise :class:`MeshCheckError` when :func:`check_mesh` or :func:`check_cilium_values` finds anything."""
    violations = [*check_mesh(plan, app=app), *(check_cilium_values(values) if values is not None else ())]
    if violations:
        raise MeshCheckError(violations)
