"""Scaling a datacenter, planned: which nodes join or leave, in which order, and whether the ring allows it. Pure.

Owns: :class:`ScalePlan` (one datacenter's racks as they run and as the spec sizes them), :func:`scale_plans`
(the datacenters whose live StatefulSets' replicas differ from the spec's ``size``), the order of the work
(:meth:`ScalePlan.adds`, :meth:`ScalePlan.removes`) and :func:`check_scale_down`, the refusals with the
numbers.

The rules:

- **Up**: the new nodes join one at a time, each to the rack that has the fewest nodes at that moment (ties:
  the spec's rack order), so the racks never differ by more than one node while the datacenter grows, and a
  rack's new node is its StatefulSet's next ordinal. Once every new node is UN, ``nodetool cleanup`` runs on the
  nodes that were there before (they still hold the ranges the new nodes took over).
- **Down**: the nodes leave one at a time, each from the rack that has the most nodes (ties: the later rack in
  the spec's order, which :meth:`~isthmus.spec.cassandra.Datacenter.rack_sizes` gives fewer nodes), always that
  rack's highest ordinal (a StatefulSet can only lose its last pod).
- **Refused** (:class:`BadScale`, exit code 2, before anything is written) when the datacenter's remaining
  nodes would be fewer than a keyspace's replicas there (the spec's ``keyspaces`` and the live ring's
  replication as ``nodetool describecluster`` prints it; a SimpleStrategy keyspace counts every node of the
  ring), or when its data (the sum of its nodes' ``nodetool status`` load) would fill more than
  :data:`FILL_LIMIT` of the remaining nodes' volumes (``spec.storage.size`` each): compaction needs room.

Must not: do I/O (:mod:`.scaling` reads the ring and runs the plan).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..spec import CassandraCluster
from .keyspaceplan import NTS, LiveReplication

__all__ = ["FILL_LIMIT", "BadScale", "ScaleNode", "ScalePlan", "check_scale_down", "parse_load",
           "parse_quantity", "scale_plans"]

FILL_LIMIT = 0.8
"""The share of the remaining nodes' volumes the datacenter's data may fill after a scale-down."""

_UNITS = {"B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_QUANTITY_UNITS = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                   "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


class BadScale(UserError):
    """A scale-down the ring cannot take (replicas, disk); nothing was written."""


def parse_load(text: str) -> int | None:
    """Bytes of a ``nodetool status`` load (``1.2 MiB``, ``512 B``, ``?``); None when unknown."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", text)
    if m is None:
        return None
    unit = "B" if m[2].lower() in ("", "b", "byte", "bytes") else m[2].upper()
    factor = _UNITS.get(unit)
    return None if factor is None else int(float(m[1]) * factor)


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity (``1Gi``, ``500M``, ``10737418240``)."""
    m = re.fullmatch(r"([\d.]+)([A-Za-z]*)", text.strip())
    if m is None or m[2] not in _QUANTITY_UNITS:
        raise ValueError(f"not a storage quantity: {text!r}")
    return int(float(m[1]) * _QUANTITY_UNITS[m[2]])


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True, order=True)
class ScaleNode:
    """One node that joins or leaves: its rack's StatefulSet and ordinal, and its pod."""

    datacenter: str
    rack: str
    ordinal: int
    pod: str
    cluster: str
    statefulset: str

    @property
    def id(self) -> str:
        return f"{self.datacenter}/{self.pod}"


@dataclass(frozen=True)
class ScalePlan:
    """One datacenter: replicas per rack as they run (``before``) and as the spec sizes them (``after``)."""

    app: str
    datacenter: str
    cluster: str
    racks: tuple[str, ...]
    before: Mapping[str, int]
    after: Mapping[str, int]

    @property
    def size_before(self) -> int:
        return sum(self.before.get(r, 0) for r in self.racks)

    @property
    def size_after(self) -> int:
        return sum(self.after.get(r, 0) for r in self.racks)

    def statefulset(self, rack: str) -> str:
        return f"{self.app}-{self.datacenter}-{rack}"

    def node(self, rack: str, ordinal: int) -> ScaleNode:
        sts = self.statefulset(rack)
        return ScaleNode(self.datacenter, rack, ordinal, f"{sts}-{ordinal}", self.cluster, sts)

    def adds(self) -> tuple[ScaleNode, ...]:
        """The nodes that join, in order: each to the rack with the fewest nodes then (ties: spec order)."""
        now = {r: self.before.get(r, 0) for r in self.racks}
        out = []
        while growing := [r for r in self.racks if now[r] < self.after.get(r, 0)]:
            rack = min(growing, key=lambda r: (now[r], self.racks.index(r)))
            out.append(self.node(rack, now[rack]))
            now[rack] += 1
        return tuple(out)

    def removes(self) -> tuple[ScaleNode, ...]:
        """The nodes that leave, in order: each the highest ordinal of the rack with the most nodes then (ties:
        the later rack)."""
        now = {r: self.before.get(r, 0) for r in self.racks}
        out = []
        while shrinking := [r for r in self.racks if now[r] > self.after.get(r, 0)]:
            rack = max(shrinking, key=lambda r: (now[r], self.racks.index(r)))
            now[rack] -= 1
            out.append(self.node(rack, now[rack]))
        return tuple(out)

    def kept(self) -> tuple[ScaleNode, ...]:
        """The nodes that were there before and stay (where ``nodetool cleanup`` runs after a scale-up)."""
        return tuple(self.node(r, i) for r in self.racks
                     for i in range(min(self.before.get(r, 0), self.after.get(r, 0))))

    def describe(self) -> str:
        parts = [f"datacenter {self.datacenter} {self.size_before} -> {self.size_after} nodes"]
        if adds := self.adds():
            parts.append(f"bootstrap {', '.join(n.pod for n in adds)} one at a time (each once the ring has no "
                         "joining or leaving node), then nodetool cleanup on "
                         f"{', '.join(n.pod for n in self.kept()) or 'no node'}")
        if removes := self.removes():
            parts.append(f"nodetool decommission {', '.join(n.pod for n in removes)} one at a time, each then "
                         "removed from its StatefulSet and its volume claim deleted")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"datacenter": self.datacenter, "cluster": self.cluster, "racks": list(self.racks),
                "before": dict(self.before), "after": dict(self.after)}

    @classmethod
    def from_dict(cls, app: str, d: Mapping[str, Any]) -> ScalePlan:
        return cls(app, str(d["datacenter"]), str(d["cluster"]), tuple(d["racks"]),
                   {str(k): int(v) for k, v in d["before"].items()}, {str(k): int(v) for k, v in d["after"].items()})


def scale_plans(app: CassandraCluster, live: Mapping[str, Mapping[str, int]]) -> dict[str, ScalePlan]:
    """Datacenter -> its plan, for each datacenter of the spec that runs (``live``: datacenter -> rack -> the
    replicas of its StatefulSet, for the datacenters whose StatefulSets were read; a rack without one is absent)
    and whose racks' replicas differ from the spec's sizes. A datacenter with no StatefulSet yet is not scaled:
    it is new (its racks are created at their size), and so is a rack without one: its rack step creates it at
    its size (the racks that run are compared)."""
    out = {}
    for dc in app.spec.datacenters:
        running = live.get(dc.name)
        if not running:
            continue
        racks = tuple(r.name for r in dc.racks if r.name in running)
        before = {r: int(running[r]) for r in racks}
        sizes = dc.rack_sizes()
        after = {r: sizes[r] for r in racks}
        if before != after:
            out[dc.name] = ScalePlan(app.metadata.name, dc.name, dc.cluster, racks, before, after)
    return out


@dataclass(frozen=True)
class RingFacts:
    """What the ring said, for the refusals: keyspaces' replication, each node's load in the datacenter, and
    the ring's node count (for SimpleStrategy), as ``asked`` (which node, which command) printed them."""

    replication: Mapping[str, LiveReplication]
    loads: Mapping[str, str]
    """Address -> ``nodetool status`` load, for the datacenter's nodes."""
    ring_nodes: int
    asked: str


def check_scale_down(app: CassandraCluster, plan: ScalePlan, facts: RingFacts | None) -> None:
    """Refuse a scale-down the ring cannot take, with the numbers (see the module docstring)."""
    if plan.size_after >= plan.size_before:
        return
    where = f"spec.datacenters[{plan.datacenter}].size"
    scaling = f"{where}: scaling {plan.datacenter} from {plan.size_before} to {plan.size_after} nodes"
    for keyspace in app.spec.keyspaces:
        rf = keyspace.replication.get(plan.datacenter, 0)
        if rf > plan.size_after:
            raise BadScale(f"{scaling} would leave fewer nodes than keyspace {keyspace.name}'s {rf} replicas there "
                           f"(spec.keyspaces); lower its replication first; nothing was written")
    if facts is None:
        return
    removed = plan.size_before - plan.size_after
    for name, replication in sorted(facts.replication.items()):
        per_dc = replication.per_datacenter()
        if replication.strategy == NTS and per_dc is not None:
            rf = per_dc.get(plan.datacenter, 0)
            if rf > plan.size_after:
                raise BadScale(f"{scaling} would leave fewer nodes than keyspace {name}'s {rf} replicas there (as "
                               f"{facts.asked} shows); lower its replication in {plan.datacenter} to at most "
                               f"{plan.size_after} first (ALTER KEYSPACE, or spec.keyspaces); nothing was written")
        elif replication.strategy == "SimpleStrategy":
            rf = replication.factors.get("replication_factor", 0)
            left = facts.ring_nodes - removed
            if rf > left:
                raise BadScale(f"{scaling} would leave the ring {left} nodes, fewer than keyspace {name}'s {rf} "
                               f"replicas (SimpleStrategy, as {facts.asked} shows); nothing was written")
    loads = {a: parse_load(t) for a, t in facts.loads.items()}
    known = [b for b in loads.values() if b is not None]
    data = sum(known)
    volume = parse_quantity(app.spec.storage.size)
    room = plan.size_after * volume * FILL_LIMIT
    if data > room:
        each = ", ".join(f"{a} {t}" for a, t in sorted(facts.loads.items()))
        raise BadScale(f"{scaling} would leave its {_bytes(data)} of data ({each}, as {facts.asked} shows) on "
                       f"{plan.size_after} node(s) of {app.spec.storage.size} each (spec.storage.size), more than "
                       f"{FILL_LIMIT:.0%} of their {_bytes(plan.size_after * volume)} ({_bytes(room)}); "
                       "nothing was written")


def loads_of(datacenter: str, nodes: Iterable[Any]) -> dict[str, str]:
    """Address -> load of ``datacenter``'s nodes, from :class:`~.ringview.RingNode` lines."""
    return {n.address: n.load for n in nodes if n.datacenter == datacenter}


__all__ += ["RingFacts", "loads_of"]
