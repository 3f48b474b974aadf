"""Changing one StatefulSet's replicas, and deleting one pod's volume claim: a scaled datacenter's two writes.

Owns: :func:`set_replicas` (a merge patch of ``spec.replicas`` alone, by field manager ``isthmus``: the rest of
the StatefulSet is the rollout's server-side apply, which later applies the same count and so takes no
conflict) and :func:`delete_claim` (one PersistentVolumeClaim by name, if it is still there).
Must not: decide when to scale or which claim is no longer needed (that is ``rollout.scaling``).
"""

from __future__ import annotations

from typing import Any

from lightkube.types import PatchType

from .connection import FIELD_MANAGER, ClusterConnection
from .fetching import delete_object
from .objects import resource_class

__all__ = ["delete_claim", "set_replicas"]


async def set_replicas(conn: ClusterConnection, namespace: str, name: str, replicas: int) -> None:
    """Set StatefulSet ``namespace/name``'s ``spec.replicas``; NotFound when it is not there."""
    res = resource_class("apps/v1", "StatefulSet")

    async def patch(client: Any) -> None:
        await client.patch(res, name, {"spec": {"replicas": replicas}}, namespace=namespace,
                           patch_type=PatchType.MERGE, field_manager=FIELD_MANAGER)

    await conn.call("patch", f"StatefulSet {namespace}/{name}", patch)


async def delete_claim(conn: ClusterConnection, namespace: str, name: str) -> bool:
    """Delete PersistentVolumeClaim ``namespace/name``; False when it was already gone."""
    return await delete_object(conn, resource_class("v1", "PersistentVolumeClaim"), name, namespace)
