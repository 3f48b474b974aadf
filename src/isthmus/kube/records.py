"""Small bookkeeping objects Isthmus alone writes: read whole, written by compare-and-swap.

The rollout's lock (a Lease), its fences, revisions and progress, the operator's leader Lease:
each update is a PUT carrying the ``resourceVersion`` it was based on, so two writers can never
both win (the loser gets :class:`StaleWrite`). Every call goes through
:meth:`~isthmus.kube.ClusterConnection.call`, so timeouts, the breaker and error translation are
the gateway's.

Round trips are what a rollout waits on, so this module remembers, in the connection's
:class:`~isthmus.kube.session.Session`, two things it learnt from the server and re-checks them only
when the server says otherwise:

- namespaces that exist (:func:`ensure_namespace` asks once; a create that finds the namespace
  gone forgets it and creates it again);
- for each ConfigMap written with :func:`write_config_map`, the version and data last read or
  written. The next write is a PUT against that version without reading first: one round trip
  when nobody else wrote in between, and a conflict (someone did) re-reads and decides again.
  Nothing is cached that could let a stale decision stand: a CAS either succeeds against the
  version the decision was based on, or is retried from a fresh read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError
from .connection import ClusterConnection
from .errors import Conflict, NotFound
from .fetching import delete_object
from .inventory import MANAGED_BY
from .objects import KubeObject, resource_class, to_resource
from .session import SeenConfigMap

__all__ = [
    "ConfigMapData",
    "StaleWrite",
    "Written",
    "bookkeeping_labels",
    "config_map",
    "create_record",
    "delete_record",
    "ensure_namespace",
    "forget",
    "get_record",
    "read_config_map",
    "remembered_config_map",
    "replace_record",
    "write_config_map",
]

ConfigMapData = dict[str, str]


class StaleWrite(IsthmusError):
    """A compare-and-swap lost: the object changed (or appeared, or vanished) since it was read."""

    def __init__(self, cluster: str, what: str) -> None:
        self.cluster, self.what = cluster, what
        super().__init__(f"cluster {cluster}: {what} changed since it was read")


def bookkeeping_labels(app: str, role: str) -> dict[str, str]:
    """Labels of an app's bookkeeping object. No app label: an app's LIST (inventory, pruning, status,
    watches) must never see these objects."""
    return {"isthmus.dev/of-app": app, MANAGED_BY[0]: MANAGED_BY[1], "isthmus.dev/role": role}


def _what(kind: str, name: str, namespace: str | None) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _what_obj(obj: KubeObject) -> str:
    meta = obj["metadata"]
    return _what(obj["kind"], meta["name"], meta.get("namespace"))


def forget(conn: ClusterConnection) -> None:
    """Drop what was learnt about ``conn``'s server (tests; a server that was rebuilt)."""
    conn.session.clear()


# -- whole-object calls ------------------------------------------------------------------------------

async def get_record(conn: ClusterConnection, api_version: str, kind: str, name: str,
                     namespace: str | None) -> KubeObject | None:
    """The live object as a dict, or None when the server says 404."""
    res = resource_class(api_version, kind)

    async def do(client: Any) -> KubeObject:
        return dict((await client.get(res, name, namespace=namespace)).to_dict())

    try:
        return await conn.call("get", _what(kind, name, namespace), do)
    except NotFound:
        return None


async def create_record(conn: ClusterConnection, obj: KubeObject) -> KubeObject:
    """Create ``obj``; :class:`StaleWrite` when it already exists (someone was first)."""
    what = _what_obj(obj)

    async def do(client: Any) -> KubeObject:
        return dict((await client.create(to_resource(obj))).to_dict())

    namespace = obj["metadata"].get("namespace")
    for attempt in (1, 2):
        try:
            return await conn.call("create", what, do)
        except Conflict as exc:
            raise StaleWrite(conn.name, what) from exc
        except NotFound:
            if not namespace or attempt != 1:
                raise
            conn.session.namespaces.discard(namespace)  # its namespace is gone: make it again
            await ensure_namespace(conn, namespace)
    raise AssertionError("unreachable")


async def replace_record(conn: ClusterConnection, obj: KubeObject) -> KubeObject:
    """PUT ``obj``, whose ``metadata.resourceVersion`` is the version it was read at."""
    what = _what_obj(obj)
    if not obj["metadata"].get("resourceVersion"):
        raise ValueError(f"{what}: a compare-and-swap needs the resourceVersion it was read at")

    async def do(client: Any) -> KubeObject:
        return dict((await client.replace(to_resource(obj))).to_dict())

    try:
        return await conn.call("update", what, do)
    except (NotFound, Conflict) as exc:
        raise StaleWrite(conn.name, what) from exc


async def delete_record(conn: ClusterConnection, api_version: str, kind: str, name: str,
                        namespace: str | None) -> bool:
    """Delete one object; False when it was already gone."""
    try:
        return await delete_object(conn, resource_class(api_version, kind), name, namespace)
    finally:
        if kind == "ConfigMap" and namespace:
            conn.session.config_maps.pop((namespace, name), None)


async def ensure_namespace(conn: ClusterConnection, name: str) -> None:
    """Make sure namespace ``name`` exists; asks the server once per connection."""
    memory = conn.session
    if name in memory.namespaces:
        return
    if await get_record(conn, "v1", "Namespace", name, None) is None:
        obj: KubeObject = {"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}}}
        with contextlib.suppress(StaleWrite):  # created meanwhile by someone else: it exists, all we wanted
            await create_record(conn, obj)
    memory.namespaces.add(name)


# -- ConfigMaps written by compare-and-swap ----------------------------------------------------------

def config_map(name: str, namespace: str, labels: Mapping[str, str], *, data: Mapping[str, str] | None = None,
               binary_data: Mapping[str, str] | None = None, resource_version: str = "") -> KubeObject:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if resource_version:
        meta["resourceVersion"] = resource_version
    obj: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    if data is not None:
        obj["data"] = dict(data)
    if binary_data is not None:
        obj["binaryData"] = dict(binary_data)
    return obj


def _remember(conn: ClusterConnection, namespace: str, name: str, obj: KubeObject | None) -> SeenConfigMap:
    seen = SeenConfigMap(obj["metadata"]["resourceVersion"], dict(obj.get("data") or {})) if obj is not None \
        else SeenConfigMap("", None)
    conn.session.config_maps[(namespace, name)] = seen
    return seen


def remembered_config_map(conn: ClusterConnection, name: str, namespace: str) -> tuple[bool, ConfigMapData | None]:
    """What this process last read or wrote of ConfigMap ``namespace/name``: (known, data; None: absent).

    Only a hint: a decision based on it must end in a compare-and-swap (:func:`write_config_map`)
    or be confirmed by a read."""
    seen = conn.session.config_maps.get((namespace, name))
    if seen is None:
        return False, None
    return True, None if seen.data is None else dict(seen.data)


async def read_config_map(conn: ClusterConnection, name: str, namespace: str) -> KubeObject | None:
    """A fresh read of ConfigMap ``namespace/name`` (remembered for the next :func:`write_config_map`)."""
    live = await get_record(conn, "v1", "ConfigMap", name, namespace)
    _remember(conn, namespace, name, live)
    return live


Change = Callable[[ConfigMapData | None], Mapping[str, str] | None]


@dataclass(frozen=True)
class Written:
    """What :func:`write_config_map` did; true when it wrote."""

    wrote: bool
    unread: bool
    """The write went against the version this process remembered, with no read: the server confirmed
    that nobody else wrote this ConfigMap since this process last read or wrote it."""

    def __bool__(self) -> bool:
        return self.wrote


async def write_config_map(conn: ClusterConnection, name: str, namespace: str, *, labels: Mapping[str, str],
                           change: Change) -> Written:
    """Read-modify-write ConfigMap ``namespace/name`` by compare-and-swap; see :class:`Written`.

    ``change(data)`` gets the current data (None: no such ConfigMap) and returns the new data,
    or None when nothing needs writing; it may raise to refuse (a fence that saw a newer token).
    It is first asked about the data this process last read or wrote, and the write goes against
    that version; when the server has moved on (a conflict), or when ``change`` decided on
    remembered data to write nothing, the ConfigMap is read afresh and ``change`` asked again.
    So a write costs one round trip when nobody else wrote meanwhile, and no decision is ever
    based on data the server has since replaced.
    """
    memory = conn.session
    seen = memory.config_maps.get((namespace, name))
    fresh = False
    while True:
        if seen is None:
            seen = _remember(conn, namespace, name, await get_record(conn, "v1", "ConfigMap", name, namespace))
            fresh = True
        wanted = change(None if seen.data is None else dict(seen.data))
        if wanted is None:
            if fresh:
                return Written(False, False)
            seen = None  # decided on remembered data: confirm with a read
            continue
        obj = config_map(name, namespace, labels, data=wanted, resource_version=seen.version)
        try:
            written = await (replace_record(conn, obj) if seen.version else create_record(conn, obj))
        except StaleWrite:
            memory.config_maps.pop((namespace, name), None)
            seen = None
            continue
        _remember(conn, namespace, name, written)
        return Written(True, not fresh)
