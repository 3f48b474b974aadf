"""Whole-object reads and compare-and-swap writes of the rollout's own bookkeeping objects.

The lock, the fences, the revision store and the rollout state are small objects Isthmus alone
writes; each update is a PUT carrying the ``resourceVersion`` that was read, so two writers
can never both win (the loser gets :class:`StaleWrite`). Every call goes through
:meth:`isthmus.kube.ClusterConnection.call`, so timeouts, the breaker and error translation
are the gateway's.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..errors import IsthmusError
from ..kube import ApiFailure, ClusterConnection, KubeObject
from ..kube.inventory import MANAGED_BY
from ..kube.objects import resource_class, to_resource

__all__ = [
    "CONTROL_NAMESPACE",
    "StaleWrite",
    "bookkeeping_labels",
    "create_object",
    "delete_object",
    "ensure_namespace",
    "get_object",
    "replace_object",
]

CONTROL_NAMESPACE = "isthmus-system"
"""Where the lock, the revisions and the rollout state live, in the Fleet's control-plane cluster."""


class StaleWrite(IsthmusError):
    """A compare-and-swap lost: the object changed (or appeared) since it was read."""

    def __init__(self, cluster: str, what: str) -> None:
        self.cluster, self.what = cluster, what
        super().__init__(f"cluster {cluster}: {what} changed since it was read")


def bookkeeping_labels(app: str, role: str) -> dict[str, str]:
    # No app label: an app's LIST (inventory, pruning, status) must never see these objects.
    return {"isthmus.dev/of-app": app, MANAGED_BY[0]: MANAGED_BY[1], "isthmus.dev/role": role}


def _name(api_version: str, kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


async def get_object(conn: ClusterConnection, api_version: str, kind: str, name: str,
                     namespace: str | None) -> KubeObject | None:
    res = resource_class(api_version, kind)

    async def do(client: Any) -> KubeObject:
        return dict((await client.get(res, name, namespace=namespace)).to_dict())

    try:
        return await conn.call("get", _name(api_version, kind, name, namespace), do)
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


async def create_object(conn: ClusterConnection, obj: KubeObject) -> KubeObject:
    """Create ``obj``; :class:`StaleWrite` when it already exists (someone was first)."""
    meta = obj["metadata"]
    what = _name(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    async def do(client: Any) -> KubeObject:
        return dict((await client.create(to_resource(obj))).to_dict())

    try:
        return await conn.call("create", what, do)
    except ApiFailure as exc:
        if exc.status == 409:
            raise StaleWrite(conn.name, what) from exc
        raise


async def replace_object(conn: ClusterConnection, obj: KubeObject) -> KubeObject:
    """PUT ``obj``, whose ``metadata.resourceVersion`` is the version it was read at."""
    meta = obj["metadata"]
    what = _name(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
    if not meta.get("resourceVersion"):
        raise ValueError(f"{what}: a compare-and-swap needs the resourceVersion it was read at")

    async def do(client: Any) -> KubeObject:
        return dict((await client.replace(to_resource(obj))).to_dict())

    try:
        return await conn.call("update", what, do)
    except ApiFailure as exc:
        if exc.status in (404, 409):
            raise StaleWrite(conn.name, what) from exc
        raise


async def delete_object(conn: ClusterConnection, api_version: str, kind: str, name: str,
                        namespace: str | None) -> bool:
    res = resource_class(api_version, kind)

    async def do(client: Any) -> None:
        await client.delete(res, name, namespace=namespace)

    try:
        await conn.call("delete", _name(api_version, kind, name, namespace), do)
    except ApiFailure as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def ensure_namespace(conn: ClusterConnection, name: str) -> None:
    if await get_object(conn, "v1", "Namespace", name, None) is not None:
        return
    obj: KubeObject = {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}}}
    with contextlib.suppress(StaleWrite):
        await create_object(conn, obj)

