"""Watches on the objects each app owns in its member clusters, and what their events mean.

For every app and member cluster, one watch per kind of object the app has there (ConfigMap,
Secret, Service, ServiceAccount, StatefulSet, PodDisruptionBudget), in the app's namespace,
selected by the label ``isthmus.dev/app=<app>`` (:func:`isthmus.kube.watch_objects`: LIST, then
watch, re-LIST after a silence or an error with a capped backoff). The set of watches follows
the apps and the member registry: :meth:`AppWatches.want` is called with what each reconcile
found, and starts, keeps or stops watches to match (a rotated member's watches restart on its
new connection).

Each event is classified before the reconciler hears of it:

- *status*: the object's content did not change (a StatefulSet's status moved): the app's
  status may need refreshing, nothing else;
- *ours*: Isthmus wrote it last (field manager ``isthmus``);
- *foreign*: someone else did (another field manager wrote after us), or it was deleted: the
  app may have drifted, and a drift check is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..kube import ClusterConnection, KubeObject, WatchSettings, changed_by_others, fingerprint, watch_objects
from ..kube.inventory import APP_LABEL

__all__ = ["AppWatches", "Change", "ChangeKind", "Classifier", "WatchTarget"]

log = logging.getLogger(__name__)


class ChangeKind(StrEnum):
    STATUS = "status"
    OURS = "ours"
    FOREIGN = "foreign"


@dataclass(frozen=True)
class Change:
    key: str
    """The app (``namespace/name`` of its CassandraCluster)."""
    cluster: str
    kind: str
    name: str
    event: str
    change: ChangeKind


@dataclass(frozen=True)
class WatchTarget:
    """One watch: the objects of one kind that app ``app`` owns in ``namespace`` of ``cluster``."""

    cluster: str
    connection: ClusterConnection
    api_version: str
    kind: str
    namespace: str
    app: str


class Classifier:
    """Tells, object by object, what an event of one watch means (see the module docstring). Pure."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def sync(self, objects: Sequence[KubeObject]) -> None:
        """A LIST: the first one is the baseline; after a re-LIST, its differences arrive as events and are
        judged against what was seen before it."""
        if not self._seen:
            self._seen = {str(o["metadata"]["name"]): fingerprint(o) for o in objects}

    def classify(self, event: str, obj: KubeObject) -> ChangeKind:
        name = str(obj["metadata"]["name"])
        if event == "DELETED":
            self._seen.pop(name, None)
            return ChangeKind.FOREIGN
        mark = fingerprint(obj)
        if self._seen.get(name) == mark:
            return ChangeKind.STATUS
        self._seen[name] = mark
        return ChangeKind.FOREIGN if changed_by_others(obj) else ChangeKind.OURS


class _Watch:
    """One running watch, its classifier, and where its changes go."""

    def __init__(self, key: str, target: WatchTarget, notify: Callable[[Change], None],
                 settings: WatchSettings) -> None:
        self.key, self.target, self.notify = key, target, notify
        self.classifier = Classifier()
        self.task = asyncio.create_task(
            watch_objects(target.connection, target.api_version, target.kind, target.namespace,
                          {APP_LABEL: target.app}, self._event, on_sync=self.classifier.sync, settings=settings),
            name=f"watch {key} {target.cluster} {target.kind}")

    def _event(self, event: str, obj: KubeObject) -> None:
        kind = self.classifier.classify(event, obj)
        self.notify(Change(self.key, self.target.cluster, self.target.kind, str(obj["metadata"]["name"]), event,
                           kind))


class AppWatches:
    """Every app's watches; ``notify`` hears each classified change (it must be quick)."""

    def __init__(self, notify: Callable[[Change], None], settings: WatchSettings | None = None) -> None:
        self._notify = notify
        self._settings = settings or WatchSettings()
        self._watches: dict[str, dict[WatchTarget, _Watch]] = {}

    def want(self, key: str, targets: Iterable[WatchTarget]) -> None:
        """Make app ``key``'s watches exactly ``targets``."""
        wanted = set(targets)
        running = self._watches.setdefault(key, {})
        for target in [t for t in running if t not in wanted]:
            running.pop(target).task.cancel()
        for target in wanted - set(running):
            running[target] = _Watch(key, target, self._notify, self._settings)
            log.debug("watching %s in %s for %s", target.kind, target.cluster, key)

    def targets(self, key: str) -> frozenset[WatchTarget]:
        return frozenset(self._watches.get(key, {}))

    def count(self) -> int:
        return sum(len(w) for w in self._watches.values())

    async def drop(self, key: str) -> None:
        """Stop app ``key``'s watches (before its objects are deleted: those deletions are ours)."""
        watches = self._watches.pop(key, {})
        for watch in watches.values():
            watch.task.cancel()
        for watch in watches.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch.task

    async def close(self) -> None:
        for key in list(self._watches):
            await self.drop(key)


def targets_for(app: str, namespace: str, kinds: Mapping[str, frozenset[tuple[str, str]]],
                connections: Mapping[str, ClusterConnection]) -> list[WatchTarget]:
    """One target per member (that has a connection) and kind of object the app has there."""
    return [WatchTarget(cluster, connections[cluster], api_version, kind, namespace, app)
            for cluster, pairs in sorted(kinds.items()) if cluster in connections
            for api_version, kind in sorted(pairs)]


__all__ += ["targets_for"]
