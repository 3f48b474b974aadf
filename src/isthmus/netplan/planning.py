"""The planner: ``plan(fleet, lock) -> NetworkPlan``, pure — spec and lock in, an immutable plan out.

Owns: putting IDs, addresses, MTU and capacity together for a fleet, reconciling the spec with the
lock (the spec wins, with a warning; the lock otherwise never moves), and the ``NetworkPlan`` value the CLI
prints (``to_dict``) and the renderer consumes. Must not: do I/O — the CLI reads the spec and the
lock, calls ``plan`` and writes ``plan.lock.to_dict()`` back.

Clusters removed from the spec drop out of the new lock; a warning reports what they released. So a
cluster still being torn down cannot clash with a new one, released IDs and CIDRs are not handed out
again in the same plan — they are free from the next plan on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from ..spec.fleet import (
    ClusterSpec,
    Encryption,
    Fleet,
    IPFamily,
    Mesh,
    NetworkSpec,
    RoutingMode,
    TunnelProtocol,
)
from .addressing import AddressRequest, Network, allocate
from .capacity import Capacity, capacity
from .errors import PlanError
from .ids import IDRequest, assign_cluster_ids
from .lock import Lock, LockedCluster
from .mtu import IPV6_MIN_MTU, MTUResult, calculate

__all__ = ["ClusterPlan", "NetworkPlan", "NetworkSummary", "mesh_mtu", "plan"]


@dataclass(frozen=True)
class NetworkSummary:
    """The network settings a plan was made with (echoed for display and for drawing the map)."""

    routing: RoutingMode
    tunnel_protocol: TunnelProtocol
    encryption: Encryption
    mesh: Mesh
    max_connected_clusters: int
    pod_supernet: IPv4Network | IPv6Network
    service_supernet: IPv4Network | IPv6Network
    pod_supernet_v6: IPv4Network | IPv6Network | None
    service_supernet_v6: IPv4Network | IPv6Network | None
    avoid: tuple[IPv4Network | IPv6Network, ...]
    pod_mask_size: int
    pod_mask_size_v6: int
    service_prefix: int
    service_prefix_v6: int
    headroom: float

    @classmethod
    def from_spec(cls, net: NetworkSpec) -> NetworkSummary:
        def opt(value: str | None) -> IPv4Network | IPv6Network | None:
            return None if value is None else ipaddress.ip_network(value)

        return cls(
            routing=net.routing,
            tunnel_protocol=net.tunnel_protocol,
            encryption=net.encryption,
            mesh=net.mesh,
            max_connected_clusters=net.max_connected_clusters,
            pod_supernet=ipaddress.ip_network(net.pod_supernet),
            service_supernet=ipaddress.ip_network(net.service_supernet),
            pod_supernet_v6=opt(net.pod_supernet_v6),
            service_supernet_v6=opt(net.service_supernet_v6),
            avoid=tuple(ipaddress.ip_network(a) for a in net.avoid),
            pod_mask_size=net.pod_mask_size,
            pod_mask_size_v6=net.pod_mask_size_v6,
            service_prefix=net.service_prefix,
            service_prefix_v6=net.service_prefix_v6,
            headroom=net.headroom,
        )

    def to_dict(self) -> dict[str, object]:
        def opt(value: object | None) -> str | None:
            return None if value is None else str(value)

        return {
            "routing": self.routing.value,
            "tunnelProtocol": self.tunnel_protocol.value,
            "encryption": self.encryption.value,
            "mesh": self.mesh.value,
            "maxConnectedClusters": self.max_connected_clusters,
            "podSupernet": str(self.pod_supernet),
            "serviceSupernet": str(self.service_supernet),
            "podSupernetV6": opt(self.pod_supernet_v6),
            "serviceSupernetV6": opt(self.service_supernet_v6),
            "avoid": [str(a) for a in self.avoid],
            "podMaskSize": self.pod_mask_size,
            "podMaskSizeV6": self.pod_mask_size_v6,
            "servicePrefix": self.service_prefix,
            "servicePrefixV6": self.service_prefix_v6,
            "headroom": self.headroom,
        }


@dataclass(frozen=True)
class ClusterPlan:
    """One cluster's planned network. ``cluster_id`` is None only when no Cilium mesh needs one."""

    name: str
    region: str
    cluster_id: int | None
    ip_family: IPFamily
    pod_cidr: IPv4Network | None
    service_cidr: IPv4Network | None
    pod_cidr_v6: IPv6Network | None
    service_cidr_v6: IPv6Network | None
    node_cidr: IPv4Network | IPv6Network | None
    pod_mask_size: int
    pod_mask_size_v6: int
    nodes: int
    max_pods_per_node: int
    underlay_mtu: int
    mtu: MTUResult
    capacity: Capacity

    def to_dict(self) -> dict[str, object]:
        def opt(value: object | None) -> str | None:
            return None if value is None else str(value)

        return {
            "name": self.name,
            "region": self.region,
            "clusterID": self.cluster_id,
            "ipFamily": self.ip_family.value,
            "nodes": self.nodes,
            "maxPodsPerNode": self.max_pods_per_node,
            "nodeCIDR": opt(self.node_cidr),
            "podCIDR": opt(self.pod_cidr),
            "serviceCIDR": opt(self.service_cidr),
            "podCIDRV6": opt(self.pod_cidr_v6),
            "serviceCIDRV6": opt(self.service_cidr_v6),
            "podMaskSize": self.pod_mask_size,
            "podMaskSizeV6": self.pod_mask_size_v6,
            "underlayMTU": self.underlay_mtu,
            "routeMTU": self.mtu.route_mtu,
            "capacity": self.capacity.to_dict(),
        }


@dataclass(frozen=True)
class NetworkPlan:
    """Everything decided for a fleet; ``lock`` is the lock to write back next to the spec."""

    fleet: str
    clusters: tuple[ClusterPlan, ...]
    mesh_mtu: MTUResult
    network: NetworkSummary
    warnings: tuple[str, ...]
    lock: Lock

    def cluster(self, name: str) -> ClusterPlan:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """JSON-able, with a stable key order, for ``isthmus plan -o json|yaml``."""
        return {
            "fleet": self.fleet,
            "meshMTU": self.mesh_mtu.to_dict(),
            "network": self.network.to_dict(),
            "clusters": [c.to_dict() for c in self.clusters],
            "warnings": list(self.warnings),
            "lock": self.lock.to_dict(),
        }


def mesh_mtu(fleet: Fleet) -> MTUResult:
    """The MTU the whole mesh runs at: computed from the smallest underlay MTU of its clusters."""
    net = fleet.spec.network
    return calculate(
        min(c.underlay_mtu for c in fleet.spec.clusters),
        routing=net.routing,
        tunnel_protocol=net.tunnel_protocol,
        encryption=net.encryption,
        ipv6_underlay=net.ipv6_underlay,
        ipsec_key_size=net.ipsec_key_size,
    )


def _families(cluster: ClusterSpec) -> tuple[bool, bool]:
    return cluster.ip_family is not IPFamily.IPV6, cluster.ip_family is not IPFamily.IPV4


def _spec_v4(cluster: ClusterSpec, key: str, value: str | None) -> IPv4Network | None:
    if value is None:
        return None
    net = ipaddress.ip_network(value)
    if not isinstance(net, IPv4Network):
        raise PlanError(
            f"cluster {cluster.name}: {key} {net} is IPv6; {key} holds the IPv4 CIDR "
            "(IPv6 CIDRs are allocated from the V6 supernets and kept in the lock)"
        )
    if not _families(cluster)[0]:
        raise PlanError(f"cluster {cluster.name} has ipFamily ipv6 but sets {key} {net}; remove {key}")
    return net


def _reconcile(
    name: str,
    key: str,
    from_spec: Network | None,
    from_lock: Network | None,
    warnings: list[str],
) -> Network | None:
    if from_spec is not None and from_lock is not None and from_spec != from_lock:
        warnings.append(
            f"cluster {name}: {key} {from_spec} from the spec replaces {from_lock} from the lock; "
            "its workloads must be re-addressed"
        )
    return from_spec if from_spec is not None else from_lock


def _released(entry: LockedCluster) -> str:
    parts = [f"cluster ID {entry.cluster_id}"] if entry.cluster_id is not None else []
    parts += [str(n) for n in entry.networks]
    held = ", ".join(parts) if parts else "nothing"
    return f"cluster {entry.name} is no longer in the spec: released {held} (not reused before the next plan)"


def plan(fleet: Fleet, lock: Lock | None = None) -> NetworkPlan:
    """Plan IDs, CIDRs, MTU and capacity for ``fleet``, keeping everything recorded in ``lock``.

    Raises ``PlanError`` when no plan satisfies the spec; the message says why in numbers.
    """
    spec = fleet.spec
    net = spec.network
    lock = lock or Lock()
    warnings: list[str] = []
    names = {c.name for c in spec.clusters}

    released = [entry for entry in lock.clusters if entry.name not in names]
    warnings.extend(_released(entry) for entry in released)
    reserved: list[Network] = [n for entry in released for n in entry.networks]

    locked_ids = {
        c.name: entry.cluster_id
        for c in spec.clusters
        if (entry := lock.get(c.name)) is not None and entry.cluster_id is not None
    }
    ids: dict[str, int | None]
    if net.mesh in (Mesh.CILIUM, Mesh.BOTH):
        assignment = assign_cluster_ids(
            [IDRequest(c.name, c.cluster_id) for c in spec.clusters],
            locked=locked_ids,
            max_connected_clusters=net.max_connected_clusters,
            released=[e.cluster_id for e in released if e.cluster_id is not None],
        )
        ids = dict(assignment.ids)
        warnings.extend(assignment.warnings)
    else:  # Istio alone needs no Cilium cluster IDs; keep any the spec or lock already has
        ids = {c.name: c.cluster_id if c.cluster_id is not None else locked_ids.get(c.name) for c in spec.clusters}

    requests: list[AddressRequest] = []
    for c in spec.clusters:
        entry = lock.get(c.name) or LockedCluster(c.name)
        ipv4, ipv6 = _families(c)
        pod = _reconcile(c.name, "podCIDR", _spec_v4(c, "podCIDR", c.pod_cidr), entry.pod_cidr, warnings)
        svc = _reconcile(
            c.name, "serviceCIDR", _spec_v4(c, "serviceCIDR", c.service_cidr), entry.service_cidr, warnings
        )
        pod6, svc6 = entry.pod_cidr_v6, entry.service_cidr_v6
        if not ipv4 and (pod or svc):
            warnings.append(f"cluster {c.name} is now IPv6-only: released its IPv4 CIDRs from the lock")
            reserved += [n for n in (pod, svc) if n is not None]
            pod = svc = None
        if not ipv6 and (pod6 or svc6):
            warnings.append(f"cluster {c.name} is now IPv4-only: released its IPv6 CIDRs from the lock")
            reserved += [n for n in (pod6, svc6) if n is not None]
            pod6 = svc6 = None
        assert (pod is None or isinstance(pod, IPv4Network)) and (svc is None or isinstance(svc, IPv4Network))
        requests.append(
            AddressRequest(
                name=c.name,
                nodes=c.node_count,
                max_pods_per_node=c.max_pods_per_node,
                ipv4=ipv4,
                ipv6=ipv6,
                node_cidr=None if c.node_cidr is None else ipaddress.ip_network(c.node_cidr),
                pod_cidr=pod,
                service_cidr=svc,
                pod_cidr_v6=pod6,
                service_cidr_v6=svc6,
            )
        )
    addresses = allocate(requests, net, reserved=reserved)

    mtu = mesh_mtu(fleet)
    underlays = sorted({c.underlay_mtu for c in spec.clusters})
    if len(underlays) > 1:
        lowest = [c.name for c in spec.clusters if c.underlay_mtu == mtu.underlay_mtu]
        warnings.append(
            f"underlay MTUs differ ({', '.join(map(str, underlays))}): the mesh runs at the smallest, "
            f"{mtu.underlay_mtu} (from {', '.join(lowest[:3])}{' ...' if len(lowest) > 3 else ''}), "
            f"so pods get a route MTU of {mtu.route_mtu}"
        )
    if mtu.route_mtu < IPV6_MIN_MTU and any(_families(c)[1] for c in spec.clusters):
        warnings.append(
            f"route MTU {mtu.route_mtu} is below IPv6's minimum of {IPV6_MIN_MTU}: IPv6 pod traffic will "
            "break; raise the underlay MTU, use native routing or drop encryption"
        )

    clusters: list[ClusterPlan] = []
    locked: list[LockedCluster] = []
    for c in spec.clusters:
        got = addresses[c.name]
        cap = _capacity(c, got.pod_cidr, got.pod_cidr_v6, net)
        warnings.extend(cap.warnings)
        clusters.append(
            ClusterPlan(
                name=c.name,
                region=c.region,
                cluster_id=ids[c.name],
                ip_family=c.ip_family,
                pod_cidr=got.pod_cidr,
                service_cidr=got.service_cidr,
                pod_cidr_v6=got.pod_cidr_v6,
                service_cidr_v6=got.service_cidr_v6,
                node_cidr=None if c.node_cidr is None else ipaddress.ip_network(c.node_cidr),
                pod_mask_size=net.pod_mask_size,
                pod_mask_size_v6=net.pod_mask_size_v6,
                nodes=c.node_count,
                max_pods_per_node=c.max_pods_per_node,
                underlay_mtu=c.underlay_mtu,
                mtu=mtu,
                capacity=cap,
            )
        )
        locked.append(
            LockedCluster(c.name, ids[c.name], got.pod_cidr, got.service_cidr, got.pod_cidr_v6, got.service_cidr_v6)
        )
    return NetworkPlan(
        fleet=fleet.metadata.name,
        clusters=tuple(clusters),
        mesh_mtu=mtu,
        network=NetworkSummary.from_spec(net),
        warnings=tuple(warnings),
        lock=Lock(clusters=tuple(locked)),
    )


def _capacity(c: ClusterSpec, pod: IPv4Network | None, pod6: IPv6Network | None, net: NetworkSpec) -> Capacity:
    """Capacity of the constraining family (the one with fewer per-node blocks; IPv4 on a tie)."""
    options: Sequence[tuple[IPv4Network | IPv6Network | None, int]] = (
        (pod, net.pod_mask_size),
        (pod6, net.pod_mask_size_v6),
    )
    results = [
        capacity(
            c.name,
            cidr,
            mask_size=mask,
            nodes=c.node_count,
            max_pods_per_node=c.max_pods_per_node,
            headroom=net.headroom,
            warn_below_free=net.warn_below_free,
        )
        for cidr, mask in options
        if cidr is not None
    ]
    return min(results, key=lambda r: r.node_blocks_total)
