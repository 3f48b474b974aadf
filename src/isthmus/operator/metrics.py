"""The operator's Prometheus metrics and its /metrics, /healthz and /readyz endpoints.

Names follow Prometheus conventions (``isthmus_operator_`` prefix, base units, ``_total`` for
counters). Gauges that describe current state (member reachability, the Lease held, queue
depth) are read at scrape time from the objects that own that state, so they cannot go stale.

    isthmus_operator_reconcile_duration_seconds{trigger,result}   histogram
    isthmus_operator_rollout_steps_total{cluster,outcome}         counter (objects per apply outcome)
    isthmus_operator_member_reachable{member}                     gauge 1/0 (Unknown counts 0)
    isthmus_operator_lock_held{lock}                              gauge 1 while this replica leads
    isthmus_operator_queue_depth                                  gauge reconciles waiting or running
    isthmus_operator_members                                      gauge registered members
    isthmus_operator_member_watches                               gauge watches open on members' objects
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .members import MemberRegistry

__all__ = ["OperatorMetrics", "Probes", "serve"]

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _StateCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        reach = GaugeMetricFamily("isthmus_operator_member_reachable",
                                  "1 if the member cluster answered its last call, else 0", labels=["member"])
        members = self._m.members
        count = 0
        if members is not None:
            for state in members:
                reach.add_metric([state.name], 1.0 if state.status == "True" else 0.0)
                count += 1
        yield reach
        yield GaugeMetricFamily("isthmus_operator_members", "Registered member clusters", value=count)
        lock = GaugeMetricFamily("isthmus_operator_lock_held", "1 while this replica holds the lock", labels=["lock"])
        lock.add_metric(["leader"], 1.0 if self._m.is_leader() else 0.0)
        yield lock
        yield GaugeMetricFamily("isthmus_operator_queue_depth", "Reconciles waiting for or holding an object's turn",
                                value=float(self._m.queue_depth))
        yield GaugeMetricFamily("isthmus_operator_member_watches",
                                "Watches open on the objects apps own in member clusters (one per member and kind)",
                                value=float(self._m.watches()))


@dataclass
class OperatorMetrics:
    """One registry per operator process (tests make several without clashing)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    members: MemberRegistry | None = None
    is_leader: Callable[[], bool] = lambda: False
    queue_depth: int = 0
    watches: Callable[[], int] = lambda: 0

    def __post_init__(self) -> None:
        self.reconcile_duration = Histogram(
            "isthmus_operator_reconcile_duration_seconds", "Time one reconcile of a CassandraCluster took",
            ["trigger", "result"], registry=self.registry, buckets=_BUCKETS)
        self.rollout_steps = Counter(
            "isthmus_operator_rollout_steps", "Objects handled by the operator's applies, by cluster and outcome",
            ["cluster", "outcome"], registry=self.registry)
        self.registry.register(_StateCollector(self))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Probes:
    """What /healthz and /readyz answer: alive while the loop turns; ready once members are listed."""

    ready: bool = False
    detail: Callable[[], str] = lambda: ""


async def serve(metrics: OperatorMetrics, health: Probes, *, host: str, port: int) -> web.AppRunner:
    """Start the HTTP endpoints on ``host:port``; the caller cleans the returned runner up."""

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if health.ready:
            return web.Response(text=f"ready {health.detail()}\n")
        return web.Response(status=503, text=f"not ready {health.detail()}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
