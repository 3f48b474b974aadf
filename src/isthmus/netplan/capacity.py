"""Pod capacity of a cluster's pod CIDR: how full it is and how many nodes it can still add.

Owns: the arithmetic from (pod CIDR, per-node mask, nodes, max pods per node) to totals, and the
low-space warnings. Pod capacity counts schedulable pods: every per-node block serves one node,
which runs at most ``maxPodsPerNode`` pods. Must not: allocate or read anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from .addressing import blocks_needed

__all__ = ["Capacity", "capacity"]


@dataclass(frozen=True)
class Capacity:
    """How much of one pod CIDR is spoken for. ``family`` is 4 or 6 (the CIDR it was computed from)."""

    family: int
    pod_addresses_total: int
    pod_addresses_used: int
    node_blocks_total: int
    node_blocks_used: int
    warnings: tuple[str, ...] = ()

    @property
    def pod_addresses_free(self) -> int:
        return self.pod_addresses_total - self.pod_addresses_used

    @property
    def nodes_addable(self) -> int:
        return max(0, self.node_blocks_total - self.node_blocks_used)

    @property
    def free_fraction(self) -> float:
        if self.node_blocks_total == 0:
            return 0.0
        return self.nodes_addable / self.node_blocks_total

    def to_dict(self) -> dict[str, object]:
        return {
            "family": f"ipv{self.family}",
            "podAddressesTotal": self.pod_addresses_total,
            "podAddressesUsed": self.pod_addresses_used,
            "podAddressesFree": self.pod_addresses_free,
            "nodeBlocksTotal": self.node_blocks_total,
            "nodeBlocksUsed": self.node_blocks_used,
            "nodesAddable": self.nodes_addable,
            "freeFraction": round(self.free_fraction, 4),
        }


def capacity(
    name: str,
    pod_cidr: IPv4Network | IPv6Network,
    *,
    mask_size: int,
    nodes: int,
    max_pods_per_node: int,
    headroom: float,
    warn_below_free: float,
) -> Capacity:
    """Capacity of ``pod_cidr`` cut into ``/mask_size`` per-node blocks, with warnings for ``name``."""
    blocks = 1 << (mask_size - pod_cidr.prefixlen) if pod_cidr.prefixlen <= mask_size else 0
    warnings: list[str] = []
    free = max(0, blocks - nodes)
    fraction = free / blocks if blocks else 0.0
    if fraction < warn_below_free:
        warnings.append(
            f"cluster {name}: only {fraction:.0%} of pod space is free, below warnBelowFree "
            f"{warn_below_free:.0%} ({free} of {blocks} per-node /{mask_size} blocks left in {pod_cidr})"
        )
    wanted = blocks_needed(nodes, headroom)
    if blocks < wanted:
        warnings.append(
            f"cluster {name}: pod CIDR {pod_cidr} holds {blocks} nodes, fewer than {nodes} nodes x "
            f"headroom {headroom} = {wanted}"
        )
    return Capacity(
        family=pod_cidr.version,
        pod_addresses_total=blocks * max_pods_per_node,
        pod_addresses_used=nodes * max_pods_per_node,
        node_blocks_total=blocks,
        node_blocks_used=nodes,
        warnings=tuple(warnings),
    )
