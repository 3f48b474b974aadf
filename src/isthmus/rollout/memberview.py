"""What one member holds of an app, as read at one moment: the one answer to "does it hold this already?".

A :class:`MemberView` is a value: the app's live objects of the kinds that were read (through
kube's one live-state reader, :mod:`isthmus.kube.live`, which also judges each object by content
hash), the app's inventory there, and the member's own record of the revision it runs (each None
when it was not read). Its questions are pure and say None when what was read cannot tell:

- :meth:`~MemberView.rolls_pods`: would writing these objects change a StatefulSet?
- :meth:`~MemberView.holds`: does it hold every one of these objects (same content hash) and list
  them all in its inventory (so applying them writes nothing)?
- :meth:`~MemberView.runs`: does it hold exactly these (its inventory lists just them, so there is
  nothing to prune) and record ``revision`` as the one it fully runs?

The rollout engine (:mod:`.deciding`, through :func:`read_workloads` after ``prepare``) and the
settled check of a repeated apply (:mod:`.settled`, through :func:`read_member`) both ask it.
Reading goes through ``isthmus.kube`` (one labelled LIST per kind, the inventory, the record).
Whether another field manager edited an object with the same hash (drift) and what a write
would change field by field (``diff``) are the kube reader's own questions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..kube import ClusterConnection, KubeObject, ObjectRef, fetch_owned, holds, live_objects
from ..kube.inventory import read_inventory
from ..kube.objects import content_hash
from .memberrevisions import read_member_revision

__all__ = ["MemberView", "RecordedRevision", "read_member", "read_workloads"]


@dataclass(frozen=True)
class RecordedRevision:
    """The member's own record: the revision it fully runs, and the one being rolled out to it."""

    revision: int | None
    target: int | None = None


@dataclass(frozen=True)
class MemberView:
    cluster: str
    live: Mapping[ObjectRef, KubeObject] | None = None
    """The app's live objects of the kinds in ``kinds``; None: nothing was read."""
    kinds: frozenset[tuple[str, str]] = frozenset()
    """(apiVersion, kind) whose objects ``live`` lists completely."""
    inventory: frozenset[ObjectRef] | None = None
    record: RecordedRevision | None = None
    keyspace_matches: bool | None = None
    """A ``keyspace`` step: the ring (asked through CQL) has its declared replication already; None: not asked."""

    def _covers(self, objects: Sequence[KubeObject]) -> bool:
        return self.live is not None and all((o["apiVersion"], o["kind"]) in self.kinds for o in objects)

    def _same(self, obj: KubeObject) -> bool:
        assert self.live is not None
        return holds(self.live.get(ObjectRef.of(obj)), obj)

    def statefulsets(self) -> dict[str, str | None] | None:
        """The live StatefulSets by name, with their content hash; None when they were not read."""
        if self.live is None or ("apps/v1", "StatefulSet") not in self.kinds:
            return None
        return {ref.name: content_hash(obj) for ref, obj in self.live.items() if ref.kind == "StatefulSet"}

    def rolls_pods(self, objects: Sequence[KubeObject], *, prunes: bool = False) -> bool | None:
        """Would writing ``objects`` change (or, with ``prunes``, delete) a StatefulSet? None: not read."""
        live = self.statefulsets()
        if live is None:
            return None
        wanted = [o for o in objects if o.get("kind") == "StatefulSet"]
        if not all(self._same(o) for o in wanted):
            return True
        return prunes and not set(live) <= {o["metadata"]["name"] for o in wanted}

    def holds(self, objects: Sequence[KubeObject]) -> bool | None:
        """Every one of ``objects`` is there with its content hash, and in the inventory."""
        if not self._covers(objects) or self.inventory is None:
            return None
        return all(self._same(o) for o in objects) and {ObjectRef.of(o) for o in objects} <= self.inventory

    def runs(self, objects: Sequence[KubeObject], revision: int) -> bool | None:
        """Exactly ``objects`` (nothing else in the inventory) and the record says it fully runs ``revision``."""
        if not self._covers(objects) or self.inventory is None or self.record is None:
            return None
        return all(self._same(o) for o in objects) and self.inventory == {ObjectRef.of(o) for o in objects} \
            and self.record.revision == revision and self.record.target is None

    def merged(self, other: MemberView) -> MemberView:
        """What both views know (``other`` wins where both read the same)."""
        live = None if self.live is None and other.live is None else {**(self.live or {}), **(other.live or {})}
        return replace(self, live=live, kinds=self.kinds | other.kinds,
                       inventory=other.inventory if other.inventory is not None else self.inventory,
                       record=other.record if other.record is not None else self.record)


async def read_workloads(conn: ClusterConnection, app: str, namespace: str) -> MemberView:
    """The app's live StatefulSets in one member (one LIST)."""
    live = await fetch_owned(conn, app, {("apps/v1", "StatefulSet", namespace)})
    return MemberView(conn.name, live, frozenset({("apps/v1", "StatefulSet")}))


async def read_member(conn: ClusterConnection, app: str, namespace: str, objects: Sequence[KubeObject], *,
                      record: bool = False) -> MemberView:
    """What the member holds of ``objects``' kinds (one LIST per kind, a GET for shared objects), its
    inventory, and with ``record`` its record of the revision it runs; reads only."""
    reads = [read_inventory(conn, app, namespace), live_objects(conn, app, objects)]
    found = await asyncio.gather(*reads, *([read_member_revision(conn, app, namespace)] if record else []))
    inventory, live = found[0], found[1]
    recorded = RecordedRevision(found[2].revision, found[2].target) if record else None
    return MemberView(conn.name, live, frozenset((o["apiVersion"], o["kind"]) for o in objects),
                      frozenset(inventory), recorded)
