"""deploy/chart is the operator's own objects: generated, lint-clean, and rendered by helm as `install` applies them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.image import RELEASED, ImageRef
from isthmus.operator.chart import chart_files
from isthmus.operator.crds import crd_documents
from isthmus.operator.manifests import Intervals, operator_objects

from ._helm import CHART, helm, template

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
DIGEST = "sha256:" + "ab" * 32


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = _by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return container


def test_committed_chart_matches_the_generator() -> None:
    committed = {str(p.relative_to(CHART)): p.read_text() for p in CHART.rglob("*") if p.is_file()}
    assert committed == chart_files(), "regenerate with `isthmus operator chart deploy/chart`"


def test_the_chart_writes_itself_from_the_cli(tmp_path: Path) -> None:
    result = subprocess.run([ISTHMUS, "operator", "chart", "--out", str(tmp_path / "chart")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "chart" / "templates" / "deployment.yaml").read_text() == chart_files()[
        "templates/deployment.yaml"]


def test_helm_lint_is_clean() -> None:
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def test_default_values_render_exactly_what_install_applies() -> None:
    # One source: `helm template` and `isthmus operator install` give the same objects (helm makes the Namespace).
    rendered = template("--namespace", "isthmus-system")
    expected = [o for o in operator_objects(namespace="isthmus-system") if o["kind"] != "Namespace"]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(expected, key=key)
    assert _container(rendered)["image"] == str(RELEASED)


def test_the_crds_folder_is_the_generated_crds() -> None:
    docs = [d for d in yaml.safe_load_all((CHART / "crds" / "crds.yaml").read_text()) if d]
    assert docs == crd_documents()
    names = {d["metadata"]["name"] for d in template("--include-crds") if d["kind"] == "CustomResourceDefinition"}
    assert names == {"fleets.isthmus.dev", "cassandraclusters.isthmus.dev"}


def test_values_set_the_image_replicas_resources_namespace_and_intervals() -> None:
    rendered = template("--namespace", "ops", "--set", "image.repository=registry.example/isthmus",
                        "--set", f"image.digest={DIGEST}", "--set", "replicas=3",
                        "--set", "resources.limits.memory=1Gi", "--set", "memberSecrets.namespace=isthmus-members",
                        "--set", "intervals.resync=60", "--set", "intervals.leaseDuration=30")
    expected = operator_objects(namespace="ops", members_namespace="isthmus-members", replicas=3,
                                image=ImageRef("registry.example/isthmus", DIGEST),
                                intervals=Intervals(resync=60, lease_duration=30),
                                resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}})
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted([o for o in expected if o["kind"] != "Namespace"], key=key)
    kinds = _by_kind(rendered)
    assert kinds["Role"]["metadata"]["namespace"] == "isthmus-members"
    assert kinds["RoleBinding"]["subjects"][0]["namespace"] == "ops"
    args = _container(rendered)["args"]
    assert args[args.index("--namespace") + 1] == "isthmus-members"
    assert args[args.index("--lease-duration") + 1] == "30"


@pytest.mark.parametrize("digest", ["latest", "0.1.0", "sha256:abc"])
def test_a_tag_instead_of_a_digest_fails_with_one_line(digest: str) -> None:
    result = helm("template", "isthmus", str(CHART), "--set", f"image.digest={digest}", check=False)
    assert result.returncode != 0
    assert "image.digest must be sha256:<64 hex digits>" in result.stderr
