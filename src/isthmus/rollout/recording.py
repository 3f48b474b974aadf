"""Writing the rollout state during a run: grouped writes, retried while the control plane is silent.

A step that rolls no pods is recorded with the next write (before the next disruptive step's
gates, or at the end): re-running it after a crash writes nothing. A disruptive step waits until
its Running and then its Done mark are written, so a killed rollout always leaves behind exactly
which disruptive steps are done. Writes asked for while one is in flight go out as one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ..kube import ClusterUnreachable
from .clock import SYSTEM, Clock
from .progress import ProgressStore, RolloutState
from .results import EngineStats

__all__ = ["StateWriter"]


class StateWriter:
    """Writes the rollout state, grouping the writes asked for while one is in flight.

    ``save(wait=False)`` records that the state changed and makes sure a write will cover it;
    ``save()`` also waits until one has. Every change made before a write starts is in it, so
    ten lanes finishing at once cost one or two writes. A write the control plane does not answer
    is retried every ``poll`` seconds (the rollout says so); a refusal (a newer holder's token) is
    kept in ``error`` and raised by the next waiting save.
    """

    def __init__(self, store: ProgressStore, state: RolloutState, progress: Callable[[str, str], None],
                 stats: EngineStats, poll: float, clock: Clock = SYSTEM) -> None:
        self.store, self.state, self.progress, self.stats, self.poll = store, state, progress, stats, poll
        self.clock = clock
        self.error: BaseException | None = None
        self._changes = 0
        self._written = 0
        self._lock = asyncio.Lock()
        self._drainer: asyncio.Task[None] | None = None

    @property
    def writing(self) -> bool:
        """A background write is under way."""
        return self._drainer is not None

    def changed(self) -> None:
        """The state changed, but need not be written until the next save."""
        self._changes += 1

    def write_pending(self) -> None:
        """Start writing, in the background, whatever changed since the last write (nothing if nothing did)."""
        if self._written < self._changes and self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())

    async def save(self, *, wait: bool = True) -> None:
        self._changes += 1
        if wait:
            await self._write_until(self._changes)
        elif self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._written < self._changes and self.error is None:
                await self._write_until(self._changes)
        except Exception:  # kept in self.error, raised by the next waiting save
            pass
        finally:
            self._drainer = None  # no await since the last check: a later change starts a new drainer

    async def _write_until(self, target: int) -> None:
        async with self._lock:
            if self.error is not None:
                raise self.error
            if self._written >= target:
                return
            upto = self._changes  # every change made so far goes into this write
            started = self.clock.monotonic()
            try:
                while True:
                    try:
                        await self.store.save(self.state)
                        break
                    except ClusterUnreachable as exc:
                        self.progress(self.store.conn.name, f"paused: cannot write rollout state ({exc.reason}); "
                                                            "retrying")
                        await self.clock.sleep(self.poll)
            except Exception as exc:
                self.error = exc
                raise
            self._written = max(self._written, upto)
            self.stats.state_writes += 1
            self.stats.state_seconds += self.clock.monotonic() - started

    async def flush(self) -> None:
        """Wait until every change so far is written (raising a refusal)."""
        if self._written < self._changes or self.error is not None:
            await self._write_until(self._changes)

    async def close(self) -> None:
        if self._drainer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
