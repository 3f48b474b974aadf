"""Settings of talking to clusters: one call's timeout, budget and breaker; one watch's timings.

Plain frozen dataclasses, below every package that uses them (as kopf's ``configs`` sit below its
``clients``): :mod:`isthmus.kube` runs connections and watches by them, and the operator's
settings tree (:mod:`isthmus.operator.settings`) holds them as they are, so nothing copies their
fields from one bag into another. Owns: the fields and their defaults. Must not: import anything
that does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConnectionSettings", "WatchSettings"]


@dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    timeout: float = 10.0
    """Seconds a single call may take before the cluster counts as not answering."""
    max_in_flight: int = 8
    """Request budget: concurrent calls to one cluster."""
    breaker_threshold: int = 2
    """Failed calls in a row that open the cluster's circuit (its calls then fail at once)."""
    breaker_cooldown: float = 10.0
    """Seconds an open circuit waits before it lets one call try again."""


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    server_timeout: float = 300.0
    """Seconds the server keeps one watch request open (jittered down by up to a half, so many watches started
    together do not all re-list together)."""
    silence: float = 30.0
    """Seconds beyond ``server_timeout`` without any event before the watch is dropped and re-listed."""
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
