"""The scrape configuration we render: pure text, no server."""

from __future__ import annotations

import pytest
import yaml

from isthmus.lab.prometheus import ScrapeJob, render_prometheus_config


def test_interval_and_timeout_match_so_prometheus_accepts_a_1s_interval() -> None:
    doc = yaml.safe_load(render_prometheus_config([ScrapeJob("a", ("127.0.0.1:9",))], scrape_interval_s=1))
    assert doc["global"]["scrape_interval"] == doc["global"]["scrape_timeout"] == "1000ms"
    assert doc["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9"]}]


def test_job_names_are_unique() -> None:
    job = ScrapeJob("a", ("127.0.0.1:9",))
    with pytest.raises(ValueError, match="unique"):
        render_prometheus_config([job, job])


@pytest.mark.parametrize("target", ["127.0.0.1", ":80", "host:port"])
def test_targets_are_host_port(target: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        ScrapeJob("a", (target,))
