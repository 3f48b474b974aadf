"""Adding and removing a datacenter: what changes between the revision the ring runs and the spec. Pure.

Owns: :class:`DatacenterChange` (the datacenters a spec adds to a running ring, each with the datacenter its
nodes rebuild from, and those it removes, each with its cluster and its nodes in decommission order),
:func:`datacenter_change` (from the spec of the revision the control plane last recorded and the new spec),
:func:`choose_source`, :func:`removal_problems` and :func:`system_keyspace_changes`.

How the rollout plan uses it (:func:`.steps.plan_rollout`):

- an **added** datacenter gets a ``join/<dc>`` step before its racks (its nodes must start without bootstrap
  streaming: :mod:`.datacenters` writes the ``no-bootstrap`` marker the init container reads), its racks as
  usual, the keyspace steps (the declared replication names it), then ``rebuild/<dc>`` after the keyspaces:
  the undeclared system keyspaces gain replicas there, ``nodetool rebuild -- <source>`` runs on each of its
  nodes, and the step is done when every spec-named keyspace's rows are readable there;
- a **removed** datacenter gets ``decommission/<dc>`` after the keyspace steps (which drop it from every
  declared keyspace first): the undeclared system keyspaces lose it, its nodes are decommissioned one at a
  time, then its objects (and volumes, which hold nothing the ring needs once the node left) are deleted.

The **rebuild source**: ``rebuildFrom`` of the datacenter when the spec gives it; else the nearest healthy
datacenter: one in the same region as the new datacenter's cluster first, then the others in the rollout's
order (the seed datacenter first). The fleet records no round trips between regions, so "nearest" is the
region, then the rollout's order. A source that is being added itself, or whose cluster does not answer
(Unknown), is refused (:class:`BadDatacenterChange`, exit code 2) before anything is written.

**Removal is refused** while a keyspace the spec does not declare still has replicas in the datacenter:
the spec must declare it without that datacenter in the same change. The three replicated system keyspaces
(``system_auth``, ``system_distributed``, ``system_traces``) are the exception: when the spec does not declare
them, Isthmus drops the removed datacenter from them itself (and gives an added one
``min(3, nodes)`` replicas), since Cassandra refuses to decommission the last nodes of a datacenter that a
keyspace still replicates to and a user should not have to know that.

Must not: do I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..render.naming import CassandraNames
from ..spec import CassandraCluster
from ..spec.keyspaces import LOCAL_SYSTEM_KEYSPACES, REPLICATED_SYSTEM_KEYSPACES
from .keyspaceplan import KeyspaceChange, LiveReplication

__all__ = ["BadDatacenterChange", "DatacenterChange", "RemovedDatacenter", "choose_source", "datacenter_change",
           "rebuild_commands", "removal_problems", "system_keyspace_changes"]

SYSTEM_REPLICAS = 3
"""Replicas an undeclared system keyspace gets in an added datacenter (at most its node count)."""


class BadDatacenterChange(UserError):
    """A datacenter cannot be added or removed as the spec asks; nothing was written."""


@dataclass(frozen=True)
class RemovedDatacenter:
    name: str
    cluster: str
    pods: tuple[str, ...]
    """Its nodes, in decommission order: the last rack first, each rack's highest ordinal first."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cluster": self.cluster, "pods": list(self.pods)}


@dataclass(frozen=True)
class DatacenterChange:
    added: tuple[str, ...] = ()
    removed: tuple[RemovedDatacenter, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    """Added datacenter -> the datacenter it rebuilds from (filled in by :func:`choose_source`)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def with_sources(self, sources: Mapping[str, str]) -> DatacenterChange:
        return DatacenterChange(self.added, self.removed, dict(sources))


def _decommission_order(app: CassandraCluster, name: str) -> tuple[str, ...]:
    names = CassandraNames(app.metadata.name, app.namespace)
    dc = next(d for d in app.spec.datacenters if d.name == name)
    sizes = dc.rack_sizes()
    return tuple(pod for rack in reversed(dc.racks) for pod in reversed(names.pods(dc.name, rack.name,
                                                                                  sizes[rack.name])))


def datacenter_change(before: CassandraCluster | None, after: CassandraCluster) -> DatacenterChange:
    """What ``after`` adds to and removes from the ring that runs ``before`` (None: a first deploy, which adds
    nothing to a running ring: its datacenters start together and have no data to rebuild)."""
    if before is None:
        return DatacenterChange()
    old = [dc.name for dc in before.spec.datacenters]
    new = [dc.name for dc in after.spec.datacenters]
    added = tuple(n for n in new if n not in old)
    removed = tuple(RemovedDatacenter(dc.name, dc.cluster, _decommission_order(before, dc.name))
                    for dc in before.spec.datacenters if dc.name not in new)
    return DatacenterChange(added, removed)


def choose_source(app: CassandraCluster, datacenter: str, *, added: Collection[str], regions: Mapping[str, str],
                  order: Sequence[str], unknown: Collection[str] = ()) -> str:
    """The datacenter ``datacenter`` rebuilds from (see the module docstring). ``regions``: cluster -> region;
    ``order``: the datacenters in the rollout's order (:func:`.steps.datacenter_waves`); ``unknown``: datacenters
    whose cluster does not answer. Raises :class:`BadDatacenterChange`."""
    dcs = {dc.name: dc for dc in app.spec.datacenters}
    dc = dcs[datacenter]
    where = f"spec.datacenters[{list(dcs).index(datacenter)}].rebuildFrom"
    if dc.rebuild_from is not None:
        source = dc.rebuild_from
        if source in added:
            raise BadDatacenterChange(f"{where}: datacenter {datacenter!r} rebuilds from {source!r}, which this "
                                      "change adds too (it has no data yet); name a datacenter the ring runs "
                                      f"({', '.join(n for n in dcs if n not in added)}); nothing was written")
        if source in unknown:
            raise BadDatacenterChange(f"{where}: datacenter {datacenter!r} rebuilds from {source!r}, whose cluster "
                                      f"{dcs[source].cluster} does not answer (Unknown); wait for it or name another "
                                      "datacenter; nothing was written")
        return source
    ordered = [n for n in order if n in dcs and n not in added and n != datacenter]
    region = regions.get(dc.cluster)
    ordered.sort(key=lambda n: regions.get(dcs[n].cluster) != region)  # stable: the rollout's order within
    healthy = [n for n in ordered if n not in unknown]
    if not healthy:
        raise BadDatacenterChange(f"datacenter {datacenter!r} has no datacenter to rebuild from: "
                                  + (f"{', '.join(ordered)} do not answer (Unknown)" if ordered else
                                     "the ring runs no other datacenter")
                                  + "; nothing was written")
    return healthy[0]


def removal_problems(after: CassandraCluster, removed: RemovedDatacenter,
                     live: Mapping[str, LiveReplication]) -> list[str]:
    """Why ``removed`` cannot go with the spec ``after`` while the ring has ``live`` replication (keyspace -> it)."""
    declared = {k.name for k in after.spec.keyspaces}
    out = []
    for name, replication in sorted(live.items()):
        per_dc = replication.per_datacenter() or {}
        replicas = per_dc.get(removed.name, 0)
        if replicas == 0 or name in declared or name in REPLICATED_SYSTEM_KEYSPACES:
            continue
        kept = {dc: rf for dc, rf in per_dc.items() if dc != removed.name}
        hint = ", ".join(f"{dc}: {rf}" for dc, rf in kept.items()) or "..."
        out.append(f"spec.datacenters: datacenter {removed.name!r} (cluster {removed.cluster}, "
                   f"{len(removed.pods)} node{'s' if len(removed.pods) != 1 else ''}) cannot be removed: keyspace "
                   f"{name!r} still has {replicas} replica{'s' if replicas != 1 else ''} there ({replication}); "
                   f"declare it in spec.keyspaces without {removed.name} in the same change "
                   f"(- {{name: {name}, replication: {{{hint}}}}}); nothing was written")
    return out


def system_keyspace_changes(app: CassandraCluster, live: Mapping[str, LiveReplication], *,
                            add: str | None = None, remove: str | None = None) -> list[KeyspaceChange]:
    """The ``ALTER KEYSPACE`` of each replicated system keyspace the spec does not declare that adds datacenter
    ``add`` (``min(3, nodes)`` replicas) or drops ``remove``. Only NetworkTopologyStrategy ones are changed:
    SimpleStrategy places replicas on any node, whatever its datacenter (a rebuild or a decommission moves
    its ranges with the others)."""
    declared = {k.name for k in app.spec.keyspaces}
    sizes = {dc.name: dc.size for dc in app.spec.datacenters}
    out = []
    for name in REPLICATED_SYSTEM_KEYSPACES:
        replication = live.get(name)
        per_dc = replication.per_datacenter() if replication is not None else None
        if name in declared or per_dc is None:
            continue
        after = dict(per_dc)
        if add is not None and add not in after:
            after[add] = min(SYSTEM_REPLICAS, sizes.get(add, 1))
        if remove is not None:
            after.pop(remove, None)
        if after != per_dc and after:
            out.append(KeyspaceChange(name, replication, after))
    return out


def rebuild_commands(live: Mapping[str, LiveReplication], datacenter: str, source: str) -> list[tuple[str, ...]]:
    """The ``nodetool rebuild`` commands that fill a node of the added ``datacenter``, one per keyspace: a
    NetworkTopologyStrategy keyspace with replicas there streams from ``source`` (from any datacenter when the
    source holds none of it); a SimpleStrategy one (``system_traces``, ``system_distributed`` until declared)
    from any datacenter, since it places replicas whatever their datacenter, so the source may lack a range
    the new node now owns (Cassandra: "Unable to find sufficient sources for streaming range", as the lab's
    ring answered a whole-node ``nodetool rebuild -- <source>``)."""
    out: list[tuple[str, ...]] = []
    for name, replication in sorted(live.items()):
        if name in LOCAL_SYSTEM_KEYSPACES:
            continue
        per_dc = replication.per_datacenter()
        if per_dc is None:
            if replication.strategy == "SimpleStrategy":
                out.append(("nodetool", "rebuild", "--keyspace", name))
            continue
        if per_dc.get(datacenter, 0) == 0:
            continue
        from_source = ("--", source) if per_dc.get(source, 0) > 0 else ()
        out.append(("nodetool", "rebuild", "--keyspace", name, *from_source))
    return out
