"""Prometheus metrics of one guard, in their own registry, served on their own port.

Owns: :class:`GuardMetrics` (names follow Prometheus conventions: ``isthmus_cqlguard_``
prefix, base units, ``_total`` counters, bounded label values) and :func:`serve_metrics`.
Must not: decide anything. A private :class:`~prometheus_client.CollectorRegistry` per guard
lets several guards (tests, benchmarks) live in one process.

========================================================  =======================================
``isthmus_cqlguard_requests_total{verdict,action}``        decisions (verdict: allowed, denied,
                                                          error; action: select, ..., batch,
                                                          unknown)
``isthmus_cqlguard_upstream_latency_seconds``              request forwarded -> server answered
``isthmus_cqlguard_open_connections``                      client connections open now
``isthmus_cqlguard_connections_total``                     client connections accepted
``isthmus_cqlguard_rejected_connections_total{reason}``    refused at accept (limit) or upstream down
``isthmus_cqlguard_received_bytes_total{peer}``            bytes read from client / upstream
``isthmus_cqlguard_sent_bytes_total{peer}``                bytes written to client / upstream
``isthmus_cqlguard_protocol_errors_total{peer}``           malformed input that closed a connection
``isthmus_cqlguard_timeouts_total{kind}``                  idle / slow_client closes
``isthmus_cqlguard_policy_reloads_total{result}``          success / failure
``isthmus_cqlguard_policy_checks_total``                   looks at the policy file (changed or not)
========================================================  =======================================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from isthmus.cqlguard.counters import LATENCY_BUCKETS, Counters

__all__ = ["LATENCY_BUCKETS", "GuardMetrics", "serve_metrics"]
_PREFIX = "isthmus_cqlguard"


class GuardMetrics(Counters):
    """The guard's instruments.

    Per-request figures (decisions, upstream latency, bytes) are the plain numbers of
    :class:`~isthmus.cqlguard.counters.Counters`, which the sessions add to; :class:`_HotCollector` turns them into
    samples when Prometheus scrapes (from the metrics thread: reading an int or copying a dict
    is atomic under the GIL). Rare events (connections, errors, reloads) are ordinary
    ``prometheus_client`` instruments.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_connections = Gauge(f"{_PREFIX}_open_connections", "Client connections open now", registry=r)
        self.connections = Counter(f"{_PREFIX}_connections", "Client connections accepted", registry=r)
        self.rejected_connections = Counter(
            f"{_PREFIX}_rejected_connections", "Client connections closed at once", ("reason",), registry=r
        )
        self.protocol_errors = Counter(
            f"{_PREFIX}_protocol_errors", "Malformed input that closed a connection", ("peer",), registry=r
        )
        self.timeouts = Counter(f"{_PREFIX}_timeouts", "Connections closed by a timeout", ("kind",), registry=r)
        self.policy_reloads = Counter(f"{_PREFIX}_policy_reloads", "Policy file reloads", ("result",), registry=r)
        self.policy_checks = Counter(f"{_PREFIX}_policy_checks", "Looks at the policy file, changed or not", registry=r)
        for peer in ("client", "upstream"):
            self.protocol_errors.labels(peer=peer)
        for kind in ("idle", "slow_client"):
            self.timeouts.labels(kind=kind)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result=result)
        r.register(_HotCollector(self))


class _HotCollector(Collector):
    """Samples of :class:`GuardMetrics`' plain numbers, built at scrape time."""

    def __init__(self, metrics: GuardMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            f"{_PREFIX}_requests", "CQL requests decided by the guard", labels=("verdict", "action")
        )
        for (verdict, action), n in sorted(m.requests.copy().items()):
            requests.add_metric((verdict, action), n)
        yield requests
        counts = list(m.latency_counts)
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            total += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
        yield HistogramMetricFamily(
            f"{_PREFIX}_upstream_latency_seconds",
            "Time from forwarding a request to the upstream answering it",
            buckets=buckets,
            sum_value=m.latency_sum,
        )
        received = CounterMetricFamily(f"{_PREFIX}_received_bytes", "Bytes read", labels=("peer",))
        received.add_metric(("client",), m.client_in)
        received.add_metric(("upstream",), m.upstream_in)
        yield received
        sent = CounterMetricFamily(f"{_PREFIX}_sent_bytes", "Bytes written", labels=("peer",))
        sent.add_metric(("client",), m.client_out)
        sent.add_metric(("upstream",), m.upstream_out)
        yield sent


def serve_metrics(metrics: GuardMetrics, host: str, port: int) -> tuple[Any, Any]:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns ``(server, thread)``.

    Stop with ``server.shutdown(); server.server_close()``. Port 0 picks a free port
    (``server.server_address[1]``).
    """
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, thread
