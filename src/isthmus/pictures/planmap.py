"""A picture of a plan: each supernet with the clusters' blocks, the avoided ranges and free space.

Address space is drawn twice per supernet. The upper bar is schematic: every block is a box in
address order whose width grows with the log of its size, so a /24 next to a /12 is still visible
and labelled. The lower bar is to scale, so the reader sees how much of the supernet is taken.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from ..netplan import NetworkPlan

__all__ = ["Span", "draw", "segments"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FREE, AVOID, CLUSTER = "free", "avoid", "cluster"


@dataclass(frozen=True)
class Span:
    start: int
    end: int  # exclusive
    kind: str
    label: str

    @property
    def size(self) -> int:
        return self.end - self.start


def segments(supernet: Network, used: Sequence[tuple[Network, str, str]]) -> list[Span]:
    """Split ``supernet`` into used and free segments in address order (used ranges clipped to it)."""
    lo, hi = int(supernet.network_address), int(supernet.broadcast_address) + 1
    spans = sorted(
        (max(lo, int(n.network_address)), min(hi, int(n.broadcast_address) + 1), kind, label)
        for n, kind, label in used
        if n.version == supernet.version and n.overlaps(supernet)
    )
    out: list[Span] = []
    cursor = lo
    for start, end, kind, label in spans:
        start = max(start, cursor)
        if start >= end:
            continue
        if start > cursor:
            out.append(Span(cursor, start, FREE, ""))
        out.append(Span(start, end, kind, label))
        cursor = end
    if cursor < hi:
        out.append(Span(cursor, hi, FREE, ""))
    return out


def _prefix_text(size: int, version: int) -> str:
    bits = 32 if version == 4 else 128
    exact = size & (size - 1) == 0
    return f"/{bits - int(math.log2(size))}" if exact else f"{size:,} addrs"


def _draw_row(ax: Axes, y: float, supernet: Network, segs: list[Span], colours: dict[str, str]) -> None:
    total = sum(max(1.0, math.log2(s.size) - 6) for s in segs)
    x = 0.0
    for seg in segs:
        width = max(1.0, math.log2(seg.size) - 6) / total
        face = {FREE: "#ffffff", AVOID: "#d0d0d0"}.get(seg.kind, colours.get(seg.label.split("\n")[0], "#88a"))
        ax.add_patch(Rectangle((x, y), width, 0.5, facecolor=face, edgecolor="#333333", linewidth=0.8,
                               hatch="//" if seg.kind == AVOID else None))
        start = ipaddress.ip_address(seg.start)
        text = seg.label or "free"
        text += f"\n{start}{_prefix_text(seg.size, supernet.version)}" if seg.kind != FREE else (
            f"\n{_prefix_text(seg.size, supernet.version)}")
        if width > 0.035:
            ax.text(x + width / 2, y + 0.25, text, ha="center", va="center", fontsize=7,
                    rotation=0 if width > 0.09 else 90)
        x += width
    # To scale, underneath.
    lo = int(supernet.network_address)
    span = supernet.num_addresses
    ax.add_patch(Rectangle((0, y - 0.22), 1, 0.12, facecolor="#ffffff", edgecolor="#333333", linewidth=0.6))
    for seg in segs:
        if seg.kind == FREE:
            continue
        face = "#d0d0d0" if seg.kind == AVOID else colours.get(seg.label.split("\n")[0], "#88a")
        ax.add_patch(Rectangle(((seg.start - lo) / span, y - 0.22), max(seg.size / span, 0.002), 0.12,
                               facecolor=face, edgecolor="none"))
    used = sum(s.size for s in segs if s.kind != FREE)
    ax.text(0, y + 0.58, f"{supernet}  ({used / span:.1%} used)", fontsize=9, fontweight="bold")
    ax.text(1.0, y - 0.33, "to scale", fontsize=6, ha="right", color="#555555")


def draw(plan: NetworkPlan, path: Path) -> None:
    """Write a PNG of the plan's address map to ``path``."""
    palette = plt.get_cmap("tab10")
    colours = {c.name: matplotlib.colors.to_hex(palette(i % 10)) for i, c in enumerate(plan.clusters)}
    net = plan.network
    avoided: list[tuple[Network, str, str]] = [(a, AVOID, "avoided") for a in net.avoid]
    avoided += [(c.node_cidr, AVOID, f"nodes {c.name}") for c in plan.clusters if c.node_cidr is not None]
    rows: list[tuple[str, Network, list[tuple[Network, str, str]]]] = [
        ("pods", net.pod_supernet, [(c.pod_cidr, CLUSTER, c.name) for c in plan.clusters if c.pod_cidr]),
        ("services", net.service_supernet,
         [(c.service_cidr, CLUSTER, c.name) for c in plan.clusters if c.service_cidr]),
    ]
    if net.pod_supernet_v6 is not None:
        rows.append(("pods (IPv6)", net.pod_supernet_v6,
                     [(c.pod_cidr_v6, CLUSTER, c.name) for c in plan.clusters if c.pod_cidr_v6]))
    fig, ax = plt.subplots(figsize=(14, 1.2 + 1.3 * len(rows)))
    for i, (title, supernet, used) in enumerate(rows):
        y = (len(rows) - 1 - i) * 1.5
        _draw_row(ax, y, supernet, segments(supernet, used + avoided), colours)
        ax.text(-0.01, y + 0.25, title, ha="right", va="center", fontsize=10, fontweight="bold")
    ax.set_xlim(-0.09, 1.01)
    ax.set_ylim(-0.45, 1.5 * (len(rows) - 1) + 0.8)
    ax.axis("off")
    legend = [Rectangle((0, 0), 1, 1, facecolor=colours[c.name]) for c in plan.clusters]
    labels = [f"{c.name} (ID {c.cluster_id if c.cluster_id is not None else '-'}, {c.region})" for c in plan.clusters]
    legend += [Rectangle((0, 0), 1, 1, facecolor="#d0d0d0", hatch="//"), Rectangle((0, 0), 1, 1, facecolor="white",
                                                                                      edgecolor="#333")]
    labels += ["avoided / node ranges", "free"]
    ax.legend(legend, labels, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(6, len(labels)),
              fontsize=8, frameon=False)
    mtu = plan.mesh_mtu
    fig.suptitle(f"Fleet {plan.fleet}: address plan — mesh MTU {mtu.route_mtu} "
                 f"(underlay {mtu.underlay_mtu}), {net.routing.value}, encryption {net.encryption.value}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
