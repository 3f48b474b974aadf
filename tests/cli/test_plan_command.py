"""`isthmus plan` and `isthmus schema` through the real console script, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home())})


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    target = tmp_path / "fleet.yaml"
    shutil.copy(EXAMPLES / "fleet.yaml", target)
    return target


def test_plan_prints_a_table_and_writes_the_lock(fleet: Path) -> None:
    result = run("plan", "-f", fleet)
    assert result.returncode == 0, result.stderr
    for name in ("eu-west", "us-east", "ap-south", "route MTU", "1330"):
        assert name in result.stdout
    lock = yaml.safe_load(fleet.with_name("fleet.lock.yaml").read_text())
    assert set(lock["clusters"]) == {"eu-west", "us-east", "ap-south"}
    assert "Traceback" not in result.stderr


def test_plan_json_and_yaml_agree(fleet: Path) -> None:
    as_json = json.loads(run("plan", "-f", fleet, "-o", "json", "--no-write-lock").stdout)
    as_yaml = yaml.safe_load(run("plan", "-f", fleet, "-o", "yaml", "--no-write-lock").stdout)
    assert as_json == as_yaml
    assert [c["name"] for c in as_json["clusters"]] == ["eu-west", "us-east", "ap-south"]
    assert not fleet.with_name("fleet.lock.yaml").exists()


def test_report_and_map_are_written(fleet: Path, tmp_path: Path) -> None:
    result = run("plan", "-f", fleet, "--report", tmp_path / "r/plan.md", "--map", tmp_path / "m/plan.png")
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "r/plan.md").read_text()
    assert report.startswith("# Network plan for fleet `global`")
    assert "| eu-west |" in report and "WireGuard" in report
    png = (tmp_path / "m/plan.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_replanning_after_adding_a_cluster_keeps_existing_allocations(fleet: Path) -> None:
    assert run("plan", "-f", fleet).returncode == 0
    before = yaml.safe_load(fleet.with_name("fleet.lock.yaml").read_text())["clusters"]
    spec = yaml.safe_load(fleet.read_text())
    spec["spec"]["clusters"].insert(0, {"name": "sa-east", "region": "southamerica-east1",
                                        "zones": [{"name": "sa-a", "nodes": 40}]})
    fleet.write_text(yaml.safe_dump(spec))
    assert run("plan", "-f", fleet, "--locked").returncode == 2  # the lock would change
    assert run("plan", "-f", fleet).returncode == 0
    after = yaml.safe_load(fleet.with_name("fleet.lock.yaml").read_text())["clusters"]
    assert {k: after[k] for k in before} == before
    assert "sa-east" in after
    assert run("plan", "-f", fleet, "--locked").returncode == 0


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("region: us-east1", "region: [us-east1"), "fleet.yaml:3"),
        (lambda t: t.replace("    routing: tunnel", "    routng: tunnel"), "did you mean 'routing'?"),
        (lambda t: t.replace("10.1.0.0/16 ", "10.1.0.0/33 "), "is not a valid CIDR"),
        (lambda t: t.replace("name: us-east", "name: eu-west"), "two clusters share the name 'eu-west'"),
        (lambda t: t.replace("podSupernet: 10.0.0.0/12", "podSupernet: 10.0.0.0/22"), "the largest free block"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(fleet: Path, edit: object, expected: str) -> None:
    text = fleet.read_text()
    changed = edit(text)  # type: ignore[operator]
    assert changed != text
    fleet.write_text(changed)
    result = run("plan", "-f", fleet)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not fleet.with_name("fleet.lock.yaml").exists()  # nothing half-written


def test_check_lists_every_problem(tmp_path: Path) -> None:
    result = run("plan", "--check", "-f", EXAMPLES / "fleet-assigned.yaml", "-o", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    codes = sorted(f["code"] for f in report["findings"])
    assert codes.count("cidr-overlap") == 2
    assert "duplicate-cluster-id" in codes and "mtu-mismatch" in codes
    table = run("plan", "--check", "-f", EXAMPLES / "fleet-assigned.yaml")
    assert table.returncode == 2 and "duplicate-cluster-id" in table.stdout


def test_missing_file_and_no_fleet(tmp_path: Path) -> None:
    result = run("plan", "-f", tmp_path / "nope.yaml")
    assert result.returncode == 2 and "file not found" in result.stderr
    result = run("plan", "-f", EXAMPLES / "cassandra.yaml")
    assert result.returncode == 2 and "no Fleet document found" in result.stderr


def test_schema_is_json_schema_for_every_kind() -> None:
    result = run("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert {"Fleet", "CassandraCluster"} <= set(schema["$defs"])
    one = json.loads(run("schema", "--kind", "Fleet").stdout)
    assert one["title"] == "Fleet"
    bad = run("schema", "--kind", "Nope")
    assert bad.returncode == 2 and "known kinds" in bad.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("isthmus ")
