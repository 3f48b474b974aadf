"""The drift checks that watches ask for: which members of an app are suspect, and when their check starts.

The watches on the members' objects (:mod:`.watches`) report each change; one made by someone else makes
its member a suspect of its app, and ``debounce`` later -- never sooner than :data:`MIN_CHECK_INTERVAL`
after the app's last check began, so a controller that keeps touching an object costs a bounded number
of checks -- the reconciler is asked to check the suspects (``start``). A StatefulSet event of any kind
marks the app's status dirty. Timers run on the running loop; this module makes no cluster calls itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from ..settings import WatchSettings
from .members import MemberRegistry
from .memory import Memory, Parsed
from .watches import AppWatches, Change, ChangeKind, targets_for

__all__ = ["MIN_CHECK_INTERVAL", "DriftChecks"]

log = logging.getLogger(__name__)

MIN_CHECK_INTERVAL = 2.0
"""Seconds between the starts of two drift checks that watches asked for."""


class DriftChecks:
    """Every app's watches and the drift checks they schedule. ``memory`` is the reconciler's, per app key;
    ``start(key)`` is called when a check of the app's suspects is due."""

    def __init__(self, memory: Mapping[str, Memory], members: MemberRegistry, start: Callable[[str], None], *,
                 debounce: float, settings: WatchSettings | None = None) -> None:
        self._memory = memory
        self._members = members
        self._start = start
        self._debounce = debounce
        self._watches = AppWatches(self._on_change, settings)

    def watch(self, key: str, parsed: Parsed) -> None:
        """Watch what app ``key`` owns in its members that have a connection (the others lose their watches)."""
        app = parsed.app
        connections = {}
        for name in app.member_clusters():
            state = self._members.state(name)
            if state is not None and state.connection is not None:
                connections[name] = state.connection
        self._watches.want(key, targets_for(app.metadata.name, app.namespace, parsed.kinds, connections))

    def _on_change(self, change: Change) -> None:
        memory = self._memory.get(change.key)
        if memory is None:
            return
        if change.kind == "StatefulSet":
            memory.dirty = True
        if change.change is not ChangeKind.FOREIGN:
            return
        log.info("%s: %s %s in %s %s by someone else; checking for drift", change.key, change.kind, change.name,
                 change.cluster, "deleted" if change.event == "DELETED" else "changed")
        memory.suspects.add(change.cluster)
        self.schedule(change.key)

    def schedule(self, key: str) -> None:
        """A drift check of the suspect members, ``debounce`` from now, and never sooner than
        :data:`MIN_CHECK_INTERVAL` after the last one began."""
        memory = self._memory.get(key)
        if memory is None or memory.check is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(self._debounce, memory.last_check + MIN_CHECK_INTERVAL - time.monotonic())
        memory.check = loop.call_later(delay, self._due, key)

    def _due(self, key: str) -> None:
        memory = self._memory.get(key)
        if memory is None:
            return
        memory.check = None
        memory.last_check = time.monotonic()
        if memory.suspects:
            self._start(key)

    def count(self) -> int:
        """How many watches are open on members' objects, for every app."""
        return self._watches.count()

    async def drop(self, key: str) -> None:
        """Forget app ``key``: its pending check and its watches (before its objects are deleted: those
        deletions are ours, not drift)."""
        memory = self._memory.get(key)
        if memory is not None and memory.check is not None:
            memory.check.cancel()
            memory.check = None
        await self._watches.drop(key)

    async def close(self) -> None:
        """Stop every watch and pending check (the process is stopping or no longer leads)."""
        for memory in self._memory.values():
            if memory.check is not None:
                memory.check.cancel()
                memory.check = None
        await self._watches.close()
