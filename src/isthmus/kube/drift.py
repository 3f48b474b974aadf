"""Drift: where a member's live objects differ from what Isthmus applied, found cheaply, and put back.

:func:`find_drift` reads each kind of an app's objects with one LIST per kind and judges every
desired object by what that LIST shows (read through :mod:`.live`, as applying reads):

- **missing**: it is not there (deleted by hand);
- **changed**: its content-hash annotation differs from the desired one;
- **edited**: the same hash, but another field manager wrote to it after Isthmus did
  (:func:`changed_by_others`); a server-side dry run of just those objects then says whether a
  field Isthmus sets really differs (a label someone added is not drift).

Only the last case costs more than the LISTs, and only for the objects concerned.
:func:`reapply_objects` writes objects back with server-side apply, taking conflicting fields
over (``force``): what a drift policy of *correct* asks for. :func:`fingerprint` tells a real
change of an object from a status update, for watches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import groupby
from typing import Any

from ..render import apply_rank
from ..render.hashing import digest
from .connection import FIELD_MANAGER, ClusterConnection
from .diffing import diff_objects, meaningful
from .live import live_objects
from .objects import KubeObject, ObjectRef, clean_for_compare, content_hash, to_resource

__all__ = ["Drift", "DriftKind", "apply_exactly", "changed_by_others", "find_drift", "fingerprint", "reapply_objects"]


class DriftKind(StrEnum):
    MISSING = "missing"
    CHANGED = "changed"
    EDITED = "edited"


@dataclass(frozen=True)
class Drift:
    ref: ObjectRef
    kind: DriftKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.ref} {self.kind.value}" + (f" ({self.detail})" if self.detail else "")


def _entries(obj: KubeObject) -> list[dict[str, Any]]:
    """Field-manager entries of ``obj`` that are about its content: status writes are the controllers'."""
    return [e for e in (obj.get("metadata", {}).get("managedFields") or [])
            if (e.get("subresource") or "") != "status"]


def _time(entry: dict[str, Any]) -> str:
    value = entry.get("time")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else str(value or "")


def changed_by_others(obj: KubeObject, manager: str = FIELD_MANAGER) -> bool:
    """Whether someone other than ``manager`` wrote ``obj``'s content at or after ``manager``'s last write.

    Field-manager times have a resolution of one second, so a write in the same second counts:
    the caller checks, and a check that finds nothing costs a dry run, never a wrong write.
    """
    entries = _entries(obj)
    ours = [_time(e) for e in entries if e.get("manager") == manager]
    if not ours:
        return True  # not written by us at all
    last = max(ours)
    return any(e.get("manager") != manager and _time(e) >= last for e in entries)


def fingerprint(obj: KubeObject) -> str:
    """A digest of what ``obj`` says, without what the server owns (status, versions, field managers)."""
    return digest(clean_for_compare(obj))


async def find_drift(conn: ClusterConnection, app: str, objects: Sequence[KubeObject], *,
                     ignore: Iterable[str] = (), force_conflicts: bool = True) -> list[Drift]:
    """The desired ``objects`` of ``app`` that ``conn``'s cluster does not hold as applied; see the module doc.

    ``ignore``: text of diff lines that are not drift (an annotation only the applier stamps).
    """
    live = await live_objects(conn, app, objects)
    found: list[Drift] = []
    suspects: list[KubeObject] = []
    for obj in objects:
        ref = ObjectRef.of(obj)
        current = live.get(ref)
        if current is None:
            found.append(Drift(ref, DriftKind.MISSING))
        elif content_hash(current) != content_hash(obj):
            found.append(Drift(ref, DriftKind.CHANGED, "content hash differs"))
        elif changed_by_others(current):
            suspects.append(obj)
    if suspects:
        ignored = list(ignore)
        for diff in await diff_objects(conn, suspects, force_conflicts=force_conflicts):
            if meaningful(diff.text, ignored):
                managers = sorted({str(e.get("manager")) for e in _entries(live[diff.ref])} - {FIELD_MANAGER})
                found.append(Drift(diff.ref, DriftKind.EDITED, f"by {', '.join(managers) or 'another manager'}"))
    return sorted(found, key=lambda d: d.ref)


async def apply_exactly(conn: ClusterConnection, objects: Sequence[KubeObject], *, force: bool = False
                        ) -> list[ObjectRef]:
    """Server-side apply each of ``objects`` as it is, stage by stage in apply order, without reading
    anything first (no hash comparison, no inventory): for a caller that knows these are what changed.
    A field another manager owns is an :class:`~isthmus.kube.ApplyConflict` unless ``force``."""

    async def one(obj: KubeObject) -> ObjectRef:
        ref = ObjectRef.of(obj)

        async def do(client: Any) -> None:
            await client.apply(to_resource(obj), force=force)

        await conn.call("apply", str(ref), do)
        return ref

    done: list[ObjectRef] = []
    for _, group in groupby(sorted(objects, key=lambda o: (apply_rank(o), ObjectRef.of(o))), key=apply_rank):
        done += await asyncio.gather(*(one(o) for o in group))
    return done


async def reapply_objects(conn: ClusterConnection, objects: Sequence[KubeObject]) -> list[ObjectRef]:
    """Server-side apply each of ``objects`` as it is, taking conflicting fields over; returns their refs."""
    return await apply_exactly(conn, objects, force=True)
