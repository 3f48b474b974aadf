"""Auditing a fleet whose CIDRs and IDs are already assigned: ``check(fleet) -> CheckReport``.

Owns: finding EVERY problem in an assigned fleet (not just the first), as ``Finding`` values with a
severity, a stable code and the clusters involved. Codes:

    errors    missing-cluster-id, duplicate-cluster-id, cluster-id-out-of-range, missing-pod-cidr,
              missing-service-cidr, wrong-family, cidr-overlap, avoid-overlap, pods-per-node,
              pod-cidr-too-small, supernet-overlap
    warnings  outside-supernet, mtu-mismatch, low-pod-space, unused-cidr

The spec has no IPv6 CIDR fields (they live in the lock), so IPv6 checks cover the per-node block
size only. Must not: allocate, fix anything or do I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ..spec.fleet import ClusterSpec, Fleet, IPFamily, Mesh
from .addressing import Claim, ClaimKind, Network, find_overlaps, usable_per_block
from .capacity import capacity
from .planning import mesh_mtu

__all__ = ["CheckReport", "Finding", "Severity", "check"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, a stable code, a message with the numbers, and the clusters involved."""

    severity: Severity
    code: str
    message: str
    clusters: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.code}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "clusters": list(self.clusters),
        }


@dataclass(frozen=True)
class CheckReport:
    """Every finding for one fleet; ``ok`` when none is an error."""

    fleet: str
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_dict(self) -> dict[str, object]:
        return {"fleet": self.fleet, "ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def _error(code: str, message: str, clusters: Iterable[str] = ()) -> Finding:
    return Finding(Severity.ERROR, code, message, tuple(dict.fromkeys(clusters)))


def _warning(code: str, message: str, clusters: Iterable[str] = ()) -> Finding:
    return Finding(Severity.WARNING, code, message, tuple(dict.fromkeys(clusters)))


def _check_ids(fleet: Fleet) -> list[Finding]:
    spec = fleet.spec
    if spec.network.mesh is Mesh.ISTIO:
        return []
    limit = spec.network.max_connected_clusters
    found: list[Finding] = []
    holders: dict[int, list[str]] = {}
    for c in spec.clusters:
        if c.cluster_id is None:
            found.append(_error("missing-cluster-id", f"cluster {c.name} has no clusterID", [c.name]))
            continue
        holders.setdefault(c.cluster_id, []).append(c.name)
        if not 1 <= c.cluster_id <= limit:
            found.append(
                _error(
                    "cluster-id-out-of-range",
                    f"cluster {c.name} has clusterID {c.cluster_id}, outside 1..{limit} "
                    f"(maxConnectedClusters: {limit}; ID 0 is reserved)",
                    [c.name],
                )
            )
    for cid, names in sorted(holders.items()):
        if len(names) > 1:
            found.append(_error("duplicate-cluster-id", f"clusterID {cid} is held by {', '.join(names)}", names))
    return found


def _parse(c: ClusterSpec, key: str, value: str | None, found: list[Finding]) -> Network | None:
    if value is None:
        return None
    net = ipaddress.ip_network(value)
    if key != "nodeCIDR" and net.version != 4:
        found.append(
            _error("wrong-family", f"cluster {c.name}: {key} {net} is IPv6; {key} holds the IPv4 CIDR", [c.name])
        )
        return None
    return net


def _check_addresses(fleet: Fleet) -> list[Finding]:
    net = fleet.spec.network
    found: list[Finding] = []
    pod_super = ipaddress.ip_network(net.pod_supernet)
    svc_super = ipaddress.ip_network(net.service_supernet)
    if pod_super == svc_super:
        found.append(_error("supernet-overlap", f"podSupernet and serviceSupernet are both {pod_super}"))
    claims = [Claim(ipaddress.ip_network(a), ClaimKind.AVOID) for a in net.avoid]
    for c in fleet.spec.clusters:
        has_v4 = c.ip_family is not IPFamily.IPV6
        node = _parse(c, "nodeCIDR", c.node_cidr, found)
        pod = _parse(c, "podCIDR", c.pod_cidr, found)
        svc = _parse(c, "serviceCIDR", c.service_cidr, found)
        if node is not None:
            claims.append(Claim(node, ClaimKind.NODE, c.name))
        for key, cidr, kind, supernet in (
            ("podCIDR", pod, ClaimKind.POD, pod_super),
            ("serviceCIDR", svc, ClaimKind.SERVICE, svc_super),
        ):
            code = "missing-pod-cidr" if kind is ClaimKind.POD else "missing-service-cidr"
            if cidr is None:
                if has_v4 and getattr(c, "pod_cidr" if kind is ClaimKind.POD else "service_cidr") is None:
                    found.append(_error(code, f"cluster {c.name} has no {key}", [c.name]))
                continue
            claims.append(Claim(cidr, kind, c.name))
            if not has_v4:
                found.append(
                    _warning("unused-cidr", f"cluster {c.name} is IPv6-only; its {key} {cidr} is unused", [c.name])
                )
            if not cidr.subnet_of(supernet):  # type: ignore[arg-type]  # both IPv4 here
                found.append(
                    _warning(
                        "outside-supernet",
                        f"cluster {c.name}'s {key} {cidr} lies outside the {kind.value} supernet {supernet}",
                        [c.name],
                    )
                )
        if pod is not None:
            found.extend(_check_pod_size(c, pod, fleet))
    for outer, inner in find_overlaps(claims):
        owners = [o for o in (outer.owner, inner.owner) if o is not None]
        code = "avoid-overlap" if ClaimKind.AVOID in (outer.kind, inner.kind) else "cidr-overlap"
        found.append(_error(code, f"{outer.describe()} overlaps {inner.describe()}", owners))
    return found


def _check_pod_size(c: ClusterSpec, pod: Network, fleet: Fleet) -> list[Finding]:
    net = fleet.spec.network
    mask = net.pod_mask_size
    blocks = 1 << (mask - pod.prefixlen) if pod.prefixlen <= mask else 0
    if blocks < max(1, c.node_count):
        return [
            _error(
                "pod-cidr-too-small",
                f"cluster {c.name}'s pod CIDR {pod} holds {blocks} per-node /{mask} blocks but the cluster "
                f"has {c.node_count} nodes",
                [c.name],
            )
        ]
    cap = capacity(
        c.name,
        pod,
        mask_size=mask,
        nodes=c.node_count,
        max_pods_per_node=c.max_pods_per_node,
        headroom=net.headroom,
        warn_below_free=net.warn_below_free,
    )
    return [_warning("low-pod-space", w, [c.name]) for w in cap.warnings]


def _check_pods_per_node(fleet: Fleet) -> list[Finding]:
    net = fleet.spec.network
    found: list[Finding] = []
    for c in fleet.spec.clusters:
        for ipv6, mask, key in (
            (False, net.pod_mask_size, "podMaskSize"),
            (True, net.pod_mask_size_v6, "podMaskSizeV6"),
        ):
            runs = c.ip_family is not (IPFamily.IPV4 if ipv6 else IPFamily.IPV6)
            usable = usable_per_block(mask, ipv6=ipv6)
            if runs and c.max_pods_per_node > usable:
                found.append(
                    _error(
                        "pods-per-node",
                        f"cluster {c.name} runs up to {c.max_pods_per_node} pods per node but a per-node "
                        f"/{mask} block ({key}) holds only {usable} pod addresses",
                        [c.name],
                    )
                )
    return found


def _check_mtu(fleet: Fleet) -> list[Finding]:
    clusters = fleet.spec.clusters
    underlays = sorted({c.underlay_mtu for c in clusters})
    if len(underlays) < 2:
        return []
    mtu = mesh_mtu(fleet)
    detail = ", ".join(f"{c.name} {c.underlay_mtu}" for c in clusters)
    return [
        _warning(
            "mtu-mismatch",
            f"underlay MTUs differ ({detail}): the mesh runs at {mtu.underlay_mtu}, so pods get a route "
            f"MTU of {mtu.route_mtu} everywhere",
            [c.name for c in clusters],
        )
    ]


def check(fleet: Fleet) -> CheckReport:
    """Every problem with an assigned fleet's IDs, CIDRs, per-node blocks and MTUs."""
    findings = [
        *_check_ids(fleet),
        *_check_addresses(fleet),
        *_check_pods_per_node(fleet),
        *_check_mtu(fleet),
    ]
    return CheckReport(fleet=fleet.metadata.name, findings=tuple(findings))
