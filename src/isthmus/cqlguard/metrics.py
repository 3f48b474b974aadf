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
========================================================  =======================================
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["LATENCY_BUCKETS", "GuardMetrics", "serve_metrics"]

#: Seconds; CQL round trips on a LAN run from ~0.2 ms to seconds for big scans.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PREFIX = "isthmus_cqlguard"


class GuardMetrics:
    """The guard's instruments; label values are pre-bound for the hot path where possible."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{_PREFIX}_requests", "CQL requests decided by the guard", ("verdict", "action"), registry=r
        )
        self.upstream_latency = Histogram(
            f"{_PREFIX}_upstream_latency_seconds",
            "Time from forwarding a request to the upstream answering it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.open_connections = Gauge(f"{_PREFIX}_open_connections", "Client connections open now", registry=r)
        self.connections = Counter(f"{_PREFIX}_connections", "Client connections accepted", registry=r)
        self.rejected_connections = Counter(
            f"{_PREFIX}_rejected_connections", "Client connections closed at once", ("reason",), registry=r
        )
        self.received_bytes = Counter(f"{_PREFIX}_received_bytes", "Bytes read", ("peer",), registry=r)
        self.sent_bytes = Counter(f"{_PREFIX}_sent_bytes", "Bytes written", ("peer",), registry=r)
        self.protocol_errors = Counter(
            f"{_PREFIX}_protocol_errors", "Malformed input that closed a connection", ("peer",), registry=r
        )
        self.timeouts = Counter(f"{_PREFIX}_timeouts", "Connections closed by a timeout", ("kind",), registry=r)
        self.policy_reloads = Counter(f"{_PREFIX}_policy_reloads", "Policy file reloads", ("result",), registry=r)
        # Pre-bound children: the pump calls these per read/write.
        self.client_in = self.received_bytes.labels(peer="client")
        self.upstream_in = self.received_bytes.labels(peer="upstream")
        self.client_out = self.sent_bytes.labels(peer="client")
        self.upstream_out = self.sent_bytes.labels(peer="upstream")
        for peer in ("client", "upstream"):
            self.protocol_errors.labels(peer=peer)
        for kind in ("idle", "slow_client"):
            self.timeouts.labels(kind=kind)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result=result)
        self._request_children: dict[tuple[str, str], Any] = {}

    def count_request(self, verdict: str, action: str) -> None:
        key = (verdict, action)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(verdict=verdict, action=action)
        child.inc()


def serve_metrics(metrics: GuardMetrics, host: str, port: int) -> tuple[Any, Any]:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns ``(server, thread)``.

    Stop with ``server.shutdown(); server.server_close()``. Port 0 picks a free port
    (``server.server_address[1]``).
    """
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server, thread
