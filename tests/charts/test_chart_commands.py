"""Bad ChartRelease input refused before any cluster is asked: one line, exit code 2, nothing written.

The kubeconfig's contexts point at a port nobody listens on: a command that contacted a cluster would fail
differently (and slowly), so these also show that nothing is contacted before the input is known good.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from _charts import release_doc

from fixtures.labspecs import fleet_doc
from isthmus.helm import HELM_ENV, HelmBinary

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def _kubeconfig(folder: Path) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "lab-c1",
           "clusters": [{"name": f"c{i}", "cluster": {"server": "https://127.0.0.1:9"}} for i in (1, 2, 3)],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": f"lab-c{i}", "context": {"cluster": f"c{i}", "user": "u"}} for i in (1, 2, 3)]}
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(tmp_path: Path, helm: str, doc: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(fleet_doc()))
    (tmp_path / "release.yaml").write_text(yaml.safe_dump(doc))
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home()), HELM_ENV: helm,
           "KUBECONFIG": str(_kubeconfig(tmp_path))}
    return subprocess.run([ISTHMUS, *args, "-f", str(tmp_path / "fleet.yaml"), "-f", str(tmp_path / "release.yaml")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("command", [["apply"], ["render", "--out", "OUT"], ["diff"], ["rollout", "plan"]])
@pytest.mark.parametrize(("case", "words"), [
    ("not-a-chart", r"release\.yaml: spec\.chart: .*notachart is not a Helm chart \(it has no Chart\.yaml\)"),
    ("no-such-chart", r"release\.yaml: spec\.chart: chart .*/nothing-here does not exist"),
    ("unknown-cluster", r"release\.yaml:\d+: spec\.overrides\[0\]\.cluster: override for cluster 'c7', which Fleet "
                        r"'lab' does not have \(clusters: c1, c2, c3\)"),
    ("unknown-region", r"release\.yaml:\d+: spec\.overrides\[0\]\.region: override for region 'mars-1', which Fleet "
                       r"'lab' does not have"),
    ("bad-canary", r"release\.yaml:\d+: spec\.rollout\.canary: canary cluster 'c9' is not a member"),
])
def test_bad_specs(tmp_path: Path, helm: HelmBinary, command: list[str], case: str, words: str) -> None:
    chart = tmp_path / "notachart"
    (chart / "templates").mkdir(parents=True)
    doc = {"not-a-chart": release_doc("bad", chart),
           "no-such-chart": release_doc("bad", tmp_path / "nothing-here"),
           "unknown-cluster": release_doc("bad", overrides=[{"cluster": "c7", "values": {}}]),
           "unknown-region": release_doc("bad", overrides=[{"region": "mars-1", "values": {}}]),
           "bad-canary": release_doc("bad", rollout={"canary": "c9"})}[case]
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    done = run(tmp_path, str(helm.path), doc, *args)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1 and re.search(words, lines[0]), done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["apply"], ["render", "--out", "OUT"], ["diff"]])
@pytest.mark.parametrize(("case", "words"), [
    ("missing", rf"no helm binary found \({HELM_ENV}=/nonexistent/helm\); install Helm 3\.8\.0 or later and put it "
                rf"on PATH, or point {HELM_ENV} at it"),
    ("old", r"is Helm v3\.1\.0, older than 3\.8\.0"),
])
def test_helm_missing_or_too_old(tmp_path: Path, command: list[str], case: str, words: str) -> None:
    helm = "/nonexistent/helm"
    if case == "old":
        fake = tmp_path / "helm"
        fake.write_text("#!/bin/sh\necho v3.1.0\n")
        fake.chmod(0o755)
        helm = str(fake)
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    done = run(tmp_path, helm, release_doc("etcd-q"), *args)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1 and re.search(words, lines[0]), done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


def test_the_example_plans_canary_first_with_its_region_override(tmp_path: Path) -> None:
    """examples/lab/etcd.yaml as committed; its chart path (../shared/charts beside the repository) is laid out
    the same way under tmp_path."""
    from _charts import CHARTS

    from isthmus.spec import ChartRelease

    root = Path(__file__).resolve().parents[2]
    repo = tmp_path / "repo" / "examples" / "lab"
    repo.mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "charts").symlink_to(CHARTS)
    for name in ("fleet.yaml", "etcd.yaml"):
        (repo / name).write_text((root / "examples" / "lab" / name).read_text())
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home())}
    done = subprocess.run([ISTHMUS, "rollout", "plan", "-f", str(repo / "fleet.yaml"), "-f", str(repo / "etcd.yaml"),
                           "-o", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    plan = yaml.safe_load(done.stdout)
    assert [w["name"] for w in plan["waves"]] == ["seed: eu-west", "2: us-east, ap-south", "finalize"]
    from isthmus.spec import load_files

    release = next(a for a in load_files([repo / "etcd.yaml"]).apps if isinstance(a, ChartRelease))
    assert release.values_for("ap-south", "asia-south1")["replicaCount"] == 1
    assert release.values_for("us-east", "us-east1")["replicaCount"] == 3
