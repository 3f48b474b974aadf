"""Server-side apply of one cluster's desired objects: in order, only what changed, then prune.

Order: namespaces and CRDs (waited on until Established), config and secrets, services,
workloads, disruption budgets. The live state is read by :mod:`.live` (one LIST per kind).
An object whose live content hash equals the desired one is left alone, so an apply with
nothing to change makes no write at all; ``diff`` (a server-side dry run) is the tool that
reveals fields someone else changed by hand.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import groupby
from typing import Any

from ..render import ApplyPhase, apply_rank
from .connection import ClusterConnection
from .customkinds import established
from .errors import KubeError
from .fetching import delete_object
from .inventory import delete_inventory, is_ours, read_inventory, write_inventory
from .live import fetch_owned, holds, kind_key, live_objects
from .objects import KubeObject, ObjectRef, resource_class, to_resource

__all__ = [
    "ApplyAction",
    "ApplyReport",
    "ObjectOutcome",
    "apply_objects",
    "delete_hooks",
    "delete_objects",
    "delete_volume_claims",
]

Progress = Callable[[str], None]


class ApplyAction(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PRUNED = "pruned"
    DELETED = "deleted"


@dataclass(frozen=True)
class ObjectOutcome:
    ref: ObjectRef
    action: ApplyAction


@dataclass(frozen=True)
class ApplyReport:
    cluster: str
    outcomes: tuple[ObjectOutcome, ...] = field(default_factory=tuple)

    def count(self, action: ApplyAction) -> int:
        return sum(1 for o in self.outcomes if o.action is action)

    @property
    def changed(self) -> bool:
        return any(o.action is not ApplyAction.UNCHANGED for o in self.outcomes)


async def _apply_one(conn: ClusterConnection, obj: KubeObject, force: bool) -> KubeObject:
    ref = ObjectRef.of(obj)

    async def do(client: Any) -> KubeObject:
        result = await client.apply(to_resource(obj), force=force)
        return dict(result.to_dict())

    return await conn.call("apply", str(ref), do)


ESTABLISHED_WITHIN = 30.0


async def _wait_established(conn: ClusterConnection, name: str) -> None:
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

    async def get(client: Any) -> Any:
        return await client.get(CustomResourceDefinition, name)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + ESTABLISHED_WITHIN
    while True:
        if established(await conn.call("get", f"CustomResourceDefinition {name}", get)):
            return
        if loop.time() > deadline:
            raise KubeError(conn.name, f"CustomResourceDefinition {name} not Established after {ESTABLISHED_WITHIN:g}s")
        await asyncio.sleep(0.2)


async def apply_objects(
    conn: ClusterConnection,
    objects: Sequence[KubeObject],
    *,
    app: str,
    namespace: str,
    force_conflicts: bool = False,
    prune: bool = True,
    progress: Progress | None = None,
) -> ApplyReport:
    """Make ``conn``'s cluster hold exactly ``objects`` for ``app``; returns what happened to each."""
    say = progress or (lambda _msg: None)
    desired = {ObjectRef.of(o): o for o in objects}
    previous = await read_inventory(conn, app, namespace)
    # Nothing applied before means nothing of ours to compare with: skip the reads, apply everything.
    live = await live_objects(conn, app, objects, also=previous) if previous else {}
    outcomes: list[ObjectOutcome] = []

    async def one(obj: KubeObject) -> ObjectOutcome:
        ref = ObjectRef.of(obj)
        current = live.get(ref)
        if holds(current, obj):
            return ObjectOutcome(ref, ApplyAction.UNCHANGED)
        await _apply_one(conn, obj, force_conflicts)
        if ref.kind == "CustomResourceDefinition":
            await _wait_established(conn, ref.name)
        return ObjectOutcome(ref, ApplyAction.CREATED if current is None else ApplyAction.CONFIGURED)

    # The inventory names an object before the object exists, so an apply cut short (a crash, a
    # timeout) never leaves behind something a later prune cannot find. It is written beside the
    # first stage after the namespaces it lives in, costing no round trip of its own.
    recorded = set(desired) | previous
    inventory_pending = recorded != previous
    for rank, group in groupby(sorted(objects, key=lambda o: (apply_rank(o), ObjectRef.of(o))), key=apply_rank):
        batch = list(group)
        say(f"applying {len(batch)} object(s) of stage {rank}")
        record = inventory_pending and rank > ApplyPhase.FOUNDATION
        results = await asyncio.gather(
            *(one(o) for o in batch),
            *([write_inventory(conn, app, namespace, recorded, previous)] if record else []))
        outcomes += [r for r in results if isinstance(r, ObjectOutcome)]
        inventory_pending = inventory_pending and not record
    if inventory_pending:
        await write_inventory(conn, app, namespace, recorded, previous)

    if prune:
        stale = previous - set(desired)
        outcomes += [ObjectOutcome(r, ApplyAction.PRUNED) for r in await _delete(conn, app, stale, live, say)]
    await write_inventory(conn, app, namespace, set(desired) | (set() if prune else previous), recorded)
    return ApplyReport(conn.name, tuple(outcomes))


async def _delete(
    conn: ClusterConnection, app: str, refs: set[ObjectRef], live: dict[ObjectRef, KubeObject], say: Progress
) -> list[ObjectRef]:
    """Delete ``refs`` that are live and ours, latest stage first; returns what was deleted."""
    by_rank: dict[int, list[ObjectRef]] = defaultdict(list)
    for ref in refs:
        obj = live.get(ref)
        if obj is not None and is_ours(obj, app):
            by_rank[apply_rank(obj)].append(ref)
    deleted: list[ObjectRef] = []
    for rank in sorted(by_rank, reverse=True):
        batch = sorted(by_rank[rank])
        say(f"deleting {len(batch)} object(s) of stage {rank}")

        async def one(ref: ObjectRef) -> ObjectRef | None:
            res = resource_class(ref.api_version, ref.kind)
            return ref if await delete_object(conn, res, ref.name, ref.namespace or None) else None

        deleted += [r for r in await asyncio.gather(*(one(r) for r in batch)) if r is not None]
    return deleted


async def delete_objects(
    conn: ClusterConnection, *, app: str, namespace: str, progress: Progress | None = None
) -> ApplyReport:
    """Delete everything the inventory lists for ``app`` and is still ours, then the inventory itself."""
    say = progress or (lambda _msg: None)
    previous = await read_inventory(conn, app, namespace)
    live = await fetch_owned(conn, app, {kind_key(r) for r in previous})
    deleted = await _delete(conn, app, previous, live, say)
    await delete_inventory(conn, app, namespace)
    return ApplyReport(conn.name, tuple(ObjectOutcome(r, ApplyAction.DELETED) for r in deleted))


async def delete_hooks(conn: ClusterConnection, *, app: str, namespace: str) -> list[ObjectRef]:
    """Delete the Helm hook Jobs (annotated ``helm.sh/hook``) the app ran and left in ``namespace``: no inventory
    lists them (each run recreates them), so only their labels say they are the app's."""
    jobs = await fetch_owned(conn, app, {("batch/v1", "Job", namespace)})
    hooks = {r: o for r, o in jobs.items() if "helm.sh/hook" in ((o.get("metadata") or {}).get("annotations") or {})}
    return await _delete(conn, app, set(hooks), hooks, lambda _msg: None) if hooks else []


async def delete_volume_claims(conn: ClusterConnection, *, app: str, namespace: str) -> list[ObjectRef]:
    """Delete the app's PersistentVolumeClaims (its data), which StatefulSets leave behind on purpose."""
    claims = await fetch_owned(conn, app, {("v1", "PersistentVolumeClaim", namespace)})
    return await _delete(conn, app, set(claims), claims, lambda _msg: None) if claims else []
