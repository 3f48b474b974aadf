"""Shaping a lab from a Fleet: the plan's CIDRs and the spec's zones, or one clear refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from isthmus.lab.errors import LabError
from isthmus.lab.fleet import specs_from_fleet
from isthmus.netplan import plan
from isthmus.spec import Fleet, load_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def example_fleet() -> Fleet:
    fleet = load_file(EXAMPLES / "fleet.yaml").fleet
    assert fleet is not None
    return fleet


def test_lab_specs_follow_the_plan_and_the_zones() -> None:
    fleet = example_fleet()
    planned = plan(fleet)
    specs = specs_from_fleet(fleet, planned)
    assert [s.name for s in specs] == ["eu-west", "us-east", "ap-south"]
    eu = specs[0]
    assert eu.region == "europe-west1"
    assert dict(eu.zones) == {"europe-west1-b": 2, "europe-west1-c": 2, "europe-west1-d": 2}
    assert eu.pod_cidr == str(planned.cluster("eu-west").pod_cidr)
    assert eu.service_cidr == str(planned.cluster("eu-west").service_cidr)
    assert eu.context == "lab-eu-west"


def test_a_context_the_lab_does_not_name_is_refused() -> None:
    fleet = example_fleet()
    data = fleet.model_dump(by_alias=True, exclude_none=True)
    data["spec"]["clusters"][1]["context"] = "prod-us"
    other = Fleet.model_validate(data)
    with pytest.raises(LabError, match=r"cluster us-east: context is 'prod-us' but the lab names it 'lab-us-east'"):
        specs_from_fleet(other, plan(other))


def test_lab_up_with_an_unusable_fleet_exits_2_and_starts_nothing(tmp_path: Path) -> None:
    data = yaml.safe_load((EXAMPLES / "fleet.yaml").read_text())
    data["spec"]["clusters"][0]["context"] = "somewhere-else"
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = subprocess.run([ISTHMUS, "lab", "up", "--fleet", str(spec), "--state-dir", str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "the lab names it 'lab-eu-west'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "state.json").exists()
