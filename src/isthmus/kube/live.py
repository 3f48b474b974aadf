"""The one reader of a member's live state: what it holds of some desired objects, by content hash.

:func:`fetch_owned` reads each kind of an app's objects with one labelled LIST;
:func:`live_objects` adds a GET for each desired object shared between apps (a namespace
carries no app label, so the LIST misses it). :func:`standing` judges one desired object against
what was read: it is held (same content hash), changed (another hash), or missing. Applying
(:mod:`.applying`: write only what is not held), drift (:mod:`.drift`: report what is missing
or changed, and whether someone else edited it) and the read-only :func:`unapplied` all read
through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .connection import ClusterConnection
from .errors import NotFound
from .fetching import get_object, list_objects
from .inventory import APP_LABEL, read_inventory
from .objects import KubeObject, ObjectRef, content_hash, resource_class

__all__ = ["Standing", "Unapplied", "fetch_owned", "holds", "kind_key", "live_objects", "standing", "unapplied"]


def kind_key(ref: ObjectRef) -> tuple[str, str, str]:
    """What one LIST reads: (apiVersion, kind, namespace)."""
    return ref.api_version, ref.kind, ref.namespace


async def fetch_owned(
    conn: ClusterConnection, app: str, kinds: set[tuple[str, str, str]]
) -> dict[ObjectRef, KubeObject]:
    """The live objects of ``app`` for each (apiVersion, kind, namespace): one LIST per kind."""

    async def list_kind(api_version: str, kind: str, namespace: str) -> list[KubeObject]:
        try:
            return await list_objects(conn, api_version, kind, namespace=namespace or None, labels={APP_LABEL: app})
        except NotFound:  # the kind's CRD is not installed yet: nothing of ours exists
            return []

    results = await asyncio.gather(*(list_kind(*k) for k in sorted(kinds)))
    live: dict[ObjectRef, KubeObject] = {}
    for items in results:
        for item in items:
            live[ObjectRef.of(item)] = item
    return live


async def live_objects(conn: ClusterConnection, app: str, objects: Sequence[KubeObject],
                       also: Iterable[ObjectRef] = ()) -> dict[ObjectRef, KubeObject]:
    """The live state of ``objects`` (and of the kinds of ``also``): one labelled LIST per kind, plus a GET
    for each object shared between apps (a namespace carries no app label, so the LIST misses it)."""
    refs = [ObjectRef.of(o) for o in objects]
    live = await fetch_owned(conn, app, {kind_key(r) for r in [*refs, *also]})

    async def get(ref: ObjectRef) -> tuple[ObjectRef, KubeObject | None]:
        found = await get_object(conn, resource_class(ref.api_version, ref.kind), ref.name, ref.namespace or None)
        return ref, dict(found.to_dict()) if found is not None else None

    shared = [r for r, o in zip(refs, objects, strict=True)
              if r not in live and APP_LABEL not in (o.get("metadata", {}).get("labels") or {})]
    found = await asyncio.gather(*(get(r) for r in shared))
    return live | {ref: obj for ref, obj in found if obj is not None}


class Standing(StrEnum):
    HELD = "held"
    """There, with the desired content hash."""
    CHANGED = "changed"
    """There, with another content hash (or none)."""
    MISSING = "missing"


def standing(current: KubeObject | None, wanted: KubeObject) -> Standing:
    """How the live object (None: not there) stands against ``wanted``, judged by content hash."""
    if current is None:
        return Standing.MISSING
    wanted_hash = content_hash(wanted)
    return Standing.HELD if wanted_hash is not None and content_hash(current) == wanted_hash else Standing.CHANGED


def holds(current: KubeObject | None, wanted: KubeObject) -> bool:
    """Whether the live object already carries what ``wanted`` would write (by content hash)."""
    return standing(current, wanted) is Standing.HELD


@dataclass(frozen=True)
class Unapplied:
    """What an apply of some objects would have to write in one member, found by reading only."""

    changed: tuple[ObjectRef, ...]
    """Objects missing there, or there with another content hash."""
    inventory: frozenset[ObjectRef]
    """The app's inventory in that member (what the last apply recorded)."""


async def unapplied(conn: ClusterConnection, app: str, namespace: str, objects: Sequence[KubeObject]) -> Unapplied:
    """Read (never write) what applying ``objects`` of ``app`` would change: one LIST per kind, the inventory."""
    inventory, live = await asyncio.gather(read_inventory(conn, app, namespace), live_objects(conn, app, objects))
    changed = tuple(ObjectRef.of(o) for o in objects if not holds(live.get(ObjectRef.of(o)), o))
    return Unapplied(changed, frozenset(inventory))
