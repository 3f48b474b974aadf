"""The rollout's sense of time: one small protocol, injected, so tests wait on conditions instead of seconds.

Everything in the rollout that waits (polls of gates and pods, retries, lock renewal) or stamps a time
(step records, event lines, the timeline) asks a :class:`Clock`. :data:`SYSTEM` is the real one.
:class:`FakeClock` does not move until a test moves it: ``sleep`` blocks until :meth:`FakeClock.advance`
passes its deadline, and :meth:`FakeClock.sleepers` says how many waiters there are, so a test can
tell "the engine is waiting" from "the engine is busy" without sleeping itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM", "Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (what step records and events show)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM: Clock = SystemClock()


class FakeClock:
    """A clock that moves only when told to; for tests.

    ``sleep(s)`` returns once :meth:`advance` has moved the clock ``s`` seconds past the moment it was
    called (``sleep(0)`` returns at once, after yielding to the loop). Wall time is monotonic time plus
    ``epoch``.
    """

    def __init__(self, start: float = 1000.0, *, epoch: float = 1_700_000_000.0) -> None:
        self.now = start
        self.epoch = epoch
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed: asyncio.Event | None = None

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.epoch + self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self.now + seconds, next(self._order), future))
        self._notify()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            self._notify()

    def sleepers(self) -> int:
        """How many ``sleep`` calls are waiting for the clock to move."""
        return sum(1 for _, _, f in self._waiting if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, waking every sleeper whose time came (in deadline order), and let
        them run until they are waiting again or done."""
        target = self.now + seconds
        while self._waiting and self._waiting[0][0] <= target:
            due, _, future = heapq.heappop(self._waiting)
            self.now = max(self.now, due)
            if not future.done():
                future.set_result(None)
                for _ in range(5):  # let the woken task run up to its next await
                    await asyncio.sleep(0)
        self.now = target
        await asyncio.sleep(0)

    async def until_sleeping(self, count: int = 1, *, within: float = 30.0) -> None:
        """Wait (in real time, at most ``within`` seconds) until at least ``count`` sleepers are waiting."""
        async with asyncio.timeout(within):
            while self.sleepers() < count:
                event = self._changed = self._changed or asyncio.Event()
                await event.wait()
                if self._changed is event:
                    self._changed = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
