"""A per-cluster circuit breaker: stop hammering a cluster that does not answer.

Closed: calls go through. After ``threshold`` consecutive failures it opens: calls fail at once
as Unknown, so other clusters are not slowed down by ours. After ``cooldown`` seconds it lets
one trial call through (half-open); success closes it, failure opens it again.
The clock is injectable so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass
class CircuitBreaker:
    threshold: int = 2
    cooldown: float = 10.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    last_error: str = ""
    _trial_out: bool = field(default=False, repr=False)

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self._trial_out, self.last_error = 0, None, False, ""

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self._trial_out = False
        if self.failures >= self.threshold or self.opened_at is not None:
            self.opened_at = self.clock()
