"""``spec.keyspaces``: the replication Isthmus keeps for named keyspaces, and what it must survive. Pure.

A keyspace is declared by name with its replication per datacenter (always NetworkTopologyStrategy: the
only strategy that places replicas by datacenter and rack) and the consistency its clients read at
(default ``LOCAL_QUORUM``). User keyspaces and the three replicated system keyspaces (``system_auth``,
``system_distributed``, ``system_traces``) may be named; the node-local ones (``system``,
``system_schema``, ...) may not. A keyspace the spec does not name is never touched.

What is refused, with the numbers (:func:`keyspace_problems`, located by the caller):

- a datacenter the spec does not have;
- more replicas in a datacenter than it has nodes (``size``): Cassandra would accept it and then
  fail every write at a consistency that counts the missing replicas;
- a replication that leaves the keyspace unreadable at its consistency while one node is down. Every
  rollout restarts nodes (one at a time, or one rack at a time when that holds at most one replica of
  each range), so a read must still find enough live replicas with one replica of a range gone:
  ``LOCAL_QUORUM`` needs RF 3 in each of its datacenters, ``LOCAL_ONE`` RF 2, ``QUORUM`` and ``ONE``
  count the replicas of every datacenter, and ``ALL`` never survives a restart.

Must not: read the ring (the rollout compares this with what the ring has, :mod:`isthmus.rollout.keyspaceplan`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Final

from pydantic import Field, field_validator

from ._base import SpecModel

__all__ = ["LOCAL_SYSTEM_KEYSPACES", "REPLICATED_SYSTEM_KEYSPACES", "Consistency", "Keyspace", "keyspace_problems",
           "replicas_needed"]

#: System keyspaces whose replication is the operator's to choose (Cassandra starts them on SimpleStrategy).
REPLICATED_SYSTEM_KEYSPACES: Final = ("system_auth", "system_distributed", "system_traces")
#: Keyspaces that live on each node alone (LocalStrategy, or virtual): no replication to declare.
LOCAL_SYSTEM_KEYSPACES: Final = ("system", "system_schema", "system_views", "system_virtual_schema")


class Consistency(StrEnum):
    """The consistency level a keyspace's clients read at (Cassandra's names)."""

    ONE = "ONE"
    TWO = "TWO"
    THREE = "THREE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    LOCAL_ONE = "LOCAL_ONE"
    LOCAL_QUORUM = "LOCAL_QUORUM"
    EACH_QUORUM = "EACH_QUORUM"

    @property
    def local(self) -> bool:
        """Counted per datacenter (each datacenter's replicas alone must answer)."""
        return self in (Consistency.LOCAL_ONE, Consistency.LOCAL_QUORUM, Consistency.EACH_QUORUM)


def replicas_needed(consistency: Consistency, replicas: int) -> int:
    """How many of ``replicas`` replicas (one datacenter's for a local level, else all) a read must reach."""
    if consistency in (Consistency.ONE, Consistency.LOCAL_ONE):
        return 1
    if consistency is Consistency.TWO:
        return 2
    if consistency is Consistency.THREE:
        return 3
    if consistency is Consistency.ALL:
        return replicas
    return replicas // 2 + 1  # QUORUM, LOCAL_QUORUM, EACH_QUORUM


def _least_surviving(consistency: Consistency) -> int | None:
    """The smallest replica count that still answers ``consistency`` with one replica down (None: none does)."""
    if consistency is Consistency.ALL:
        return None
    n = 1
    while replicas_needed(consistency, n) > n - 1:
        n += 1
    return n


class Keyspace(SpecModel):
    """One keyspace's replication: NetworkTopologyStrategy with these replicas per datacenter."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$",
                               description="The keyspace (lower case, as CQL stores an unquoted name)")]
    replication: Annotated[dict[str, Annotated[int, Field(ge=1, le=1000)]], Field(
        min_length=1, description="Replicas per datacenter (NetworkTopologyStrategy); a datacenter left out "
                                  "holds no replica")]
    consistency: Consistency = Field(
        default=Consistency.LOCAL_QUORUM,
        description="The consistency its clients read at: it must survive one node down (every rollout "
                    "restarts nodes)")

    @field_validator("name")
    @classmethod
    def _system(cls, name: str) -> str:
        if name in LOCAL_SYSTEM_KEYSPACES:
            raise ValueError(f"keyspace {name!r} is node-local (LocalStrategy): it has no replication to declare")
        if name.startswith("system") and name not in REPLICATED_SYSTEM_KEYSPACES:
            raise ValueError(f"keyspace {name!r} is Cassandra's own; of the system keyspaces only "
                             f"{', '.join(REPLICATED_SYSTEM_KEYSPACES)} may be declared")
        return name

    def replication_text(self) -> str:
        """``NetworkTopologyStrategy dc-eu=3, dc-us=3``, as the plan shows it."""
        return "NetworkTopologyStrategy " + ", ".join(f"{dc}={rf}" for dc, rf in self.replication.items())


_Path = tuple[str | int, ...]


def keyspace_problems(keyspaces: Sequence[Keyspace], sizes: Mapping[str, int],
                      indexes: Mapping[str, int]) -> list[tuple[_Path, str]]:
    """(field path, message) for everything wrong with ``keyspaces`` in a spec whose datacenters have
    ``sizes`` nodes (``indexes``: each datacenter's place in ``spec.datacenters``); see the module doc."""
    out: list[tuple[_Path, str]] = []
    names = [k.name for k in keyspaces]
    known = ", ".join(sizes)
    for i, ks in enumerate(keyspaces):
        where: _Path = ("spec", "keyspaces", i)
        if names.index(ks.name) != i:
            out.append(((*where, "name"), f"keyspace {ks.name!r} is declared twice; declare each keyspace once"))
            continue
        bad = False
        for dc, rf in ks.replication.items():
            at: _Path = (*where, "replication", dc)
            if dc not in sizes:
                out.append((at, f"keyspace {ks.name!r} replicates to datacenter {dc!r}, which the spec does not "
                                f"have (datacenters: {known})"))
                bad = True
            elif rf > sizes[dc]:
                out.append((at, f"keyspace {ks.name!r} asks for {rf} replicas in datacenter {dc!r}, which has "
                                f"{sizes[dc]} nodes (spec.datacenters[{indexes[dc]}].size); a datacenter holds at "
                                f"most one replica per node: lower the replicas or grow the datacenter"))
                bad = True
        if not bad:
            out += _readable(ks, where, sizes)
    return out


def _readable(ks: Keyspace, where: _Path, sizes: Mapping[str, int]) -> list[tuple[_Path, str]]:
    """The replication must answer a read at the keyspace's consistency with one replica down."""
    cl = ks.consistency
    least = _least_surviving(cl)
    if least is None:
        total = sum(ks.replication.values())
        return [((*where, "consistency"), f"keyspace {ks.name!r} is read at ALL, which needs all {total} replicas: "
                                          "a restart of any node (every rollout restarts nodes) leaves it unreadable; "
                                          "read at QUORUM or LOCAL_QUORUM instead")]
    if cl.local:
        out = []
        for dc, rf in ks.replication.items():
            need = replicas_needed(cl, rf)
            if need > rf - 1:
                fit = "" if least <= sizes[dc] else f"; datacenter {dc!r} has {sizes[dc]} nodes, so grow it first"
                out.append(((*where, "replication", dc),
                            f"keyspace {ks.name!r} is read at {cl.value}, which needs {need} of the {rf} replicas "
                            f"in datacenter {dc!r}: a restart of one of its nodes (every rollout restarts nodes) "
                            f"leaves it unreadable there; {cl.value} needs at least {least} replicas per "
                            f"datacenter{fit}, or read at a lower consistency"))
        return out
    total = sum(ks.replication.values())
    need = replicas_needed(cl, total)
    if need > total - 1:
        return [((*where, "consistency"),
                 f"keyspace {ks.name!r} is read at {cl.value}, which needs {need} of its {total} replicas: a restart "
                 f"of one node (every rollout restarts nodes) leaves it unreadable; {cl.value} needs at least "
                 f"{least} replicas in all, or read at a lower consistency")]
    return []
