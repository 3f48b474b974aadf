"""Recreating a workload whose immutable fields must change, leaving its pods and volumes running.

A live StatefulSet refuses a change of ``podManagementPolicy`` (and of its selector, its service name,
its claim templates). :func:`recreate_orphaning` deletes the live object with ``propagationPolicy:
Orphan`` (the garbage collector strips the pods' and ControllerRevisions' owner references; nothing
is stopped), waits until the object is gone, then applies the desired one: the StatefulSet controller
adopts every pod and revision its selector matches, so with an unchanged pod template no pod restarts.

Idempotent and resumable: run again after a crash between the delete and the create, the object is
already gone and is created; run again after it finished, there is nothing to recreate (the caller
compares the live field first). The caller holds the app's lock.

Must not: decide whether an object needs recreating (that is the caller's, from the live object).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from lightkube.types import CascadeType

from .applying import _apply_one
from .connection import ClusterConnection
from .errors import KubeError, NotFound
from .fetching import get_object
from .objects import KubeObject, ObjectRef, resource_class

__all__ = ["recreate_orphaning"]

GONE_WITHIN = 120.0


async def recreate_orphaning(conn: ClusterConnection, obj: KubeObject, *, within: float = GONE_WITHIN,
                             poll: float = 0.25, force: bool = False) -> None:
    """Delete the live ``obj`` (orphaning what it owns), wait until it is gone, apply ``obj`` anew."""
    ref = ObjectRef.of(obj)
    res = resource_class(obj["apiVersion"], obj["kind"])
    name, namespace = obj["metadata"]["name"], obj["metadata"].get("namespace")

    async def delete(client: Any) -> None:
        await client.delete(res, name, namespace=namespace, cascade=CascadeType.ORPHAN)

    if await get_object(conn, res, name, namespace) is not None:
        with contextlib.suppress(NotFound):  # gone meanwhile: all we wanted
            await conn.call("delete", f"{ref} (orphaning its pods)", delete)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while await get_object(conn, res, name, namespace) is not None:  # the orphan finalizer runs first
        if loop.time() > deadline:
            raise KubeError(conn.name, f"{ref} still there {within:g}s after its delete (orphaning its pods)")
        await asyncio.sleep(poll)
    await _apply_one(conn, obj, force)
