"""The guard's per-request figures as plain numbers (no locks, no label look-ups).

Owns: :class:`Counters` (decisions by verdict and action, upstream latency per bucket, bytes
each way) and :data:`LATENCY_BUCKETS`. A :class:`~isthmus.cqlguard.session.GuardSession`
adds to them as it decides; :class:`~isthmus.cqlguard.metrics.GuardMetrics` is a
``Counters`` that Prometheus reads at scrape time. Must not: import I/O modules.
"""

from __future__ import annotations

__all__ = ["LATENCY_BUCKETS", "Counters"]

#: Seconds; CQL round trips on a LAN run from ~0.2 ms to seconds for big scans.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counters:
    """Plain numbers the event loop adds to; readers copy them (atomic under the GIL)."""

    def __init__(self) -> None:
        #: Decisions by (verdict, action).
        self.requests: dict[tuple[str, str], int] = {}
        #: Non-cumulative counts per bucket of LATENCY_BUCKETS, then the +Inf bucket.
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.client_in = 0
        self.upstream_in = 0
        self.client_out = 0
        self.upstream_out = 0

    def count_request(self, verdict: str, action: str) -> None:
        key = (verdict, action)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def requests_total(self, verdict: str | None = None) -> int:
        """Decisions counted so far (all, or those with ``verdict``)."""
        return sum(n for (v, _), n in self.requests.copy().items() if verdict is None or v == verdict)
