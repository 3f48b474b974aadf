"""What the firewalls between clusters must let through: every flow, per ordered pair of clusters.

Owns: the list of flows the chosen network mode needs between two clusters, as rules from one
cluster's addresses to another's, for ``isthmus explain firewall`` (``to_dict`` for ``-o json``,
``to_text`` for a cloud-neutral rule set). Pure data: it configures nothing and talks to no cloud.

What a firewall on the path sees depends on the mode:

* **Cilium, tunnel** — pod traffic (Cassandra included) travels inside VXLAN (8472/udp) or Geneve
  (6081/udp) between node addresses; the firewall never sees port 7000.
* **Cilium, native routing** — pod packets cross the underlay as they are, from pod CIDR to pod
  CIDR: Cassandra's 7000/7001 and the client port 9042 must be open between pod CIDRs.
* **WireGuard** — everything between nodes (encapsulated or not) is inside 51871/udp; the
  Cassandra flows disappear from the firewall's view.
* **IPsec** — pod traffic is ESP (IP protocol 50, no port). In tunnel mode the tunnel port stays
  listed: whether ESP rides inside or outside the tunnel depends on Cilium's
  ``encryptedOverlay`` setting, which Isthmus leaves at its default.
* Always with Cilium: health checks (4240/tcp and ICMP echo between nodes, and to the health
  endpoint in the pod CIDR when routing natively) and the ClusterMesh API server (2379/tcp on its
  load balancer, or NodePort 32379 on every node).
* **Istio** — each istiod watches its peers' API servers (the remote secrets: 6443/tcp here;
  use your API server's port). Across networks (``mesh: istio``) traffic enters a peer through
  its east-west gateway on 15443/tcp, and 15012/tcp (xDS and CA) plus 15017/tcp (webhooks) serve
  clusters that borrow a peer's control plane through that gateway.

Rules are node-CIDR to node-CIDR (``nodeCIDR`` of the Fleet); where a cluster has none, or the
destination is a load balancer, the address is written as a name to fill in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ..netplan import ClusterPlan, NetworkPlan
from ..spec.fleet import Encryption, Fleet, Mesh, RoutingMode, TunnelProtocol
from .cassandra_config import CQL_PORT, INTRA_NODE_PORT, TLS_INTRA_NODE_PORT
from .cilium import CLUSTERMESH_APISERVER_PORT, CLUSTERMESH_NODE_PORT, ApiServerExposure

__all__ = [
    "CILIUM_HEALTH_PORT",
    "GENEVE_PORT",
    "ISTIO_EASTWEST_PORT",
    "ISTIO_WEBHOOK_PORT",
    "ISTIO_XDS_PORT",
    "KUBE_APISERVER_PORT",
    "VXLAN_PORT",
    "WIREGUARD_PORT",
    "FirewallReport",
    "FirewallRule",
    "Protocol",
    "firewall_rules",
]

VXLAN_PORT: Final = 8472
GENEVE_PORT: Final = 6081
CILIUM_HEALTH_PORT: Final = 4240
WIREGUARD_PORT: Final = 51871
ISTIO_EASTWEST_PORT: Final = 15443
ISTIO_XDS_PORT: Final = 15012
ISTIO_WEBHOOK_PORT: Final = 15017
KUBE_APISERVER_PORT: Final = 6443
ICMP_ECHO_REQUEST: Final = 8


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ESP = "esp"  # IP protocol 50

    @property
    def ip_protocol(self) -> int:
        return {"tcp": 6, "udp": 17, "icmp": 1, "esp": 50}[self.value]


@dataclass(frozen=True)
class FirewallRule:
    """Allow ``protocol``/``port`` from ``source`` (in ``from_cluster``) to ``destination`` (in ``to_cluster``).

    ``port`` is None for ESP; for ICMP it holds the ICMP type. The rule must be allowed out of the
    source's network and into the destination's (``direction`` says which side initiates).
    """

    from_cluster: str
    to_cluster: str
    source: str
    destination: str
    protocol: Protocol
    port: int | None
    purpose: str
    component: str  # cilium | istio | cassandra

    @property
    def direction(self) -> str:
        return f"{self.from_cluster} -> {self.to_cluster}"

    def to_dict(self) -> dict[str, object]:
        return {"from": self.from_cluster, "to": self.to_cluster, "source": self.source,
                "destination": self.destination, "protocol": self.protocol.value,
                "ipProtocol": self.protocol.ip_protocol, "port": self.port, "direction": self.direction,
                "component": self.component, "purpose": self.purpose}

    def to_text(self) -> str:
        if self.protocol is Protocol.ICMP:
            what = f"icmp type {self.port}"
        elif self.port is None:
            what = f"{self.protocol.value} (ip proto {self.protocol.ip_protocol})"
        else:
            what = f"{self.protocol.value}/{self.port}"
        return f"allow {what:<12} from {self.source:<28} to {self.destination:<34} # {self.purpose}"


@dataclass(frozen=True)
class FirewallReport:
    """Every rule of every ordered pair of clusters, and the mode that produced them."""

    fleet: str
    routing: RoutingMode
    tunnel_protocol: TunnelProtocol
    encryption: Encryption
    mesh: Mesh
    apiserver_exposure: ApiServerExposure
    rules: tuple[FirewallRule, ...]

    def pair(self, from_cluster: str, to_cluster: str) -> tuple[FirewallRule, ...]:
        return tuple(r for r in self.rules if r.from_cluster == from_cluster and r.to_cluster == to_cluster)

    @property
    def mode(self) -> dict[str, str]:
        return {"routing": self.routing.value, "tunnelProtocol": self.tunnel_protocol.value,
                "encryption": self.encryption.value, "mesh": self.mesh.value,
                "clustermeshApiserver": self.apiserver_exposure.value}

    def to_dict(self) -> dict[str, object]:
        pairs: dict[tuple[str, str], list[dict[str, object]]] = {}
        for rule in self.rules:
            pairs.setdefault((rule.from_cluster, rule.to_cluster), []).append(rule.to_dict())
        return {"fleet": self.fleet, "mode": self.mode,
                "pairs": [{"from": a, "to": b, "rules": rules} for (a, b), rules in pairs.items()]}

    def to_text(self) -> str:
        """A cloud-neutral rule set, one block per ordered pair of clusters."""
        mode = ", ".join(f"{k} {v}" for k, v in self.mode.items())
        lines = [f"# fleet {self.fleet}: {mode}"]
        current: tuple[str, str] | None = None
        for rule in self.rules:
            if (rule.from_cluster, rule.to_cluster) != current:
                current = (rule.from_cluster, rule.to_cluster)
                lines += ["", f"[{rule.from_cluster} -> {rule.to_cluster}]"]
            lines.append(rule.to_text())
        return "\n".join(lines) + "\n"


def _nodes(cluster: ClusterPlan) -> str:
    return str(cluster.node_cidr) if cluster.node_cidr is not None else f"<nodes of {cluster.name}>"


def _pods(cluster: ClusterPlan) -> list[str]:
    cidrs = [str(c) for c in (cluster.pod_cidr, cluster.pod_cidr_v6) if c is not None]
    return cidrs or [f"<pods of {cluster.name}>"]


def _pair_rules(src: ClusterPlan, dst: ClusterPlan, plan: NetworkPlan,
                exposure: ApiServerExposure) -> list[FirewallRule]:
    net = plan.network
    rules: list[FirewallRule] = []

    def add(source: str, destination: str, protocol: Protocol, port: int | None, purpose: str,
            component: str) -> None:
        rules.append(FirewallRule(src.name, dst.name, source, destination, protocol, port, purpose, component))

    s_nodes, d_nodes = _nodes(src), _nodes(dst)
    cilium = net.mesh in (Mesh.CILIUM, Mesh.BOTH)
    if cilium:
        native = net.routing is RoutingMode.NATIVE
        if not native:
            port = VXLAN_PORT if net.tunnel_protocol is TunnelProtocol.VXLAN else GENEVE_PORT
            add(s_nodes, d_nodes, Protocol.UDP, port,
                f"{net.tunnel_protocol.value.upper()} tunnel: pod-to-pod traffic between nodes", "cilium")
        if net.encryption is Encryption.WIREGUARD:
            add(s_nodes, d_nodes, Protocol.UDP, WIREGUARD_PORT, "WireGuard: encrypted traffic between nodes", "cilium")
        elif net.encryption is Encryption.IPSEC:
            add(s_nodes, d_nodes, Protocol.ESP, None, "IPsec ESP: encrypted pod traffic between nodes", "cilium")
        add(s_nodes, d_nodes, Protocol.TCP, CILIUM_HEALTH_PORT, "cilium-health: node reachability", "cilium")
        add(s_nodes, d_nodes, Protocol.ICMP, ICMP_ECHO_REQUEST, "cilium-health: ICMP echo between nodes", "cilium")
        if exposure is ApiServerExposure.NODE_PORT:
            add(s_nodes, d_nodes, Protocol.TCP, CLUSTERMESH_NODE_PORT,
                "ClusterMesh: agents read the peer's clustermesh-apiserver (NodePort)", "cilium")
        else:
            add(s_nodes, f"<clustermesh-apiserver LB of {dst.name}>", Protocol.TCP, CLUSTERMESH_APISERVER_PORT,
                "ClusterMesh: agents read the peer's clustermesh-apiserver (load balancer)", "cilium")
        if native:
            for d_pods in _pods(dst):
                add(s_nodes, d_pods, Protocol.TCP, CILIUM_HEALTH_PORT, "cilium-health: the peer's health endpoint",
                    "cilium")
            if net.encryption is Encryption.NONE:
                for s_pods in _pods(src):
                    for d_pods in _pods(dst):
                        add(s_pods, d_pods, Protocol.TCP, INTRA_NODE_PORT, "Cassandra inter-node (gossip, "
                            "streaming)", "cassandra")
                        add(s_pods, d_pods, Protocol.TCP, TLS_INTRA_NODE_PORT, "Cassandra inter-node over TLS",
                            "cassandra")
                        add(s_pods, d_pods, Protocol.TCP, CQL_PORT, "CQL clients failing over to a remote "
                            "datacenter", "cassandra")
    if net.mesh in (Mesh.ISTIO, Mesh.BOTH):
        add(s_nodes, f"<API server of {dst.name}>", Protocol.TCP, KUBE_APISERVER_PORT,
            "istiod watches the peer's services and endpoints (remote secret)", "istio")
    if net.mesh is Mesh.ISTIO:
        gateway = f"<east-west gateway of {dst.name}>"
        add(s_nodes, gateway, Protocol.TCP, ISTIO_EASTWEST_PORT,
            "Istio east-west gateway: cross-network mTLS (AUTO_PASSTHROUGH)", "istio")
        add(s_nodes, gateway, Protocol.TCP, ISTIO_XDS_PORT, "istiod xDS and CA through the gateway", "istio")
        add(s_nodes, gateway, Protocol.TCP, ISTIO_WEBHOOK_PORT, "istiod webhooks through the gateway", "istio")
    return rules


def firewall_rules(plan: NetworkPlan, fleet: Fleet, *,
                   apiserver_exposure: ApiServerExposure = ApiServerExposure.LOAD_BALANCER) -> FirewallReport:
    """Every flow between every ordered pair of the plan's clusters, in spec order."""
    net = plan.network
    order = {c.name: i for i, c in enumerate(fleet.spec.clusters)}
    clusters = sorted(plan.clusters, key=lambda c: order.get(c.name, len(order)))
    rules: list[FirewallRule] = []
    for src in clusters:
        for dst in clusters:
            if src.name != dst.name:
                rules += _pair_rules(src, dst, plan, apiserver_exposure)
    return FirewallReport(fleet=plan.fleet, routing=net.routing, tunnel_protocol=net.tunnel_protocol,
                          encryption=net.encryption, mesh=net.mesh, apiserver_exposure=apiserver_exposure,
                          rules=tuple(rules))
