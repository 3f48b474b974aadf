"""Address allocation: pod and service CIDRs carved from the supernets, disjoint from everything.

Owns: how big a cluster's pod CIDR must be, the free-space structure the CIDRs are carved from, and
the overlap rules between pod, service, node and avoided ranges. Must not: choose cluster IDs, read
or write the lock (the planner passes fixed CIDRs in) or do any I/O.

Sizing: a cluster needs ``ceil(nodes x headroom)`` per-node blocks of ``/podMaskSize`` (Cilium's
clusterPoolIPv4MaskSize), rounded up to a power of two, so its pod CIDR is an aligned
``/(podMaskSize - log2(blocks))``. IPv6 uses ``podMaskSizeV6`` with the same block count.

Free space is a buddy-style free list: the supernet minus every taken range is cut into maximal
aligned blocks kept in one min-heap per prefix length. An allocation takes the smallest sufficient
block (best fit; lowest address on ties), returns the unused buddies to their heaps, and costs
O(prefix lengths + log n) — planning stays near-linear in the number of clusters.

Fixed CIDRs (from the spec or the lock) never move. A fixed CIDR outside its supernet is allowed —
clusters adopted from elsewhere keep what they have — but like every fixed CIDR it must not overlap
any other pod, service or node CIDR nor an avoided range.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network

from ..spec.fleet import NetworkSpec
from .errors import PlanError

__all__ = [
    "RESERVED_PER_BLOCK_V4",
    "RESERVED_PER_BLOCK_V6",
    "AddressRequest",
    "Addresses",
    "Claim",
    "ClaimKind",
    "FreeList",
    "Network",
    "allocate",
    "blocks_needed",
    "find_overlaps",
    "pod_prefix_for",
    "span",
    "usable_per_block",
]

Network = IPv4Network | IPv6Network

# Addresses of a per-node IPv4 block that pods cannot use:
#   network address 1 + broadcast address 1 + cilium_host router IP 1 + cilium-health endpoint 1 = 4
RESERVED_PER_BLOCK_V4 = 1 + 1 + 1 + 1
# IPv6 has no broadcast: subnet-router anycast 1 + cilium_host router IP 1 + cilium-health 1 = 3
RESERVED_PER_BLOCK_V6 = 1 + 1 + 1


def usable_per_block(mask_size: int, *, ipv6: bool = False) -> int:
    """Pod addresses in one per-node block of ``/mask_size``."""
    bits = 128 if ipv6 else 32
    reserved = RESERVED_PER_BLOCK_V6 if ipv6 else RESERVED_PER_BLOCK_V4
    return max(0, (1 << (bits - mask_size)) - reserved)


def blocks_needed(nodes: int, headroom: float) -> int:
    """``ceil(nodes x headroom)`` per-node blocks (at least one), computed exactly: 60 x 1.1 is 66."""
    return max(1, math.ceil(Decimal(nodes) * Decimal(str(headroom))))


def pod_prefix_for(blocks: int, mask_size: int) -> int:
    """Prefix length of a CIDR holding ``blocks`` per-node blocks, rounded up to a power of two."""
    return mask_size - (blocks - 1).bit_length()


class ClaimKind(StrEnum):
    POD = "pod"
    SERVICE = "service"
    NODE = "node"
    AVOID = "avoid"
    RESERVED = "reserved"


@dataclass(frozen=True)
class Claim:
    """A range somebody holds: ``owner`` is a cluster name (None for avoided/reserved ranges)."""

    network: Network
    kind: ClaimKind
    owner: str | None = None

    def describe(self) -> str:
        if self.owner is None:
            what = "avoided" if self.kind is ClaimKind.AVOID else "reserved"
            return f"{what} range {self.network}"
        return f"{self.owner}'s {self.kind.value} CIDR {self.network}"


def _allowed(a: Claim, b: Claim) -> bool:
    """Overlaps that are fine: avoided/reserved ranges among themselves and around node subnets."""
    soft = {ClaimKind.AVOID, ClaimKind.RESERVED}
    kinds = (a.kind, b.kind)
    if a.kind in soft and b.kind in soft:
        return True
    return ClaimKind.NODE in kinds and (a.kind in soft or b.kind in soft)


def span(network: Network) -> tuple[int, int]:
    """First and last address of ``network`` as ints (cheaper than ipaddress's cached properties)."""
    start = int(network.network_address)
    return start, start + (1 << (network.max_prefixlen - network.prefixlen)) - 1


def find_overlaps(claims: Sequence[Claim]) -> list[tuple[Claim, Claim]]:
    """Every overlapping pair that breaks the rules, in address order; O(n log n + overlaps).

    CIDRs either nest or are disjoint, so a sweep in address order keeps a chain of enclosing
    ranges: everything still on the stack when a range starts contains it.
    """
    found: list[tuple[Claim, Claim]] = []
    for version in (4, 6):
        items = [
            (*span(c.network), c.network.prefixlen, index, c)
            for index, c in enumerate(claims)
            if c.network.version == version
        ]
        items.sort(key=lambda item: (item[0], item[2], item[3]))  # by start, enclosing ranges first
        stack: list[tuple[int, Claim]] = []
        for start, end, _, _, claim in items:
            while stack and stack[-1][0] < start:
                stack.pop()
            for _, outer in stack:
                if not _allowed(outer, claim):
                    found.append((outer, claim))
            stack.append((end, claim))
    return found


class FreeList:
    """The free part of one supernet as maximal aligned blocks, one min-heap per prefix length."""

    def __init__(self, supernet: Network, taken: Iterable[Network | tuple[int, int]] = ()) -> None:
        """``taken`` holds networks or ``(first, last)`` int spans; other families are ignored."""
        self.supernet = supernet
        self._bits = supernet.max_prefixlen
        self._heaps: list[list[int]] = [[] for _ in range(self._bits + 1)]
        lo, hi = span(supernet)
        spans = sorted(
            (max(lo, start), min(hi, end))
            for start, end in (
                t if isinstance(t, tuple) else span(t)
                for t in taken
                if isinstance(t, tuple) or t.version == supernet.version
            )
            if start <= hi and end >= lo
        )
        cursor = lo
        for start, end in spans:
            if start > cursor:
                self._add_range(cursor, start - 1)
            cursor = max(cursor, end + 1)
        if cursor <= hi:
            self._add_range(cursor, hi)
        for heap in self._heaps:
            heapq.heapify(heap)

    def _add_range(self, start: int, end: int) -> None:
        """Cut [start, end] into maximal aligned blocks (the minimal CIDR cover)."""
        while start <= end:
            size = start & -start if start else 1 << self._bits
            while size > end - start + 1:
                size >>= 1
            self._heaps[self._bits - size.bit_length() + 1].append(start)
            start += size

    def largest_free(self) -> int | None:
        """Prefix length of the largest free block, or None when the supernet is full."""
        for prefixlen, heap in enumerate(self._heaps):
            if heap:
                return prefixlen
        return None

    @property
    def free_addresses(self) -> int:
        return sum(len(heap) << (self._bits - p) for p, heap in enumerate(self._heaps))

    def allocate(self, prefixlen: int) -> Network | None:
        """Best fit: the lowest block among the smallest free ones that hold a ``/prefixlen``."""
        for have in range(prefixlen, -1, -1):
            heap = self._heaps[have]
            if heap:
                start = heapq.heappop(heap)
                for split in range(have + 1, prefixlen + 1):
                    heapq.heappush(self._heaps[split], start + (1 << (self._bits - split)))
                return ipaddress.ip_network((start, prefixlen))
        return None


@dataclass(frozen=True)
class AddressRequest:
    """What one cluster needs, and what it already holds (fixed CIDRs never move)."""

    name: str
    nodes: int
    max_pods_per_node: int
    ipv4: bool = True
    ipv6: bool = False
    node_cidr: Network | None = None
    pod_cidr: IPv4Network | None = None
    service_cidr: IPv4Network | None = None
    pod_cidr_v6: IPv6Network | None = None
    service_cidr_v6: IPv6Network | None = None


@dataclass(frozen=True)
class Addresses:
    """A cluster's CIDRs after allocation; a family the cluster does not run stays None."""

    pod_cidr: IPv4Network | None = None
    service_cidr: IPv4Network | None = None
    pod_cidr_v6: IPv6Network | None = None
    service_cidr_v6: IPv6Network | None = None


@dataclass(frozen=True)
class _Slot:
    """One kind of CIDR in one family: where it comes from and how it is sized."""

    attr: str
    label: str
    supernet_key: str
    kind: ClaimKind
    ipv6: bool


_SLOTS = (
    _Slot("pod_cidr", "pod CIDR", "podSupernet", ClaimKind.POD, False),
    _Slot("service_cidr", "service CIDR", "serviceSupernet", ClaimKind.SERVICE, False),
    _Slot("pod_cidr_v6", "IPv6 pod CIDR", "podSupernetV6", ClaimKind.POD, True),
    _Slot("service_cidr_v6", "IPv6 service CIDR", "serviceSupernetV6", ClaimKind.SERVICE, True),
)


def _supernets(network: NetworkSpec) -> dict[str, Network | None]:
    def parse(value: str | None) -> Network | None:
        return None if value is None else ipaddress.ip_network(value)

    return {
        "podSupernet": parse(network.pod_supernet),
        "serviceSupernet": parse(network.service_supernet),
        "podSupernetV6": parse(network.pod_supernet_v6),
        "serviceSupernetV6": parse(network.service_supernet_v6),
    }


def _list(networks: Sequence[Network], limit: int = 3) -> str:
    shown = ", ".join(str(n) for n in networks[:limit])
    more = len(networks) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def _check_blocks(requests: Sequence[AddressRequest], network: NetworkSpec) -> list[str]:
    problems: list[str] = []
    for req in requests:
        for ipv6, mask, key in (
            (False, network.pod_mask_size, "podMaskSize"),
            (True, network.pod_mask_size_v6, "podMaskSizeV6"),
        ):
            if not (req.ipv6 if ipv6 else req.ipv4):
                continue
            usable = usable_per_block(mask, ipv6=ipv6)
            if req.max_pods_per_node > usable:
                fit = next(
                    (m for m in range(mask, 0, -1) if usable_per_block(m, ipv6=ipv6) >= req.max_pods_per_node),
                    mask,
                )
                problems.append(
                    f"cluster {req.name} runs up to {req.max_pods_per_node} pods per node but a per-node "
                    f"/{mask} block holds only {usable} pod addresses; set {key}: {fit} or lower "
                    "maxPodsPerNode"
                )
    return problems


def _check_fixed_size(req: AddressRequest, network: NetworkSpec) -> list[str]:
    problems: list[str] = []
    for cidr, mask, key in (
        (req.pod_cidr, network.pod_mask_size, "podMaskSize"),
        (req.pod_cidr_v6, network.pod_mask_size_v6, "podMaskSizeV6"),
    ):
        if cidr is None:
            continue
        blocks = 1 << (mask - cidr.prefixlen) if cidr.prefixlen <= mask else 0
        if blocks < max(1, req.nodes):
            problems.append(
                f"cluster {req.name}'s pod CIDR {cidr} holds {blocks} per-node /{mask} blocks but the "
                f"cluster has {req.nodes} nodes; widen the CIDR or shrink {key}"
            )
    return problems


def allocate(
    requests: Sequence[AddressRequest],
    network: NetworkSpec,
    *,
    reserved: Sequence[Network] = (),
) -> Mapping[str, Addresses]:
    """Give every request the CIDRs it lacks; raise ``PlanError`` saying why (in numbers) when impossible.

    ``reserved`` ranges are kept free of new allocations (e.g. CIDRs released this plan) but may
    overlap anything. Deterministic: new pod CIDRs go largest first, then in request order.
    """
    problems = _check_blocks(requests, network)
    supernets = _supernets(network)
    for slot in _SLOTS[2:]:
        if supernets[slot.supernet_key] is None:
            needy = [r.name for r in requests if r.ipv6 and getattr(r, slot.attr) is None]
            if needy:
                problems.append(
                    f"cluster {needy[0]} runs IPv6 but network.{slot.supernet_key} is not set; "
                    f"add one (e.g. {'fd00:10::/48' if slot.kind is ClaimKind.POD else 'fd00:20::/108'})"
                )
    pod4, svc4 = supernets["podSupernet"], supernets["serviceSupernet"]
    pod6, svc6 = supernets["podSupernetV6"], supernets["serviceSupernetV6"]
    nested: dict[str, list[Network]] = {key: [] for key in supernets}
    for pod_key, svc_key, pod_net, svc_net in (
        ("podSupernet", "serviceSupernet", pod4, svc4),
        ("podSupernetV6", "serviceSupernetV6", pod6, svc6),
    ):
        if pod_net is None or svc_net is None or not pod_net.overlaps(svc_net):
            continue
        if pod_net == svc_net:
            problems.append(f"{pod_key} and {svc_key} are both {pod_net}; give services their own range")
        elif pod_net.prefixlen < svc_net.prefixlen:
            nested[pod_key].append(svc_net)  # services are carved from a hole in the pod supernet
        else:
            nested[svc_key].append(pod_net)

    claims: list[Claim] = [Claim(ipaddress.ip_network(a), ClaimKind.AVOID) for a in network.avoid]
    for req in requests:
        if req.node_cidr is not None:
            claims.append(Claim(req.node_cidr, ClaimKind.NODE, req.name))
        for slot in _SLOTS:
            fixed: Network | None = getattr(req, slot.attr)
            if fixed is not None:
                claims.append(Claim(fixed, slot.kind, req.name))
        problems.extend(_check_fixed_size(req, network))
    for outer, inner in find_overlaps(claims):
        problems.append(f"{outer.describe()} overlaps {inner.describe()}")
    if problems:
        raise PlanError("; ".join(problems))

    taken = {
        version: [span(n) for n in [*(c.network for c in claims), *reserved] if n.version == version]
        for version in (4, 6)
    }
    avoided = [c.network for c in claims if c.kind is ClaimKind.AVOID]
    result: dict[str, dict[str, Network | None]] = {
        r.name: {slot.attr: getattr(r, slot.attr) for slot in _SLOTS} for r in requests
    }
    for slot in _SLOTS:
        wanted = [
            (index, req)
            for index, req in enumerate(requests)
            if (req.ipv6 if slot.ipv6 else req.ipv4) and getattr(req, slot.attr) is None
        ]
        if not wanted:
            continue
        supernet = supernets[slot.supernet_key]
        assert supernet is not None  # checked above
        free = FreeList(supernet, [*taken[supernet.version], *nested[slot.supernet_key]])
        sized = [(_prefix(slot, req, network), index, req) for index, req in wanted]
        sized.sort(key=lambda item: (item[0], item[1]))
        for done, (prefixlen, _, req) in enumerate(sized):
            got = free.allocate(prefixlen)
            if got is None:
                raise PlanError(_exhausted(slot, req, network, supernet, prefixlen, free, avoided, nested, done))
            result[req.name][slot.attr] = got
    out: dict[str, Addresses] = {}
    for name, slots in result.items():
        pod_v4, svc_v4 = slots["pod_cidr"], slots["service_cidr"]
        pod_v6, svc_v6 = slots["pod_cidr_v6"], slots["service_cidr_v6"]
        assert pod_v4 is None or isinstance(pod_v4, IPv4Network)
        assert svc_v4 is None or isinstance(svc_v4, IPv4Network)
        assert pod_v6 is None or isinstance(pod_v6, IPv6Network)
        assert svc_v6 is None or isinstance(svc_v6, IPv6Network)
        out[name] = Addresses(pod_v4, svc_v4, pod_v6, svc_v6)
    return out


def _prefix(slot: _Slot, req: AddressRequest, network: NetworkSpec) -> int:
    if slot.kind is ClaimKind.SERVICE:
        return network.service_prefix_v6 if slot.ipv6 else network.service_prefix
    mask = network.pod_mask_size_v6 if slot.ipv6 else network.pod_mask_size
    return pod_prefix_for(blocks_needed(req.nodes, network.headroom), mask)


def _exhausted(
    slot: _Slot,
    req: AddressRequest,
    network: NetworkSpec,
    supernet: Network,
    prefixlen: int,
    free: FreeList,
    avoided: Sequence[Network],
    nested: Mapping[str, Sequence[Network]],
    done: int,
) -> str:
    largest = free.largest_free()
    left = "no free block is left" if largest is None else f"the largest free block left is a /{largest}"
    holes = [a for a in avoided if a.overlaps(supernet)] + list(nested[slot.supernet_key])
    after = f" after avoiding {_list(holes)}" if holes else ""
    placed = f", with {done} new {slot.label}s placed this plan" if done else ""
    if slot.kind is ClaimKind.POD:
        mask = network.pod_mask_size_v6 if slot.ipv6 else network.pod_mask_size
        blocks = blocks_needed(req.nodes, network.headroom)
        need = (
            f"cluster {req.name} needs a /{prefixlen} {slot.label} for {req.nodes} nodes x "
            f"{req.max_pods_per_node} pods (headroom {network.headroom}: {blocks} per-node /{mask} blocks"
            f"{'' if blocks & (blocks - 1) == 0 else f', rounded up to {1 << (blocks - 1).bit_length()}'})"
        )
        fix = (
            f"enlarge network.{slot.supernet_key}, lower network.headroom, use smaller per-node blocks "
            f"({'podMaskSizeV6' if slot.ipv6 else 'podMaskSize'}) or remove avoided ranges"
        )
    else:
        key = "servicePrefixV6" if slot.ipv6 else "servicePrefix"
        need = f"cluster {req.name} needs a /{prefixlen} {slot.label} ({key})"
        fix = f"enlarge network.{slot.supernet_key} or raise network.{key} for smaller service CIDRs"
    return f"{need}; {left} in {supernet}{after}{placed}; {fix}"
