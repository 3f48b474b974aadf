"""What Isthmus applied to a cluster, per app, so pruning never touches anything else.

The inventory is a ConfigMap ``isthmus-inventory-<app>`` in the app's namespace whose
``objects`` key lists the references written by the last apply. Pruning deletes only objects
that are both in that list and labelled as managed by Isthmus for this app.
"""

from __future__ import annotations

import json
from typing import Any

from lightkube.resources.core_v1 import ConfigMap

from .connection import ClusterConnection
from .fetching import delete_object, get_object
from .objects import KubeObject, ObjectRef, to_resource

__all__ = ["delete_inventory", "inventory_name", "read_inventory", "write_inventory"]

APP_LABEL = "isthmus.dev/app"
MANAGED_BY = ("app.kubernetes.io/managed-by", "isthmus")


def inventory_name(app: str) -> str:
    return f"isthmus-inventory-{app}"


def _encode(refs: set[ObjectRef]) -> str:
    return json.dumps([r.to_dict() for r in sorted(refs)], indent=1, sort_keys=True)


async def read_inventory(conn: ClusterConnection, app: str, namespace: str) -> set[ObjectRef]:
    cm = await get_object(conn, ConfigMap, inventory_name(app), namespace)
    raw = (cm.data or {}).get("objects", "[]") if cm is not None else "[]"
    return {ObjectRef.from_dict(item) for item in json.loads(raw)}


async def write_inventory(conn: ClusterConnection, app: str, namespace: str, refs: set[ObjectRef],
                          previous: set[ObjectRef]) -> bool:
    """Record ``refs``; returns False (and writes nothing) when they equal ``previous``."""
    if refs == previous:
        return False
    obj: KubeObject = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": inventory_name(app),
            "namespace": namespace,
            "labels": {APP_LABEL: app, MANAGED_BY[0]: MANAGED_BY[1], "isthmus.dev/inventory": "true"},
        },
        "data": {"objects": _encode(refs)},
    }

    async def apply(client: Any) -> Any:
        return await client.apply(to_resource(obj), force=True)

    await conn.call("apply", f"ConfigMap {namespace}/{inventory_name(app)}", apply)
    return True


async def delete_inventory(conn: ClusterConnection, app: str, namespace: str) -> None:
    await delete_object(conn, ConfigMap, inventory_name(app), namespace)


def is_ours(live: KubeObject, app: str) -> bool:
    labels = live.get("metadata", {}).get("labels") or {}
    return bool(labels.get(APP_LABEL) == app and labels.get(MANAGED_BY[0]) == MANAGED_BY[1])


__all__ += ["APP_LABEL", "is_ours"]
