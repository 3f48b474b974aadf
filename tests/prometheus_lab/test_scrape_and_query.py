"""Real Prometheus scrapes a real loopback target, and the query API returns its value."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from isthmus.lab.processes import free_ports
from isthmus.lab.prometheus import PrometheusLabError, PrometheusServer, ScrapeJob

pytestmark = pytest.mark.prometheus




@pytest.fixture
def gauge_target() -> Iterator[tuple[str, Gauge]]:
    """A tiny /metrics endpoint on loopback with one gauge; yields ``host:port`` and the gauge."""
    registry = CollectorRegistry()
    gauge = Gauge("isthmus_lab_probe", "A value the test sets", registry=registry)
    port = free_ports(1)[0]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_ready_and_answers_queries(prometheus: PrometheusServer) -> None:
    [sample] = prometheus.query("vector(3)")
    assert sample.value == 3.0


def test_scraped_gauge_value_comes_back_from_the_query_api(
    prometheus: PrometheusServer, gauge_target: tuple[str, Gauge]
) -> None:
    target, gauge = gauge_target
    gauge.set(42.5)
    with prometheus.scraping(ScrapeJob("probe", (target,), labels=(("lab", "yes"),))):
        [sample] = prometheus.wait_for('isthmus_lab_probe{job="probe"}')
        assert sample.value == 42.5
        assert sample.metric["instance"] == target
        assert sample.metric["lab"] == "yes"
        gauge.set(7)
        prometheus.wait_for('isthmus_lab_probe{job="probe"}', until=lambda s: [x.value for x in s] == [7.0])
    assert all(job.name != "probe" for job in prometheus.jobs)


def test_a_bad_query_is_a_clear_error(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusLabError, match="rejected"):
        prometheus.query("sum(")
