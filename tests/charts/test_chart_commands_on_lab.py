"""The commands for a ChartRelease: bad input (exit 2, nothing written), render, status, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _charts import REDIS, release_doc

from fixtures.labspecs import fleet_doc
from isthmus.helm import HELM_ENV, HelmBinary
from isthmus.lab import Lab

pytestmark = pytest.mark.lab
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def env(lab: Lab, helm: HelmBinary | Path | str) -> dict[str, str]:
    path = helm.path if isinstance(helm, HelmBinary) else helm
    return {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(lab.kubeconfig), "HOME": str(Path.home()),
            HELM_ENV: str(path)}


def specs(folder: Path, doc: dict[str, Any]) -> list[str]:
    (folder / "fleet.yaml").write_text(yaml.safe_dump(fleet_doc()))
    (folder / "release.yaml").write_text(yaml.safe_dump(doc))
    return ["-f", str(folder / "fleet.yaml"), "-f", str(folder / "release.yaml")]


def isthmus(lab: Lab, helm: HelmBinary | Path | str, *args: str, timeout: float = 300) -> \
        subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *args], capture_output=True, text=True, env=env(lab, helm), timeout=timeout)


def nothing_of(lab: Lab, name: str) -> None:
    """No lock, no revision, no rollout state, no namespace: nothing was written anywhere."""
    cms = json.loads(lab.kubectl("c1", "get", "configmaps,leases", "-n", "isthmus-system", "-o", "json"))["items"]
    assert not [c["metadata"]["name"] for c in cms if name in c["metadata"]["name"]]
    for cluster in ("c1", "c2", "c3"):
        names = {n["metadata"]["name"] for n in json.loads(lab.kubectl(cluster, "get", "ns", "-o", "json"))["items"]}
        assert name not in names


def bad_chart(tmp_path: Path) -> Path:
    folder = tmp_path / "notachart"
    (folder / "templates").mkdir(parents=True)
    (folder / "values.yaml").write_text("a: 1\n")
    return folder


@pytest.mark.parametrize(("case", "words"), [
    ("not-a-chart", r"release\.yaml: spec\.chart: .*notachart is not a Helm chart \(it has no Chart\.yaml\)"),
    ("schema", r"chart .*redis, cluster c\d: helm template failed: helm says: values don't meet the specifications "
               r"of the schema.*/replica/replicaCount.*got string, want number"),
    ("template", r"chart .*redis, cluster c\d: helm template failed: helm says: execution error at "
                 r"\(redis/templates/NOTES\.txt.*Invalid architecture selected"),
    ("unknown-cluster", r"release\.yaml:\d+: spec\.overrides\[0\]\.cluster: override for cluster 'c7', which Fleet "
                        r"'lab' does not have"),
    ("no-helm", rf"no helm binary found \({HELM_ENV}=/nonexistent/helm\); install Helm 3\.8\.0 or later"),
    ("old-helm", r"is Helm v3\.1\.0, older than 3\.8\.0"),
])
@pytest.mark.parametrize("command", ["apply", "render"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(lab3: Lab, helm: HelmBinary, tmp_path: Path,
                                                          case: str, words: str, command: str) -> None:
    name = f"bad-{case}"[:20]
    doc = {"not-a-chart": release_doc(name, bad_chart(tmp_path)),
           "schema": release_doc(name, REDIS, values={"replica": {"replicaCount": "three"}}),
           "template": release_doc(name, REDIS, values={"architecture": "bogus"}),
           "unknown-cluster": release_doc(name, overrides=[{"cluster": "c7", "values": {}}]),
           }.get(case, release_doc(name))
    binary: HelmBinary | Path | str = helm
    if case == "no-helm":
        binary = "/nonexistent/helm"
    elif case == "old-helm":
        binary = tmp_path / "helm"
        binary.write_text("#!/bin/sh\necho v3.1.0\n")
        binary.chmod(0o755)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "render" else []
    done = isthmus(lab3, binary, command, *specs(tmp_path, doc), *extra)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(words, lines[0]), done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
    nothing_of(lab3, name)


def test_render_writes_each_cluster_what_helm_renders_with_secrets_masked(lab3: Lab, helm: HelmBinary,
                                                                          tmp_path: Path) -> None:
    doc = release_doc("etcd-r", overrides=[{"region": "region-3", "values": {"replicaCount": 3}}])
    done = isthmus(lab3, helm, "render", *specs(tmp_path, doc), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    for cluster in ("c1", "c2", "c3"):
        objs = list(yaml.safe_load_all((tmp_path / "out" / cluster / "etcd-r.yaml").read_text()))
        sts = next(o for o in objs if o["kind"] == "StatefulSet")
        assert sts["spec"]["replicas"] == (3 if cluster == "c3" else 1)
        secret = next(o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == "etcd-r")
        assert set(secret["data"].values()) == {"<isthmus: kept in the cluster, not in revisions>"}
        hooks = list(yaml.safe_load_all((tmp_path / "out" / cluster / "etcd-r-hooks.yaml").read_text()))
        assert [h["metadata"]["name"] for h in hooks] == ["etcd-r-pre-upgrade"]
    nothing_of(lab3, "etcd-r")


def _state(lab: Lab, name: str) -> Any:
    """The app's rollout state as the control plane holds it (None before the first write)."""
    from isthmus.rollout import RolloutState

    try:
        raw = json.loads(lab.kubectl("c1", "get", "configmap", f"isthmus-rollout-{name}", "-n", "isthmus-system",
                                     "-o", "json"))
    except Exception:  # not there yet
        return None
    text = (raw.get("data") or {}).get("state")
    return RolloutState.from_dict(json.loads(text)) if text else None


def test_resume_after_sigkill_applies_every_wave_once(lab3: Lab, helm: HelmBinary, tmp_path: Path) -> None:
    strategy = {"maxConcurrentClusters": 1, "soakSeconds": 8}
    args = specs(tmp_path, release_doc("etcd-k", rollout=strategy))
    first = isthmus(lab3, helm, "apply", *args)
    assert first.returncode == 0, first.stdout + first.stderr
    args = specs(tmp_path, release_doc("etcd-k", values={"podAnnotations": {"rev": "2"}}, rollout=strategy))
    proc = subprocess.Popen([ISTHMUS, "apply", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(lab3, helm), start_new_session=True)
    killed_at: dict[str, float | None] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = _state(lab3, "etcd-k")
            if state is not None and state.revision == 2 and state.steps["release/c1"].finished:
                killed_at = {s: state.steps[s].started for s in ("release/c1", "release/c2")}
                break
            time.sleep(0.2)
        else:
            pytest.fail("the rollout never finished its first wave")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at["release/c2"] is None  # killed while soaking before the second wave
    assert sts_generation(lab3, "c1", "etcd-k") == 2 and sts_generation(lab3, "c2", "etcd-k") == 1
    resumed = isthmus(lab3, helm, "rollout", "resume", "--lock-wait", "40", *args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Succeeded" in resumed.stdout
    for cluster in ("c1", "c2", "c3"):  # one write of the StatefulSet per cluster: each wave applied once
        assert sts_generation(lab3, cluster, "etcd-k") == 2
    state = _state(lab3, "etcd-k")
    assert state is not None
    assert state.steps["release/c1"].started == killed_at["release/c1"]  # done before the kill: not run again
    status = isthmus(lab3, helm, "status", *args)
    assert status.returncode == 0 and "ChartRelease etcd-k" in status.stdout, status.stdout
    hist = isthmus(lab3, helm, "history", *args)
    assert hist.returncode == 0 and "runs revision 2" in hist.stdout, hist.stdout
    # Rendered again (random values kept from the clusters), the release is what every cluster holds.
    diff = isthmus(lab3, helm, "diff", *args)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert [ln for ln in diff.stdout.splitlines() if "would change" in ln] == [
        f"c{i}: 0 object(s) would change" for i in (1, 2, 3)]


def sts_generation(lab: Lab, cluster: str, name: str) -> int:
    sts = json.loads(lab.kubectl(cluster, "get", "statefulset", name, "-n", name, "-o", "json"))
    return int(sts["metadata"]["generation"])
