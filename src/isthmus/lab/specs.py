"""What one lab cluster looks like: name, region, zones with node counts, pod, service and node CIDRs.

Owns: :class:`LabClusterSpec` (validated once, in ``__post_init__``), :func:`default_specs`,
the names of the fake nodes, the pod network's settings (node CIDR, underlay MTU, route MTU,
routing, tunnel protocol, encryption, mesh; the lab-wide ones repeated in every cluster and
checked to agree), :func:`complete_network` (the defaults a spec leaves open) and the lab-wide
check that clusters do not overlap.
Must not: do any I/O; this module is pure so the lead can shape a lab from a Fleet spec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ..netplan import calculate_mtu
from ..spec.fleet import Encryption, Mesh, RoutingMode, TunnelProtocol

__all__ = [
    "MAX_DEFAULT_CLUSTERS",
    "LabClusterSpec",
    "LabNode",
    "check_lab_specs",
    "complete_network",
    "default_node_cidr",
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
    """One lab cluster. ``zones`` maps a zone name to how many fake nodes it has.

    The network fields: ``node_cidr`` is the subnet of the cluster's nodes on the lab's underlay
    (None: :func:`complete_network` picks one), ``underlay_mtu`` that underlay's MTU, ``route_mtu``
    the MTU pods get (None: computed as :mod:`isthmus.netplan` does). ``routing``,
    ``tunnel_protocol``, ``encryption`` and ``mesh`` are the Fleet's, the same in every cluster.
    """

    name: str
    region: str
    zones: Mapping[str, int]
    pod_cidr: str
    service_cidr: str
    node_cidr: str | None = None
    underlay_mtu: int = 1500
    route_mtu: int | None = None
    routing: RoutingMode = RoutingMode.TUNNEL
    tunnel_protocol: TunnelProtocol = TunnelProtocol.VXLAN
    encryption: Encryption = Encryption.NONE
    mesh: Mesh = Mesh.CILIUM
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
        if self.node_cidr is not None:
            node = _ipv4_net("node_cidr", self.name, self.node_cidr)
            if node.prefixlen > 30:
                raise ValueError(f"cluster {self.name!r}: node_cidr {node} must be /30 or larger")
            for what, other in (("pod_cidr", pod), ("service_cidr", svc)):
                if node.overlaps(other):
                    raise ValueError(f"cluster {self.name!r}: node_cidr {node} overlaps {what} {other}")
        if not 1280 <= self.underlay_mtu <= 9216:
            raise ValueError(f"cluster {self.name!r}: underlay_mtu {self.underlay_mtu} must be in 1280..9216")
        if self.route_mtu is not None and not 576 <= self.route_mtu <= self.underlay_mtu:
            raise ValueError(f"cluster {self.name!r}: route_mtu {self.route_mtu} must be in"
                             f" 576..underlay_mtu ({self.underlay_mtu})")
        for attr, kind in (("routing", RoutingMode), ("tunnel_protocol", TunnelProtocol),
                           ("encryption", Encryption), ("mesh", Mesh)):
            object.__setattr__(self, attr, kind(getattr(self, attr)))
        object.__setattr__(self, "_pod_net", pod)
        object.__setattr__(self, "_service_net", svc)

    def __hash__(self) -> int:
        zones = tuple(sorted(self.zones.items()))
        return hash((self.name, self.region, zones, self.pod_cidr, self.service_cidr, self.node_cidr,
                     self.underlay_mtu, self.route_mtu, self.routing, self.tunnel_protocol, self.encryption,
                     self.mesh))

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return self._pod_net

    @property
    def service_network(self) -> ipaddress.IPv4Network:
        return self._service_net

    @property
    def node_network(self) -> ipaddress.IPv4Network:
        """The node CIDR (only once :func:`complete_network` has filled it in)."""
        if self.node_cidr is None:
            raise ValueError(f"cluster {self.name!r} has no node_cidr yet: pass its specs through"
                             " complete_network()")
        return _ipv4_net("node_cidr", self.name, self.node_cidr)

    @property
    def dns_service_ip(self) -> ipaddress.IPv4Address:
        """The cluster DNS Service's IP: the tenth address of the service range, as kube-dns."""
        return self._service_net.network_address + 10

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
            "node_cidr": self.node_cidr,
            "underlay_mtu": self.underlay_mtu,
            "route_mtu": self.route_mtu,
            "routing": self.routing.value,
            "tunnel_protocol": self.tunnel_protocol.value,
            "encryption": self.encryption.value,
            "mesh": self.mesh.value,
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
            node_cidr=None if raw.get("node_cidr") is None else str(raw["node_cidr"]),
            underlay_mtu=int(str(raw.get("underlay_mtu", 1500))),
            route_mtu=None if raw.get("route_mtu") is None else int(str(raw["route_mtu"])),
            routing=RoutingMode(str(raw.get("routing", RoutingMode.TUNNEL.value))),
            tunnel_protocol=TunnelProtocol(str(raw.get("tunnel_protocol", TunnelProtocol.VXLAN.value))),
            encryption=Encryption(str(raw.get("encryption", Encryption.NONE.value))),
            mesh=Mesh(str(raw.get("mesh", Mesh.CILIUM.value))),
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
            node_cidr=default_node_cidr(i),
            route_mtu=calculate_mtu(1500).route_mtu,
        )
        for i in range(1, n + 1)
    )


def default_node_cidr(index: int) -> str:
    """The ``index``-th (from 1) default node CIDR: ``192.168.<index>.0/24``."""
    if not 1 <= index <= 255:
        raise ValueError(f"default node CIDRs exist for clusters 1..255, not {index}")
    return f"192.168.{index}.0/24"


def complete_network(specs: Sequence[LabClusterSpec]) -> tuple[LabClusterSpec, ...]:
    """``specs`` with what they leave open filled in: node CIDRs and the route MTU.

    A missing node CIDR becomes the first ``192.168.<i>.0/24`` that no cluster uses or overlaps;
    a missing route MTU is the mesh MTU :mod:`isthmus.netplan` computes (smallest underlay MTU,
    less the tunnel and encryption overheads), the same for every cluster.
    """
    if not specs:
        return ()
    first = specs[0]
    route = calculate_mtu(min(s.underlay_mtu for s in specs), routing=first.routing,
                          tunnel_protocol=first.tunnel_protocol, encryption=first.encryption).route_mtu
    taken = [s.node_network for s in specs if s.node_cidr is not None]
    taken += [n for s in specs for n in (s.pod_network, s.service_network)]
    candidates = (ipaddress.IPv4Network(default_node_cidr(i)) for i in range(1, 256))
    out = []
    for spec in specs:
        node_cidr = spec.node_cidr
        if node_cidr is None:
            net = next((c for c in candidates if not any(c.overlaps(t) for t in taken)), None)
            if net is None:
                raise ValueError(f"cluster {spec.name!r}: no free 192.168.x.0/24 node CIDR; set node_cidr")
            taken.append(net)
            node_cidr = str(net)
        out.append(replace(spec, node_cidr=node_cidr,
                           route_mtu=spec.route_mtu if spec.route_mtu is not None else route))
    return tuple(out)


def check_lab_specs(specs: Sequence[LabClusterSpec]) -> None:
    """A lab needs at least one cluster, unique names and no overlapping CIDRs across clusters."""
    if not specs:
        raise ValueError("a lab needs at least one cluster")
    seen: dict[str, LabClusterSpec] = {}
    first = specs[0]
    for spec in specs:
        for attr in ("routing", "tunnel_protocol", "encryption", "mesh", "route_mtu"):
            mine, theirs = getattr(spec, attr), getattr(first, attr)
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(f"{attr} of cluster {spec.name!r} is {getattr(spec, attr)!s} but"
                                 f" {getattr(first, attr)!s} in cluster {first.name!r}: the lab's network"
                                 f" needs one {attr} for all its clusters")
        if spec.name in seen:
            raise ValueError(f"cluster name {spec.name!r} is used twice")
        seen[spec.name] = spec
    nets = [(s.name, what, net) for s in specs
            for what, net in (("pod", s.pod_network), ("service", s.service_network))]
    nets += [(s.name, "node", s.node_network) for s in specs if s.node_cidr is not None]
    for i, (a_name, a_what, a_net) in enumerate(nets):
        for b_name, b_what, b_net in nets[i + 1 :]:
            if a_name != b_name and a_net.overlaps(b_net):
                raise ValueError(
                    f"{a_what} CIDR {a_net} of cluster {a_name!r} overlaps"
                    f" {b_what} CIDR {b_net} of cluster {b_name!r}"
                )
