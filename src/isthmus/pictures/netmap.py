"""A picture of the connected fleet: clusters as boxes, the tunnels between them, the mesh peers.

Each cluster is a box (name, Cilium cluster ID, region, pod/service/node CIDRs) on a circle; every
pair of clusters is joined by a line labelled with what carries pod traffic between them (the
tunnel or native routing, the encryption) and the route MTU pods see; ClusterMesh peering is
drawn as a dashed arc from each cluster's clustermesh-apiserver. Presents the plan only.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from ..netplan import ClusterPlan, NetworkPlan
from ..spec.fleet import Encryption, Mesh, RoutingMode

__all__ = ["draw_network", "link_label"]


def link_label(plan: NetworkPlan) -> str:
    """What joins two clusters, e.g. ``"VXLAN + WireGuard, MTU 1330"``."""
    net = plan.network
    carrier = net.tunnel_protocol.value.upper() if net.routing is RoutingMode.TUNNEL else "native routing"
    if net.encryption is not Encryption.NONE:
        carrier += " + " + ("WireGuard" if net.encryption is Encryption.WIREGUARD else "IPsec")
    if net.mesh is Mesh.ISTIO:
        carrier = "Istio east-west gateway (15443)"
    return f"{carrier}, MTU {plan.mesh_mtu.route_mtu}"


def _box_text(c: ClusterPlan) -> str:
    lines = [c.name, f"ID {c.cluster_id}" if c.cluster_id is not None else "no Cilium ID", c.region]
    for label, value in (("pods", c.pod_cidr), ("pods v6", c.pod_cidr_v6), ("services", c.service_cidr),
                         ("services v6", c.service_cidr_v6), ("nodes", c.node_cidr)):
        if value is not None:
            lines.append(f"{label} {value}")
    return "\n".join(lines)


def draw_network(plan: NetworkPlan, path: Path, *, title: str | None = None) -> Path:
    """Draw ``plan``'s clusters and links into ``path`` (PNG, SVG or PDF by suffix); returns ``path``."""
    clusters = list(plan.clusters)
    count = len(clusters)
    radius = 0.0 if count == 1 else 3.2
    angle0 = math.pi / 2
    positions = {c.name: (radius * math.cos(angle0 + 2 * math.pi * i / count),
                          radius * math.sin(angle0 + 2 * math.pi * i / count)) for i, c in enumerate(clusters)}
    fig, ax = plt.subplots(figsize=(11, 9))
    try:
        label = link_label(plan)
        cilium = plan.network.mesh in (Mesh.CILIUM, Mesh.BOTH)
        for i, a in enumerate(clusters):
            for b in clusters[i + 1:]:
                (x1, y1), (x2, y2) = positions[a.name], positions[b.name]
                ax.plot([x1, x2], [y1, y2], color="#4477aa", linewidth=2, zorder=1)
                ax.text((x1 + x2) / 2, (y1 + y2) / 2, label, fontsize=7, ha="center", va="center", zorder=3,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#4477aa", "lw": 0.5})
                if cilium:
                    ax.annotate("", xy=(x2, y2), xytext=(x1, y1), zorder=0,
                                arrowprops={"arrowstyle": "<->", "linestyle": "--", "color": "#aa7744",
                                            "connectionstyle": "arc3,rad=0.25", "lw": 1})
        width, height = 2.6, 1.7
        for c in clusters:
            x, y = positions[c.name]
            ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, zorder=2,
                                        boxstyle="round,pad=0.1", fc="#eef3fa", ec="#223355", lw=1.5))
            ax.text(x, y, _box_text(c), ha="center", va="center", fontsize=8, zorder=4, family="monospace")
        legend = [f"fleet {plan.fleet}: {label}", f"mesh: {plan.network.mesh.value}"]
        if cilium:
            legend.append("dashed: ClusterMesh peering (clustermesh-apiserver, TLS from the shared cilium-ca)")
        ax.text(0, -radius - 1.9, "\n".join(legend), ha="center", va="top", fontsize=8)
        span = radius + 2.2
        ax.set_xlim(-span, span)
        ax.set_ylim(-span - 0.8, span)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title or f"Network of fleet {plan.fleet}")
        fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
