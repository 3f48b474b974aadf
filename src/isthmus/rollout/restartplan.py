"""May a datacenter restart a whole rack at once? Proven from the replication the ring has, or not. Pure.

Owns: :func:`choose_restart` (one datacenter's choice, with the reason) and
:func:`choose_restarts` (every datacenter of an app, from the database gate's node reports).

The rule (issue 13 item 7): a rack at once only when every keyspace with a replica in the datacenter is on
NetworkTopologyStrategy with at least 3 replicas there, and the datacenter has at least as many racks as
the largest of those replica counts. NetworkTopologyStrategy puts a range's replicas in distinct racks
while there are racks to spare, so then one rack holds at most one replica of each range, and with a rack
down every range keeps RF - 1 >= 2 replicas: a LOCAL_QUORUM read or write still succeeds. Anything else is
one node at a time: SimpleStrategy (it places replicas without regard to racks; Cassandra's default for
``system_traces``, ``system_distributed`` and ``system_auth`` until ``spec.keyspaces`` declares them),
fewer than 3 replicas, fewer racks than replicas, and a datacenter whose replication is not known (no
node of the ring answered).

Why the ring and not the spec: the restarts happen with the replication the ring has then, which includes
keyspaces the spec does not name (they lose quorum just the same), and the plan's keyspace steps run after
the datacenters' restarts. So the proof is read from ``nodetool describecluster`` and the racks from
``nodetool status``, which the database gate asks every node anyway.

Must not: do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..spec import CassandraCluster
from ..spec.keyspaces import LOCAL_SYSTEM_KEYSPACES
from .keyspaceplan import NTS, LiveReplication
from .ringview import NodeReport

__all__ = ["RestartChoice", "choose_restart", "choose_restarts"]

#: Strategies that keep a copy on every node, or none to share: a restart never costs them a quorum.
_NOT_PLACED = frozenset({"LocalStrategy", "EverywhereStrategy", "MetaStrategy"})
@dataclass(frozen=True)
class RestartChoice:
    """How one datacenter's pods restart, and why."""

    datacenter: str
    rack_at_once: bool
    reason: str

    def line(self) -> str:
        mode = "a rack at once is safe" if self.rack_at_once else "one node at a time"
        return f"{self.datacenter}: {mode}: {self.reason}"


def choose_restart(datacenter: str, racks: Sequence[str], replication: Mapping[str, LiveReplication] | None,
                   *, unknown: str = "no node of the ring answered") -> RestartChoice:
    """One datacenter's choice (see the module docstring); ``racks``: the datacenter's racks in the ring,
    ``replication``: every keyspace's, as the ring has it (None: not known, and why is ``unknown``)."""
    if replication is None:
        return RestartChoice(datacenter, False, f"the replication is not known ({unknown})")
    if not racks:
        return RestartChoice(datacenter, False, "the datacenter is not in the ring yet")
    counts: list[int] = []
    for name, live in sorted(replication.items()):
        if name in LOCAL_SYSTEM_KEYSPACES or live.strategy in _NOT_PLACED:
            continue
        if live.strategy != NTS:
            return RestartChoice(datacenter, False, f"keyspace {name} is on {live.strategy}, which places replicas "
                                                    "without regard to racks")
        rf = live.factors.get(datacenter, 0)
        if rf == 0:
            continue
        if rf < 3:
            return RestartChoice(datacenter, False, f"keyspace {name} has {rf} replica{'s' if rf > 1 else ''} in "
                                                    f"{datacenter}: LOCAL_QUORUM needs 3 to survive a rack down")
        if len(racks) < rf:
            return RestartChoice(datacenter, False, f"keyspace {name} has {rf} replicas in {datacenter} over "
                                                    f"{len(racks)} racks: a rack can hold two replicas of a range")
        counts.append(rf)
    if not counts:
        return RestartChoice(datacenter, False, f"no keyspace proves it: none has replicas in {datacenter} on "
                                                "NetworkTopologyStrategy")
    spread = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)} to {max(counts)}"
    return RestartChoice(datacenter, True, f"every keyspace with replicas here is on {NTS} with {spread} "
                                           f"replicas over {len(racks)} racks: a rack holds at most one replica of "
                                           "each range, so LOCAL_QUORUM survives a rack down")


def choose_restarts(app: CassandraCluster, reports: Sequence[NodeReport], *,
                    unreachable: Sequence[str] = ()) -> list[RestartChoice]:
    """Every datacenter's choice, in the spec's order, from the nodes that answered (any one node's view of
    the keyspaces and of the racks will do: they agree once the schema does, which the gate demands);
    ``unreachable``: member clusters that did not answer: their datacenters go one node at a time (what their
    nodes would say is not known)."""
    answered = [r for r in reports if r.answered and r.keyspaces]
    replication = answered[0].keyspaces if answered else None
    racks: dict[str, list[str]] = {}
    for report in answered:
        for node in report.ring:
            names = racks.setdefault(node.datacenter, [])
            if node.rack not in names:
                names.append(node.rack)
    why = "; ".join([*(f"{r.cluster}/{r.pod}: {r.error}" for r in reports if not r.answered),
                     *(f"{c} does not answer" for c in unreachable)]) or "no Ready node to ask"
    gone = set(unreachable)
    return [choose_restart(dc.name, racks.get(dc.name, []), None if dc.cluster in gone else replication,
                           unknown=f"{dc.cluster} does not answer" if dc.cluster in gone else why)
            for dc in app.spec.datacenters]
