"""The lab pod network on paper: names, addresses and MTUs, as pure functions of the specs.

Owns: the lab-unique prefix of every network namespace and interface (from the state folder, so
parallel labs never clash), the names of the underlay, cluster and pod namespaces and of their
interfaces (Linux caps an interface name at 15 characters), the node/gateway/pod/DNS addresses,
the split of a pod CIDR between kwok's fake pods (first half) and real pods (second half), the
VXLAN parameters, what this kernel cannot do (and so what falls back to what), and the
``resolv.conf`` a pod gets. Must not: run ``ip`` or touch the kernel; :mod:`.podnet` does that.

Topology (one lab)::

    underlay netns  <p>-underlay      <p>u<i>: first host of cluster i's node CIDR
        | veth, MTU = underlayMTU of cluster i
    cluster netns   <p>-node-<c>      <p>n<i>: node IP (second host of the node CIDR)
                                      <p>br: bridge, gateway = first host of the pod range
                                      <p>vx: VXLAN (tunnel mode), MTU derived by the kernel
                                      lo: the cluster DNS IP (service CIDR + 10)
        | veth <p>p<hash> -- eth0, MTU = the planned route MTU
    pod netns       <p>-pod-<c>-<key> eth0: the pod IP, default route via the gateway
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from ..spec.fleet import Encryption, Mesh, RoutingMode, TunnelProtocol
from .specs import LabClusterSpec

__all__ = [
    "IFNAMSIZ",
    "KERNEL_ENCRYPTIONS",
    "KERNEL_TUNNELS",
    "VXLAN_PORT",
    "VXLAN_VNI",
    "ClusterLayout",
    "NetworkLayout",
    "check_pod_key",
    "kwok_range",
    "lab_prefix",
    "layout",
    "pod_range",
    "resolv_conf",
]

#: Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
IFNAMSIZ = 15
#: The UDP port Cilium's VXLAN uses (the Linux default, 4789, is IANA's; Cilium and flannel use 8472).
VXLAN_PORT = 8472
VXLAN_VNI = 1
#: Tunnel protocols and encryption this machine's kernel offers: it has no geneve, wireguard or
#: netem modules, so the lab falls back to VXLAN and to no encryption (the plan's figures stand).
KERNEL_TUNNELS = frozenset({TunnelProtocol.VXLAN})
KERNEL_ENCRYPTIONS = frozenset({Encryption.NONE})

_KEY = re.compile(r"^[a-z0-9]{1,40}$")


def lab_prefix(state_dir: str) -> str:
    """``i`` and 6 hex digits of the SHA-256 of the (resolved) state folder: unique per lab."""
    return "i" + hashlib.sha256(state_dir.encode()).hexdigest()[:6]


def pod_range(pod_net: IPv4Network) -> IPv4Network:
    """The second half of a pod CIDR: the real pods' addresses (the runtime allocates them)."""
    return _halves(pod_net)[1]


def kwok_range(pod_net: IPv4Network) -> IPv4Network:
    """The first half of a pod CIDR: kwok's pool for fake pods."""
    return _halves(pod_net)[0]


def _halves(pod_net: IPv4Network) -> tuple[IPv4Network, IPv4Network]:
    if pod_net.prefixlen > 28:
        raise ValueError(f"pod CIDR {pod_net} is too small to split between kwok and real pods: use /28 or larger")
    low, high = pod_net.subnets(prefixlen_diff=1)
    return low, high


def resolv_conf(dns_ip: IPv4Address, namespace: str) -> str:
    """A pod's ``/etc/resolv.conf``, as the kubelet writes it for ``dnsPolicy: ClusterFirst``."""
    return (f"nameserver {dns_ip}\n"
            f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            "options ndots:5\n")


def check_pod_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"pod key {key!r} must be 1-40 lowercase letters and digits (e.g. a pod UID prefix"
                         " without dashes)")
    return key


@dataclass(frozen=True)
class ClusterLayout:
    """One cluster's namespace, interfaces and addresses."""

    name: str
    index: int
    netns: str
    underlay_if: str
    node_if: str
    bridge: str
    vxlan: str
    vxlan_mac: str
    node_net: IPv4Network
    underlay_ip: IPv4Address
    node_ip: IPv4Address
    pod_net: IPv4Network
    pod_range: IPv4Network
    gateway: IPv4Address
    dns_ip: IPv4Address
    underlay_mtu: int


@dataclass(frozen=True)
class NetworkLayout:
    """The whole lab network: its prefix, the underlay, the clusters and how they are joined.

    ``tunnel`` is the protocol really used (None in native mode); ``fallbacks`` say, one line each,
    what the Fleet asked for that this kernel cannot do.
    """

    prefix: str
    underlay_netns: str
    clusters: tuple[ClusterLayout, ...]
    routing: RoutingMode
    tunnel: TunnelProtocol | None
    encryption: Encryption
    mesh: Mesh
    route_mtu: int
    fallbacks: tuple[str, ...]

    def cluster(self, name: str) -> ClusterLayout:
        for c in self.clusters:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.clusters)
        raise KeyError(f"the lab network has no cluster {name!r} (clusters: {known})")

    def pod_netns(self, cluster: str, key: str) -> str:
        return f"{self.prefix}-pod-{self.cluster(cluster).name}-{check_pod_key(key)}"

    def pod_host_if(self, cluster: str, key: str) -> str:
        """The pod veth's end in the cluster namespace: prefix, ``p``, 7 hex digits of a hash."""
        digest = hashlib.sha256(f"{cluster}/{check_pod_key(key)}".encode()).hexdigest()
        return f"{self.prefix}p{digest[:IFNAMSIZ - len(self.prefix) - 1]}"

    def all_netns_prefix(self) -> str:
        """Every namespace of this lab starts with this (used to find leftovers)."""
        return f"{self.prefix}-"


def layout(prefix: str, specs: Sequence[LabClusterSpec]) -> NetworkLayout:
    """The network for ``specs`` (already through :func:`~.specs.complete_network`)."""
    if not specs:
        raise ValueError("a lab network needs at least one cluster")
    first = specs[0]
    if first.route_mtu is None:
        raise ValueError("the specs have no route_mtu yet: pass them through complete_network()")
    fallbacks = []
    tunnel: TunnelProtocol | None = None
    if first.routing is RoutingMode.TUNNEL:
        tunnel = first.tunnel_protocol
        if tunnel not in KERNEL_TUNNELS:
            fallbacks.append(f"tunnel {tunnel.value} -> vxlan: this kernel has no {tunnel.value} module")
            tunnel = TunnelProtocol.VXLAN
    encryption = first.encryption
    if encryption not in KERNEL_ENCRYPTIONS:
        fallbacks.append(f"encryption {encryption.value} -> none: this kernel has no {encryption.value} module"
                         f" (pods keep the planned route MTU {first.route_mtu})")
        encryption = Encryption.NONE
    clusters = []
    for index, spec in enumerate(specs, start=1):
        node_net = spec.node_network
        pods = pod_range(spec.pod_network)
        digest = hashlib.sha256(f"{prefix}/{spec.name}".encode()).digest()
        mac = "02:" + ":".join(f"{b:02x}" for b in digest[:5])
        clusters.append(ClusterLayout(
            name=spec.name, index=index, netns=f"{prefix}-node-{spec.name}",
            underlay_if=f"{prefix}u{index}", node_if=f"{prefix}n{index}", bridge=f"{prefix}br",
            vxlan=f"{prefix}vx", vxlan_mac=mac, node_net=node_net, underlay_ip=node_net.network_address + 1,
            node_ip=node_net.network_address + 2, pod_net=spec.pod_network, pod_range=pods,
            gateway=pods.network_address + 1, dns_ip=spec.dns_service_ip, underlay_mtu=spec.underlay_mtu,
        ))
    for c in clusters:
        for name in (c.underlay_if, c.node_if, c.bridge, c.vxlan):
            assert len(name) <= IFNAMSIZ, name
    return NetworkLayout(prefix=prefix, underlay_netns=f"{prefix}-underlay", clusters=tuple(clusters),
                         routing=first.routing, tunnel=tunnel, encryption=encryption, mesh=first.mesh,
                         route_mtu=first.route_mtu, fallbacks=tuple(fallbacks))
