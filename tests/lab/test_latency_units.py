"""Distance in the lab, without a lab: values, toxics, profiles and the CLI's error lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from isthmus.lab.cli import lab_app
from isthmus.lab.errors import LabError
from isthmus.lab.latency import RTT_PROFILES, Link, parse_bandwidth, parse_duration_ms, rtt_profile

runner = CliRunner()


@pytest.mark.parametrize(("text", "ms"), [("80ms", 80), ("0", 0), ("0.25s", 250), ("2s", 2000), (" 7 ", 7)])
def test_durations_parse_to_milliseconds(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["80 mins", "-5ms", "fast", ""])
def test_a_bad_duration_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="write it like 80ms"):
        parse_duration_ms(text, what="--rtt")


@pytest.mark.parametrize(("text", "kb"), [("500KB/s", 500), ("2MB/s", 2000), ("8Mbit/s", 1000), ("1GB/s", 1_000_000)])
def test_bandwidths_parse_to_toxiproxy_kb_per_second(text: str, kb: int) -> None:
    assert parse_bandwidth(text) == kb


def test_a_bad_bandwidth_says_how_to_write_one() -> None:
    with pytest.raises(ValueError, match="500KB/s"):
        parse_bandwidth("fast")
    with pytest.raises(ValueError, match="smallest rate"):
        parse_bandwidth("1kbit/s")


def test_a_round_trip_is_split_over_both_directions() -> None:
    toxics = Link(rtt_ms=81, jitter_ms=5).toxics()
    assert toxics["rtt-upstream"]["attributes"] == {"latency": 40, "jitter": 2}
    assert toxics["rtt-downstream"]["attributes"] == {"latency": 41, "jitter": 3}
    assert {t["stream"] for t in toxics.values()} == {"upstream", "downstream"}
    assert all(t["type"] == "latency" for t in toxics.values())


def test_a_partition_accepts_and_never_answers() -> None:
    toxics = Link(partitioned=True).toxics()
    assert sorted(toxics) == ["partition-downstream", "partition-upstream"]
    assert all(t["type"] == "timeout" and t["attributes"] == {"timeout": 0} for t in toxics.values())


def test_a_direct_link_has_no_toxics() -> None:
    assert Link().toxics() == {}
    assert Link().direct and str(Link()) == "direct"


@pytest.mark.parametrize("link", [Link(), Link(rtt_ms=80), Link(rtt_ms=201, jitter_ms=9),
                                  Link(bandwidth_kbps=1000), Link(rtt_ms=20, partitioned=True),
                                  Link(rtt_ms=3, jitter_ms=1, bandwidth_kbps=7, partitioned=True)])
def test_a_link_reads_back_from_its_toxics(link: Link) -> None:
    assert Link.from_toxics(list(link.toxics().values())) == link


def test_jitter_larger_than_the_round_trip_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the round trip"):
        Link(rtt_ms=10, jitter_ms=20)


def test_profiles_span_real_distances_and_name_their_source() -> None:
    for profile in RTT_PROFILES.values():
        rtts = [profile.rtt_ms(i) for i in range(10)]
        assert len(set(profile.regions)) == 10 and rtts == sorted(rtts)
        assert min(rtts) >= 10 and max(rtts) <= 250
        assert "learn.microsoft.com" in profile.source
    assert rtt_profile("azure-east-us").rtt_ms(10) == rtt_profile("azure-east-us").rtt_ms(0)  # cycles


def test_an_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(LabError, match="azure-east-us"):
        rtt_profile("mars")


def test_up_with_an_unknown_profile_fails_before_starting(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["up", "--rtt-profile", "mars", "--state-dir", str(tmp_path / "lab")])
    assert result.exit_code == 2
    assert "no RTT profile 'mars'" in result.output
    assert not (tmp_path / "lab").exists()


def test_latency_on_a_missing_lab_is_a_user_error(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["fault", "latency", "c1", "--rtt", "80ms", "--state-dir", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "isthmus lab up" in result.output


def test_latency_needs_something_to_change(tmp_path: Path) -> None:
    result = runner.invoke(lab_app, ["fault", "latency", "c1", "--state-dir", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "give --rtt, --jitter, --bandwidth or --clear" in result.output
    result = runner.invoke(lab_app, ["fault", "latency", "c1", "--clear", "--rtt", "5ms",
                                     "--state-dir", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--clear removes everything" in result.output


def test_fault_help_lists_latency_and_partition() -> None:
    result = runner.invoke(lab_app, ["fault", "--help"])
    assert result.exit_code == 0
    assert "latency" in result.output and "partition" in result.output
