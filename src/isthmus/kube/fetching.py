"""Reading and deleting one object by name, where "not there" is an answer, not an error."""

from __future__ import annotations

from typing import Any

from .connection import ClusterConnection
from .errors import ApiFailure

__all__ = ["delete_object", "get_object"]


def _what(resource: Any, name: str, namespace: str | None) -> str:
    kind = getattr(resource, "__name__", str(resource))
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


async def get_object(conn: ClusterConnection, resource: Any, name: str, namespace: str | None = None) -> Any | None:
    """The live object (a lightkube resource), or None when the server says 404."""

    async def get(client: Any) -> Any:
        return await client.get(resource, name, namespace=namespace)

    try:
        return await conn.call("get", _what(resource, name, namespace), get)
    except ApiFailure as exc:
        if exc.status == 404:
            return None
        raise


async def delete_object(conn: ClusterConnection, resource: Any, name: str, namespace: str | None = None) -> bool:
    """Delete one object; False when it was already gone."""

    async def delete(client: Any) -> None:
        await client.delete(resource, name, namespace=namespace)

    try:
        await conn.call("delete", _what(resource, name, namespace), delete)
    except ApiFailure as exc:
        if exc.status == 404:
            return False
        raise
    return True
