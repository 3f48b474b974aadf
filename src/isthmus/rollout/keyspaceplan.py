"""A keyspace's replication, as the ring has it and as the spec declares it: what must change. Pure.

Owns: :class:`LiveReplication` (a row of ``system_schema.keyspaces``' ``replication`` map, parsed; or a line
of ``nodetool describecluster``'s ``Keyspaces:`` block, :func:`parse_replication`),
:func:`keyspace_change` (nothing, a ``CREATE KEYSPACE``, or an ``ALTER KEYSPACE`` and the datacenters
whose replicas grow, which a repair must then fill), and :func:`check_readback` (the ring, read again
after the change, has exactly what was declared).

Why a repair after a change that adds replicas: ``ALTER KEYSPACE`` moves no data. A new replica is empty
until a repair (or a rebuild) fills it, and a read that reaches only new replicas misses rows. So
:mod:`.keyspacing` runs ``nodetool repair -full <keyspace>`` on every node of each datacenter whose
replica count grew (or, after a change of strategy, of every datacenter) right after the change.

Must not: do I/O (:mod:`.keyspacing` runs it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..spec import Keyspace

__all__ = ["NTS", "KeyspaceChange", "LiveReplication", "check_readback", "keyspace_change", "parse_replication",
           "replication_cql"]

NTS = "NetworkTopologyStrategy"


@dataclass(frozen=True)
class LiveReplication:
    """A keyspace's replication as ``system_schema.keyspaces`` has it: the strategy (short class name) and,
    for NetworkTopologyStrategy, the replicas per datacenter (else the strategy's own options)."""

    strategy: str
    factors: Mapping[str, int]

    @classmethod
    def parse(cls, replication: Mapping[str, str]) -> LiveReplication:
        strategy = str(replication.get("class", "")).rsplit(".", 1)[-1]
        factors = {}
        for key, value in replication.items():
            if key == "class":
                continue
            try:
                factors[str(key)] = int(str(value).split("/")[0])  # "3/1": transient replication, 3 in all
            except ValueError:
                continue
        return cls(strategy, factors)

    def per_datacenter(self) -> dict[str, int] | None:
        """Replicas per datacenter (those with none left out); None when the strategy does not place by datacenter."""
        if self.strategy != NTS:
            return None
        return {dc: rf for dc, rf in self.factors.items() if rf > 0}

    def __str__(self) -> str:
        return f"{self.strategy} " + ", ".join(f"{k}={v}" for k, v in sorted(self.factors.items()))


_LINE = re.compile(r"^(\S+) -> Replication class: (\S+) \{(.*)\}$")


def parse_replication(describecluster: str) -> dict[str, LiveReplication]:
    """Keyspace -> its replication, from ``nodetool describecluster``'s ``Keyspaces:`` block (Cassandra 4.0 and
    later: ``shop -> Replication class: NetworkTopologyStrategy {dc-eu=3, dc-us=3}``); empty when missing."""
    out: dict[str, LiveReplication] = {}
    inside = False
    for raw in describecluster.splitlines():
        line = raw.strip()
        if line == "Keyspaces:":
            inside = True
            continue
        if not inside:
            continue
        found = _LINE.match(line)
        if found is None:
            if line:
                break
            continue
        options = dict(p.split("=", 1) for p in (s.strip() for s in found[3].split(",")) if "=" in p)
        out[found[1]] = LiveReplication.parse({"class": found[2], **options})
    return out


def replication_cql(replication: Mapping[str, int]) -> str:
    """``{'class': 'NetworkTopologyStrategy', 'dc-eu': 3}`` (datacenter names are spec names: no quote inside)."""
    return "{'class': 'NetworkTopologyStrategy', " + ", ".join(
        f"'{dc}': {rf}" for dc, rf in replication.items()) + "}"


@dataclass(frozen=True)
class KeyspaceChange:
    """What brings the ring's keyspace to the declared replication."""

    keyspace: str
    before: LiveReplication | None
    """None: the keyspace does not exist (it is created)."""
    after: Mapping[str, int]

    @property
    def statement(self) -> str:
        verb = "CREATE KEYSPACE IF NOT EXISTS" if self.before is None else "ALTER KEYSPACE"
        return f"{verb} {self.keyspace} WITH replication = {replication_cql(self.after)}"

    @property
    def grown(self) -> tuple[str, ...]:
        """Datacenters whose new replicas start empty: those whose count grows, or every one after a change of
        strategy (SimpleStrategy put replicas anywhere). None for a new keyspace (it holds nothing)."""
        if self.before is None:
            return ()
        old = self.before.per_datacenter()
        if old is None:
            return tuple(self.after)
        return tuple(dc for dc, rf in self.after.items() if rf > old.get(dc, 0))

    def describe(self) -> str:
        wanted = ", ".join(f"{dc}={rf}" for dc, rf in self.after.items())
        if self.before is None:
            return f"created with {NTS} {wanted}"
        old = self.before.per_datacenter()
        if old is None:
            moves = f"{self.before} -> {NTS} {wanted}"
        else:
            dcs = list(dict.fromkeys([*self.after, *sorted(old)]))
            moves = ", ".join(f"{dc} {old.get(dc, 0)} -> {self.after.get(dc, 0)}" for dc in dcs
                              if old.get(dc, 0) != self.after.get(dc, 0))
        return f"replication {moves}"


def keyspace_change(declared: Keyspace, live: LiveReplication | None) -> KeyspaceChange | None:
    """None when the ring already has the declared replication; else the change."""
    after = dict(declared.replication)
    if live is not None and live.per_datacenter() == after:
        return None
    return KeyspaceChange(declared.name, live, after)


def check_readback(declared: Keyspace, live: LiveReplication | None) -> str | None:
    """After the change: None when the ring has exactly what was declared, else what it has instead."""
    if live is None:
        return f"keyspace {declared.name} is not in system_schema.keyspaces after the change"
    if live.per_datacenter() != dict(declared.replication):
        return (f"keyspace {declared.name} has {live} after the change, not the declared "
                f"{declared.replication_text()}")
    return None
