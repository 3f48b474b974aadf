"""`isthmus preflight` against the lab's real API servers: clean, wrong CIDRs, duplicate IDs, a frozen cluster."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.labspecs import fleet_doc
from isthmus.lab import Lab

pytestmark = pytest.mark.lab

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
COREFILE = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n    }\n}\n"


def lab_fleet(lab: Lab) -> dict[str, Any]:
    """``fleet_doc()`` with each cluster's pod/service CIDR set to what the lab really runs."""
    doc: dict[str, Any] = copy.deepcopy(fleet_doc())
    for cluster in doc["spec"]["clusters"]:
        spec = lab.spec(cluster["name"])
        cluster["podCIDR"], cluster["serviceCIDR"] = spec.pod_cidr, spec.service_cidr
    return doc


def preflight(lab: Lab, folder: Path, doc: dict[str, Any], *extra: str) -> tuple[int, dict[str, Any], str]:
    spec = folder / "fleet.yaml"
    spec.write_text(yaml.safe_dump(doc))
    done = subprocess.run([ISTHMUS, "preflight", "-f", str(spec), "--kubeconfig", str(lab.kubeconfig), "-o", "json",
                           *extra], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home())})
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def _checks(report: dict[str, Any], cluster: str) -> list[str]:
    return [b["check"] for b in report["blockers"] if b["cluster"] == cluster]


@contextmanager
def config_map(lab: Lab, clusters: list[str], name: str, data: dict[str, str]) -> Iterator[None]:
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": name, "namespace": "kube-system"}, "data": data})
    folder = Path(lab.state_dir) / "preflight-test"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(manifest)
    try:
        for cluster in clusters:
            lab.kubectl(cluster, "apply", "-f", str(path))
        yield
    finally:
        for cluster in clusters:
            lab.kubectl(cluster, "delete", "-f", str(path), "--ignore-not-found", check=False)


def test_the_clean_lab_passes(lab3: Lab, tmp_path: Path) -> None:
    with config_map(lab3, ["c1"], "coredns", {"Corefile": COREFILE}):
        code, report, _ = preflight(lab3, tmp_path, lab_fleet(lab3))
    assert code == 0, report["blockers"]
    assert report["ok"] and report["blockers"] == []
    for name in ("c1", "c2", "c3"):
        facts = report["clusters"][name]
        assert facts["reachable"] and facts["kubernetesServiceIPs"] == [str(lab3.spec(name).kubernetes_service_ip)]
        assert len(facts["nodes"]) == 4
    assert report["clusters"]["c1"]["dnsDomain"] == "cluster.local"
    dns = [w for w in report["warnings"] if w["check"] == "dns-domain"]
    assert {w["cluster"] for w in dns} == {"c2", "c3"}  # no coredns ConfigMap there: assumed, with a warning


def test_the_table_says_ready(lab3: Lab, tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump(lab_fleet(lab3)))
    done = subprocess.run([ISTHMUS, "preflight", "-f", str(spec), "--kubeconfig", str(lab3.kubeconfig)],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home()), "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ready to deploy" in done.stdout and "reachable" in done.stdout


def test_a_wrong_service_cidr_is_a_blocker(lab3: Lab, tmp_path: Path) -> None:
    doc = lab_fleet(lab3)
    doc["spec"]["clusters"][1]["serviceCIDR"] = "172.31.0.0/20"  # c2 really runs 172.16.32.0/20
    code, report, _ = preflight(lab3, tmp_path, doc)
    assert code == 2 and not report["ok"]
    assert _checks(report, "c2") and set(_checks(report, "c2")) == {"service-cidr"}
    message = next(b["message"] for b in report["blockers"] if b["cluster"] == "c2")
    assert str(lab3.spec("c2").kubernetes_service_ip) in message and "172.31.0.0/20" in message
    assert _checks(report, "c1") == [] and _checks(report, "c3") == []


def test_a_node_address_inside_a_planned_pod_cidr_is_a_blocker(lab3: Lab, tmp_path: Path) -> None:
    # The lab's kwok nodes have no InternalIP: add a Node (not kwok's) whose address is inside c1's pod CIDR.
    node_ip = str(lab3.spec("c1").pod_network.network_address + 250 * 256 + 7)
    folder = tmp_path / "node"
    folder.mkdir()
    (folder / "node.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "preflight-probe", "labels": {"isthmus.dev/test": "preflight"}}}))
    status = json.dumps({"status": {"addresses": [{"type": "InternalIP", "address": node_ip}]}})
    try:
        lab3.kubectl("c1", "apply", "-f", str(folder / "node.yaml"))
        lab3.kubectl("c1", "patch", "node", "preflight-probe", "--subresource=status", "--type=merge", "-p", status)
        code, report, _ = preflight(lab3, tmp_path, lab_fleet(lab3))
    finally:
        lab3.kubectl("c1", "delete", "node", "preflight-probe", "--ignore-not-found", check=False)
    assert code == 2
    assert report["clusters"]["c1"]["nodes"]["preflight-probe"] == [node_ip]
    assert _checks(report, "c1") == ["pod-cidr"]
    (blocker,) = [b for b in report["blockers"] if b["check"] == "pod-cidr"]
    assert f"node preflight-probe ({node_ip}) of c1" in blocker["message"]


def test_a_duplicate_cluster_id_is_a_blocker(lab3: Lab, tmp_path: Path) -> None:
    with config_map(lab3, ["c2", "c3"], "cilium-config", {"cluster-id": "1", "cluster-name": "default"}):
        code, report, _ = preflight(lab3, tmp_path, lab_fleet(lab3))
    assert code == 2
    duplicate = [b for b in report["blockers"] if "live in both" in b["message"]]
    assert len(duplicate) == 1 and duplicate[0]["check"] == "cluster-id" and duplicate[0]["cluster"] == "c3"
    # The plan gives c2 ID 2 and c3 ID 3: each differs from the live 1 as well.
    assert "cluster-id" in _checks(report, "c2")
    assert report["clusters"]["c2"]["ciliumConfig"]["cluster-id"] == "1"


def test_a_live_id_other_than_planned_and_its_mtu_are_blockers(lab3: Lab, tmp_path: Path) -> None:
    with config_map(lab3, ["c1"], "cilium-config", {"cluster-id": "42", "cluster-name": "c1", "mtu": "9000"}):
        code, report, _ = preflight(lab3, tmp_path, lab_fleet(lab3))
    assert code == 2
    assert set(_checks(report, "c1")) == {"cluster-id", "mtu"}
    assert _checks(report, "c2") == []


def test_a_frozen_api_server_is_a_blocker_found_within_the_timeout(lab3: Lab, tmp_path: Path) -> None:
    lab3.freeze("c3")
    try:
        code, report, _ = preflight(lab3, tmp_path, lab_fleet(lab3), "--request-timeout", "3")  # (bounded: 120 s)
    finally:
        lab3.thaw("c3")
    assert code == 2
    assert _checks(report, "c3") == ["reachable"]
    assert report["clusters"]["c3"] == {"reachable": False}
    assert report["clusters"]["c1"]["reachable"] and _checks(report, "c1") == []
