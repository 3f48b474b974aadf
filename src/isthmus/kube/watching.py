"""Keeping one kind of object in one namespace of one cluster in view: a LIST, then a watch from it.

:func:`watch_objects` runs until cancelled. It LISTs the objects (through the connection, so the
timeout and the breaker apply), hands them to ``on_sync``, and watches from the LIST's
``resourceVersion``, calling ``on_event(type, object)`` for every ADDED, MODIFIED or DELETED.

What can go wrong, and what it does:

- the server ends the watch (its ``timeoutSeconds``, jittered so many watches do not reconnect
  together): lightkube reconnects from the last version seen, on the same connection;
- nothing arrives for longer than that (a frozen server, a dead connection, or just a quiet
  namespace): the watch is dropped and the objects re-listed;
- the version is too old (410 Gone), or any error: LIST again, after an exponential backoff
  (with jitter, capped) when the error was not a 410, and on a new connection after a transport
  error. A re-LIST reports what changed while no watch was open as events, so no change is ever
  missed, only reported late.

Each watch holds the last LIST's objects and a client of its own
(:meth:`~isthmus.kube.ClusterConnection.stream_client`: watch streams never share the connection's
HTTP/2 client). The LIST goes through the connection as any call does.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from ..settings import WatchSettings
from .connection import ClusterConnection, translate
from .errors import Gone
from .fetching import listing
from .objects import KubeObject, resource_class

__all__ = ["EventHandler", "WatchSettings", "watch_objects"]

log = logging.getLogger(__name__)

EventHandler = Callable[[str, KubeObject], None]
"""``on_event(type, object)``: ADDED, MODIFIED or DELETED; must be quick (it runs in the watch's task)."""


def _name(obj: KubeObject) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _version(obj: KubeObject) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


async def watch_objects(conn: ClusterConnection, api_version: str, kind: str, namespace: str | None,
                        labels: Mapping[str, str | None] | None, on_event: EventHandler, *,
                        on_sync: Callable[[Sequence[KubeObject]], None] | None = None,
                        settings: WatchSettings | None = None) -> None:
    """Report every change of the matching objects until cancelled; see the module docstring."""
    opts = settings or WatchSettings()
    res = resource_class(api_version, kind)
    where = f"{conn.name}: {kind} in {namespace or 'all namespaces'}"
    known: dict[str, KubeObject] | None = None
    delay = opts.backoff_initial
    client: AsyncClient | None = None
    try:
        while True:
            if client is None:
                client = conn.stream_client()
            known, delay, broken = await _session(conn, client, res, api_version, kind, namespace, labels,
                                                  on_event, on_sync, opts, where, known, delay)
            if broken:  # the connection may be dead: start the next session on a new one
                await _close(client)
                client = None
    finally:
        if client is not None:
            await _close(client)


async def _close(client: AsyncClient) -> None:
    try:
        async with asyncio.timeout(2):
            await client.close()
    except Exception:  # closing a dead connection: nothing left to do
        log.debug("closing a watch client failed", exc_info=True)


async def _session(conn: ClusterConnection, client: AsyncClient, res: Any, api_version: str, kind: str,
                   namespace: str | None,
                   labels: Mapping[str, str | None] | None, on_event: EventHandler,
                   on_sync: Callable[[Sequence[KubeObject]], None] | None, opts: WatchSettings, where: str,
                   known: dict[str, KubeObject] | None, delay: float
                   ) -> tuple[dict[str, KubeObject] | None, float, bool]:
    """One LIST and the watch after it; returns what is known, the next backoff, and whether to use a new client."""
    try:
        version, items = await listing(conn, api_version, kind, namespace=namespace, labels=labels)
        current = {_name(o): o for o in items}
        if on_sync is not None:
            on_sync(items)
        if known is not None:  # what happened while no watch was open
            for name, obj in known.items():
                if name not in current:
                    on_event("DELETED", obj)
            for name, obj in current.items():
                before = known.get(name)
                if before is None:
                    on_event("ADDED", obj)
                elif _version(before) != _version(obj):
                    on_event("MODIFIED", obj)
        known = current
        delay = opts.backoff_initial
        timeout = opts.server_timeout * random.uniform(0.5, 1.0)
        selector: Any = dict(labels) if labels is not None else None
        stream: Any = client.watch(res, namespace=namespace, labels=selector, server_timeout=int(timeout),
                                   resource_version=version)
        try:
            while True:
                async with asyncio.timeout(timeout + opts.silence):
                    op, item = await anext(stream)
                obj = dict(item.to_dict())
                if op == "DELETED":
                    known.pop(_name(obj), None)
                elif op in ("ADDED", "MODIFIED"):
                    known[_name(obj)] = obj
                else:
                    continue  # BOOKMARK and the like
                on_event(op, obj)
        finally:
            await stream.aclose()
    except asyncio.CancelledError:
        raise
    except (TimeoutError, StopAsyncIteration):
        log.debug("watch of %s went quiet; listing again", where)
        return known, delay, False  # usually just a quiet namespace: the connection is fine
    except ApiError as exc:  # the watch stream's own answer (the LIST's came translated, through the connection)
        if isinstance(translate(conn.name, exc, "watch", where), Gone):
            log.debug("watch of %s: version too old; listing again", where)
            return known, delay, False
        log.debug("watch of %s failed: %s", where, exc)
        broken = False
    except Exception as exc:  # transport errors, an unreachable cluster, a closed client: back off, list again
        log.debug("watch of %s broke: %s: %s", where, type(exc).__name__, exc)
        broken = True
    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
    return known, min(delay * 2, opts.backoff_max), broken
