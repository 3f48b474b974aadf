"""The flows file, the Prometheus metrics (scraped by the lab's real Prometheus) and what the
clients saw agree; the ``flows`` command filters them."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
from typer.testing import CliRunner

from isthmus.cqlguard.cli import guard_app
from isthmus.lab.prometheus import PrometheusServer, ScrapeJob

from .conftest import RunningGuard

pytestmark = [pytest.mark.cassandra, pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(300)]

ALLOWED, DENIED = 7, 3


def test_flows_metrics_and_clients_agree(guard: RunningGuard, prometheus: PrometheusServer) -> None:
    from cassandra import Unauthorized

    session = guard.connect(protocol_version=5, compression="lz4")
    seen: Counter[str] = Counter()
    for i in range(ALLOWED):
        session.execute("SELECT v FROM guardks.kv WHERE k = %s", (i,))
        seen["ALLOWED"] += 1
    for i in range(DENIED):
        with pytest.raises(Unauthorized):
            session.execute("INSERT INTO guardks.kv (k, v) VALUES (%s, 'x')", (900 + i,))
        seen["DENIED"] += 1

    target = str(guard.server.metrics_address)
    with prometheus.scraping(ScrapeJob("cqlguard", (target,))):
        deadline = time.monotonic() + 60
        while True:
            flows = Counter(f["verdict"] for f in guard.flows())
            samples = prometheus.query("sum by (verdict) (isthmus_cqlguard_requests_total{job='cqlguard'})")
            scraped = {s.metric["verdict"].upper(): int(s.value) for s in samples}
            if scraped == dict(flows) and flows["DENIED"] == DENIED:
                break
            assert time.monotonic() < deadline, f"flows {dict(flows)} != prometheus {scraped}"
            time.sleep(0.5)
        # The driver's own queries (system tables) are allowed too; ours are all there.
        select_kv = [
            f for f in guard.flows()
            if (f["l7"]["action"], f["l7"]["keyspace"], f["l7"]["table"]) == ("select", "guardks", "kv")
        ]
        assert len(select_kv) == seen["ALLOWED"]
        assert all(f["upstream_latency_ms"] is not None and f["upstream_latency_ms"] >= 0 for f in select_kv)
        assert flows["DENIED"] == seen["DENIED"]
        hist = prometheus.query("sum(isthmus_cqlguard_upstream_latency_seconds_count{job='cqlguard'})")
        assert int(hist[0].value) == flows["ALLOWED"]
        assert prometheus.query("isthmus_cqlguard_open_connections{job='cqlguard'}")[0].value >= 1
        sent = prometheus.query("isthmus_cqlguard_sent_bytes_total{job='cqlguard',peer='upstream'}")
        assert sent[0].value > 0

    runner = CliRunner()
    result = runner.invoke(guard_app, ["flows", "--verdict", "DENIED", "--table", "guardks.kv", str(guard.flows_path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == DENIED
    assert {line["l7"]["action"] for line in lines} == {"insert"}
    assert all(line["source"]["ip"] == "127.0.0.1" and line["rule"] is None for line in lines)


def test_flow_record_fields(guard: RunningGuard) -> None:
    session: Any = guard.connect(protocol_version=4)
    session.execute("SELECT v FROM guardks.kv WHERE k = 1")
    [flow] = [f for f in guard.flows() if f["l7"]["table"] == "kv"]
    assert flow["verdict"] == "ALLOWED"
    assert flow["rule"] == "loopback-app"
    assert flow["destination"] == {"ip": guard.upstream.host, "port": guard.upstream.port}
    assert flow["l7"]["type"] == "cql" and flow["l7"]["kind"] == "query"
    assert flow["time"].endswith("Z")
    assert flow["summary"] == "ALLOWED select guardks.kv"
