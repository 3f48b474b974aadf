"""Reading, listing and deleting objects, where "not there" is an answer, not an error.

The verbs take the kind as ``(apiVersion, kind)`` and give plain JSON dicts (:data:`KubeObject`),
so a caller outside this package never sees a client-library class. ``get_object`` and
``delete_object`` take a resource class instead, for the modules of this package that already hold one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .connection import ClusterConnection
from .errors import NotFound
from .objects import KubeObject, resource_class

__all__ = ["delete_object", "get_object", "list_objects", "listing"]

Labels = Mapping[str, str | None]
"""A label selector: ``{key: value}`` is ``key=value``, ``{key: None}`` is ``key`` (the label exists)."""


def _what(resource: Any, name: str, namespace: str | None) -> str:
    kind = getattr(resource, "__name__", str(resource))
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _where(kind: str, namespace: str | None, labels: Labels | None) -> str:
    where = f"list {kind} in {namespace}" if namespace else f"list {kind}"
    if labels:
        where += " -l " + ",".join(k if v is None else f"{k}={v}" for k, v in labels.items())
    return where


async def listing(conn: ClusterConnection, api_version: str, kind: str, *, namespace: str | None = None,
                  labels: Labels | None = None) -> tuple[str, list[KubeObject]]:
    """One LIST: the collection's ``resourceVersion`` (to watch from) and its items as dicts.

    ``namespace`` None lists every namespace of a namespaced kind (or the cluster-scoped kind)."""
    res = resource_class(api_version, kind)

    async def do(client: Any) -> tuple[str, list[KubeObject]]:
        items = client.list(res, namespace=namespace, labels=dict(labels) if labels is not None else None)
        objects = [dict(item.to_dict()) async for item in items]
        return str(items.resourceVersion), objects

    return await conn.call("list", _where(kind, namespace, labels), do)


async def list_objects(conn: ClusterConnection, api_version: str, kind: str, *, namespace: str | None = None,
                       labels: Labels | None = None) -> list[KubeObject]:
    """The objects of one kind (in ``namespace``, matching ``labels``), as dicts: one LIST."""
    return (await listing(conn, api_version, kind, namespace=namespace, labels=labels))[1]


async def get_object(conn: ClusterConnection, resource: Any, name: str, namespace: str | None = None) -> Any | None:
    """The live object (a lightkube resource), or None when the server says 404."""

    async def get(client: Any) -> Any:
        return await client.get(resource, name, namespace=namespace)

    try:
        return await conn.call("get", _what(resource, name, namespace), get)
    except NotFound:
        return None


async def delete_object(conn: ClusterConnection, resource: Any, name: str, namespace: str | None = None) -> bool:
    """Delete one object; False when it was already gone."""

    async def delete(client: Any) -> None:
        await client.delete(resource, name, namespace=namespace)

    try:
        await conn.call("delete", _what(resource, name, namespace), delete)
    except NotFound:
        return False
    return True

