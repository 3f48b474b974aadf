"""Primary-range repair, planned: which nodes, in which order, with which command, and what is left. Pure.

Owns: :func:`plan_repair` (node by node, datacenter by datacenter: the spec's datacenter order, its racks in
order, each rack's pods by ordinal), :func:`check_selection` (a ``--dc`` not in the spec, a ``--keyspace``
the ring does not have: refused before anything runs), :func:`parse_keyspaces` (the ``Keyspaces:`` block
of ``nodetool describecluster``, Cassandra 4.0 and later), :func:`repair_command` and
:func:`nodetool_failure` (Cassandra's own words out of a failed ``nodetool repair``).

Why ``-pr -full``: ``-pr`` repairs only the ranges a node is the primary owner of, so running it on every
node covers every range once (not RF times); ``-full`` compares all data, not just what an earlier
incremental repair left unrepaired, so it needs no incremental state and never marks SSTables repaired
(a ring that never ran incremental repair stays that way).

Must not: do I/O (:mod:`.repairing` runs the plan).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..spec import CassandraCluster
from .keyspaceplan import parse_replication

__all__ = ["BadRepair", "RepairNode", "RepairPlan", "check_selection", "nodetool_failure", "parse_keyspaces",
           "plan_repair", "repair_command"]

#: Keyspaces that live on one node only: nothing to repair (``nodetool repair`` skips them too).
LOCAL_KEYSPACES = frozenset({"system", "system_schema", "system_views", "system_virtual_schema"})


class BadRepair(UserError):
    """A repair asked for something the spec or the ring does not have; nothing ran."""


@dataclass(frozen=True, order=True)
class RepairNode:
    """One Cassandra node to repair: its pod, in its datacenter's rack, in its member cluster."""

    datacenter: str
    rack: str
    pod: str
    cluster: str

    @property
    def id(self) -> str:
        return f"{self.datacenter}/{self.pod}"

    def to_dict(self) -> dict[str, str]:
        return {"datacenter": self.datacenter, "rack": self.rack, "pod": self.pod, "cluster": self.cluster}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairNode:
        return cls(str(d["datacenter"]), str(d["rack"]), str(d["pod"]), str(d["cluster"]))


@dataclass(frozen=True)
class RepairPlan:
    """The nodes in the order they are repaired, and what is repaired on each (empty: every keyspace)."""

    app: str
    keyspaces: tuple[str, ...]
    datacenters: tuple[str, ...]
    nodes: tuple[RepairNode, ...]

    def remaining(self, done: Iterable[str]) -> tuple[RepairNode, ...]:
        """The nodes not yet repaired, in order (``done``: ids of nodes whose repair finished)."""
        finished = set(done)
        return tuple(n for n in self.nodes if n.id not in finished)

    def commands(self) -> tuple[tuple[str, ...], ...]:
        """What runs on each node, one after the other."""
        return tuple(repair_command(k) for k in self.keyspaces) if self.keyspaces else (repair_command(None),)

    def same_selection(self, keyspaces: Sequence[str], datacenters: Sequence[str]) -> bool:
        return tuple(keyspaces) == self.keyspaces and tuple(datacenters) == self.datacenters

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "keyspaces": list(self.keyspaces), "datacenters": list(self.datacenters),
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairPlan:
        return cls(str(d["app"]), tuple(d.get("keyspaces", ())), tuple(d.get("datacenters", ())),
                   tuple(RepairNode.from_dict(n) for n in d.get("nodes", ())))


def repair_command(keyspace: str | None) -> tuple[str, ...]:
    """``nodetool repair -pr -full [keyspace]`` (see the module docstring for why)."""
    return ("nodetool", "repair", "-pr", "-full", *((keyspace,) if keyspace else ()))


def plan_repair(app: CassandraCluster, *, keyspaces: Sequence[str] = (),
                datacenters: Sequence[str] = ()) -> RepairPlan:
    """Node by node, datacenter by datacenter, in the spec's order; only the named datacenters when given.

    Datacenters come in the spec's order whatever the order of ``datacenters`` (which :func:`check_selection`
    has checked). The pods are those the spec's StatefulSets make: ``<app>-<dc>-<rack>-<ordinal>``.
    """
    chosen = set(datacenters)
    nodes: list[RepairNode] = []
    for dc in app.spec.datacenters:
        if chosen and dc.name not in chosen:
            continue
        sizes = dc.rack_sizes()
        for rack in dc.racks:
            nodes += [RepairNode(dc.name, rack.name, f"{app.metadata.name}-{dc.name}-{rack.name}-{i}", dc.cluster)
                      for i in range(sizes[rack.name])]
    ordered = tuple(d.name for d in app.spec.datacenters if not chosen or d.name in chosen)
    return RepairPlan(app.metadata.name, tuple(dict.fromkeys(keyspaces)), ordered if chosen else (), tuple(nodes))


def check_selection(app: CassandraCluster, datacenters: Sequence[str]) -> None:
    """A ``--dc`` the spec does not have is refused, naming the ones it has."""
    known = [d.name for d in app.spec.datacenters]
    for name in datacenters:
        if name not in known:
            raise BadRepair(f"--dc {name}: app {app.metadata.name} has no datacenter {name!r} "
                            f"(its datacenters: {', '.join(known)}); nothing was repaired")


def check_keyspaces(app: str, keyspaces: Sequence[str], existing: Iterable[str], asked: str) -> None:
    """A ``--keyspace`` the ring does not have (as ``asked`` lists them) is refused, naming the ones it has."""
    have = set(existing)
    for name in keyspaces:
        if name in LOCAL_KEYSPACES:
            raise BadRepair(f"--keyspace {name}: a node-local system keyspace has no replicas to repair; "
                            "nothing was repaired")
        if name not in have:
            listed = ", ".join(sorted(have - LOCAL_KEYSPACES)) or "none"
            raise BadRepair(f"--keyspace {name}: the ring of app {app} has no keyspace {name!r} (as {asked} "
                            f"lists them: {listed}); nothing was repaired")


def parse_keyspaces(describecluster: str) -> tuple[str, ...]:
    """The keyspace names of ``nodetool describecluster``'s ``Keyspaces:`` block (``<name> -> Replication
    class: ...``, one a line; :func:`.keyspaceplan.parse_replication` reads it); empty when the block is missing."""
    return tuple(parse_replication(describecluster))


def nodetool_failure(stdout: str, stderr: str, limit: int = 400) -> str:
    """Cassandra's own message from a failed ``nodetool repair``: its ``error:`` lines (and the
    ``Repair ... failed`` lines nodetool prints on stdout), else the end of what it printed."""
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.lower().startswith("error") or re.search(r"\bfail(ed|ure)\b", ln, re.I)]
    text = " | ".join(dict.fromkeys(said or lines[-3:])) or "nodetool printed nothing"
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ += ["LOCAL_KEYSPACES", "check_keyspaces"]
