"""What one lab cluster looks like: name, region, zones with node counts, pod and service CIDRs.

Owns: :class:`LabClusterSpec` (validated once, in ``__post_init__``), :func:`default_specs`,
the names of the fake nodes, and the lab-wide check that clusters do not overlap.
Must not: do any I/O; this module is pure so the lead can shape a lab from a Fleet spec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "MAX_DEFAULT_CLUSTERS",
    "LabClusterSpec",
    "LabNode",
    "check_lab_specs",
    "default_specs",
]

MAX_DEFAULT_CLUSTERS = 50
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_label(kind: str, value: str) -> None:
    if len(value) > 40 or not _DNS_LABEL.match(value):
        raise ValueError(f"{kind} {value!r} must be a lowercase DNS label of at most 40 characters")


@dataclass(frozen=True)
class LabNode:
    """One fake (kwok) node: its name and where it sits."""

    name: str
    region: str
    zone: str


@dataclass(frozen=True)
class LabClusterSpec:
    """One lab cluster. ``zones`` maps a zone name to how many fake nodes it has."""

    name: str
    region: str
    zones: Mapping[str, int]
    pod_cidr: str
    service_cidr: str
    _pod_net: ipaddress.IPv4Network = field(init=False, repr=False, compare=False)
    _service_net: ipaddress.IPv4Network = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_label("cluster name", self.name)
        _check_label("region", self.region)
        if not self.zones:
            raise ValueError(f"cluster {self.name!r} needs at least one zone")
        for zone, count in self.zones.items():
            _check_label("zone", zone)
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"zone {zone!r} of cluster {self.name!r} needs a node count >= 1,"
                                 f" got {count!r}")
        # Freeze the mapping so the dataclass is really immutable (and hashable by value).
        object.__setattr__(self, "zones", MappingProxyType(dict(self.zones)))
        pod = _ipv4_net("pod_cidr", self.name, self.pod_cidr)
        svc = _ipv4_net("service_cidr", self.name, self.service_cidr)
        if pod.overlaps(svc):
            raise ValueError(f"cluster {self.name!r}: pod_cidr {pod} overlaps service_cidr {svc}")
        if svc.prefixlen < 12 or svc.num_addresses < 4:
            raise ValueError(f"cluster {self.name!r}: service_cidr {svc} must be between /12 and /30")
        object.__setattr__(self, "_pod_net", pod)
        object.__setattr__(self, "_service_net", svc)

    def __hash__(self) -> int:
        zones = tuple(sorted(self.zones.items()))
        return hash((self.name, self.region, zones, self.pod_cidr, self.service_cidr))

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return self._pod_net

    @property
    def service_network(self) -> ipaddress.IPv4Network:
        return self._service_net

    @property
    def kubernetes_service_ip(self) -> ipaddress.IPv4Address:
        """The first IP of the service range: the in-cluster ``kubernetes`` Service."""
        return self._service_net.network_address + 1

    @property
    def context(self) -> str:
        """The kubeconfig context name of this cluster."""
        return f"lab-{self.name}"

    @property
    def nodes(self) -> tuple[LabNode, ...]:
        """Fake nodes in zone order: ``<cluster>-<zone>-<i>``, i from 1."""
        return tuple(
            LabNode(name=f"{self.name}-{zone}-{i}", region=self.region, zone=zone)
            for zone, count in self.zones.items()
            for i in range(1, count + 1)
        )

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "region": self.region,
            "zones": dict(self.zones),
            "pod_cidr": self.pod_cidr,
            "service_cidr": self.service_cidr,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> LabClusterSpec:
        zones = raw["zones"]
        if not isinstance(zones, Mapping):
            raise ValueError(f"zones must be a mapping, got {zones!r}")
        return cls(
            name=str(raw["name"]),
            region=str(raw["region"]),
            zones={str(k): int(v) for k, v in zones.items()},
            pod_cidr=str(raw["pod_cidr"]),
            service_cidr=str(raw["service_cidr"]),
        )


def _ipv4_net(what: str, cluster: str, value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"cluster {cluster!r}: {what} {value!r} is not a CIDR ({exc})") from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValueError(f"cluster {cluster!r}: {what} {value!r} must be IPv4")
    return net


def default_specs(n: int, *, nodes_per_zone: int = 2) -> tuple[LabClusterSpec, ...]:
    """``n`` clusters ``c1..cN`` in regions ``region-1..N``, zones ``region-<i>a/b``.

    Pod CIDRs are ``10.<i>.0.0/16`` (inside a ``10.0.0.0/8`` pod supernet, away from kwok's
    default ``10.0.0.0/24``) and service CIDRs are the i-th ``/20`` of ``172.16.0.0/12``
    (``172.16.16.0/20`` for c1): distinct and non-overlapping across the whole lab.
    """
    if not 1 <= n <= MAX_DEFAULT_CLUSTERS:
        raise ValueError(f"default_specs needs 1 <= n <= {MAX_DEFAULT_CLUSTERS}, got {n}")
    return tuple(
        LabClusterSpec(
            name=f"c{i}",
            region=f"region-{i}",
            zones={f"region-{i}a": nodes_per_zone, f"region-{i}b": nodes_per_zone},
            pod_cidr=f"10.{i}.0.0/16",
            service_cidr=f"172.{16 + (i * 16) // 256}.{(i * 16) % 256}.0/20",
        )
        for i in range(1, n + 1)
    )


def check_lab_specs(specs: Sequence[LabClusterSpec]) -> None:
    """A lab needs at least one cluster, unique names and no overlapping CIDRs across clusters."""
    if not specs:
        raise ValueError("a lab needs at least one cluster")
    seen: dict[str, LabClusterSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"cluster name {spec.name!r} is used twice")
        seen[spec.name] = spec
    nets = [(s.name, what, net) for s in specs
            for what, net in (("pod", s.pod_network), ("service", s.service_network))]
    for i, (a_name, a_what, a_net) in enumerate(nets):
        for b_name, b_what, b_net in nets[i + 1 :]:
            if a_name != b_name and a_net.overlaps(b_net):
                raise ValueError(
                    f"{a_what} CIDR {a_net} of cluster {a_name!r} overlaps"
                    f" {b_what} CIDR {b_net} of cluster {b_name!r}"
                )
