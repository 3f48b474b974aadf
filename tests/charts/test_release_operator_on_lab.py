"""The operator reconciles a ChartRelease: a real ``isthmus operator run`` process against c1 (control plane),
every member registered as a kubeconfig Secret, the real etcd chart rendered by the real helm. Tests run in
file order and share one operator."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from _charts import ETCD, REDIS, release_doc

from fixtures.labspecs import fleet_doc
from fixtures.opharness import (
    DEPLOY,
    NAMESPACE,
    OperatorProcess,
    apply_doc,
    condition,
    converged,
    register_member,
    wait_for,
)
from isthmus.helm import HELM_ENV, HelmBinary
from isthmus.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS = "oprel"  # where the ChartRelease objects live on the control plane, and the release's namespace
CLUSTERS = ("c1", "c2", "c3")


@pytest.fixture(scope="module")
def operator(lab3: Lab, helm: HelmBinary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    lab3.kubectl("c1", "apply", "--server-side", "-f", str(DEPLOY / "crds.yaml"))
    lab3.kubectl("c1", "wait", "--for=condition=Established", "crd/fleets.isthmus.dev",
                 "crd/chartreleases.isthmus.dev")
    for ns in (NAMESPACE, NS):
        apply_doc(lab3, "c1", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    registered = set(lab3.kubectl("c1", "get", "secrets", "-n", NAMESPACE, "-l", "isthmus.dev/cluster",
                                  "-o", "name").split())
    for cluster in CLUSTERS:
        register_member(lab3, cluster)
    apply_doc(lab3, "c1", fleet_doc())
    before = os.environ.get(HELM_ENV)
    os.environ[HELM_ENV] = str(helm.path)  # the operator finds helm through its setting, as in a pod
    try:
        proc = OperatorProcess(lab3, "op-rel", tmp_path_factory.mktemp("operator")).start()
    finally:
        if before is None:
            os.environ.pop(HELM_ENV, None)
        else:
            os.environ[HELM_ENV] = before
    wait_for(lambda: proc.leading, 30, "op-rel leads", proc)
    try:
        yield proc
    finally:
        proc.stop()
        for cluster in CLUSTERS:  # the members this module registered leave with it (other modules count on it)
            if f"secret/member-{cluster}" not in registered:
                lab3.kubectl("c1", "delete", "secret", f"member-{cluster}", "-n", NAMESPACE, "--ignore-not-found")


def release(lab: Lab, name: str) -> dict[str, Any]:
    out = lab.kubectl("c1", "get", "chartrelease", name, "-n", NS, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


def cr_doc(name: str, **kwargs: Any) -> dict[str, Any]:
    doc = release_doc(name, rollout={"maxConcurrentClusters": 2}, **kwargs)
    doc["metadata"]["namespace"] = NS
    doc["spec"]["namespace"] = NS
    return doc


def kubectl_json(lab: Lab, cluster: str, *args: str) -> Any:
    return json.loads(lab.kubectl(cluster, *args, "-o", "json"))


def owned(lab: Lab, cluster: str, kind: str, app: str) -> list[dict[str, Any]]:
    return list(kubectl_json(lab, cluster, "get", kind, "-n", NS, "-l", f"isthmus.dev/app={app}")["items"])


def hook_jobs(lab: Lab, cluster: str, app: str) -> list[str]:
    return [j["metadata"]["name"] for j in owned(lab, cluster, "jobs", app)
            if "helm.sh/hook" in (j["metadata"].get("annotations") or {})]


def test_a_release_is_reconciled_into_every_member_with_its_region_override(lab3: Lab,
                                                                             operator: OperatorProcess) -> None:
    apply_doc(lab3, "c1", cr_doc("etcd-o", chart=ETCD,
                                 overrides=[{"region": "region-3", "values": {"replicaCount": 3}}]))
    obj = wait_for(lambda: (o := release(lab3, "etcd-o")) and converged(o) and o, 240, "etcd-o Ready", operator)
    status = obj["status"]
    assert status["readyDCs"] == "3/3" and status["phase"] == "Ready", status
    assert sorted(d["cluster"] for d in status["datacenters"]) == list(CLUSTERS)
    for cluster in CLUSTERS:
        [sts] = owned(lab3, cluster, "statefulsets", "etcd-o")
        assert sts["spec"]["replicas"] == (3 if cluster == "c3" else 1)
        assert sts["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "isthmus"
        assert "isthmus.dev/content-hash" in sts["metadata"]["annotations"]
        assert {s["metadata"]["name"] for s in owned(lab3, cluster, "services", "etcd-o")} >= {"etcd-o",
                                                                                                "etcd-o-headless"}


def test_a_values_change_rolls_out_everywhere_and_runs_the_upgrade_hook(lab3: Lab, operator: OperatorProcess) -> None:
    apply_doc(lab3, "c1", cr_doc("etcd-o", chart=ETCD, values={"podAnnotations": {"rev": "two"}},
                                 overrides=[{"region": "region-3", "values": {"replicaCount": 3}}]))

    def rolled() -> bool:
        obj = release(lab3, "etcd-o")
        if not converged(obj):
            return False
        return all(owned(lab3, c, "statefulsets", "etcd-o")[0]["spec"]["template"]["metadata"]
                   .get("annotations", {}).get("rev") == "two" for c in CLUSTERS)

    wait_for(rolled, 240, "rev two everywhere", operator)
    for cluster in CLUSTERS:  # the chart's pre-upgrade Job ran (before-hook-creation: it stays until the next one)
        assert hook_jobs(lab3, cluster, "etcd-o") == ["etcd-o-pre-upgrade"]


def test_values_the_chart_rejects_are_a_condition_with_helms_words_and_nothing_applied(
        lab3: Lab, operator: OperatorProcess) -> None:
    apply_doc(lab3, "c1", cr_doc("redis-bad", chart=REDIS, values={"replica": {"replicaCount": "three"}}))

    def refused() -> dict[str, Any]:
        ready = condition(release(lab3, "redis-bad"), "Ready")
        return ready if ready.get("reason") == "InvalidSpec" else {}

    ready = wait_for(refused, 120, "redis-bad refused", operator)
    assert ready["status"] == "False"
    assert "values don't meet the specifications of the schema" in ready["message"], ready
    assert "/replica/replicaCount" in ready["message"], ready
    for cluster in CLUSTERS:
        assert owned(lab3, cluster, "statefulsets", "redis-bad") == []
    lab3.kubectl("c1", "delete", "chartrelease", "redis-bad", "-n", NS, "--wait=true", timeout=60)


def test_deleting_the_release_removes_its_objects_and_hook_jobs_from_every_member(
        lab3: Lab, operator: OperatorProcess) -> None:
    stranger = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "not-isthmus", "namespace": NS}}
    for cluster in CLUSTERS:
        apply_doc(lab3, cluster, stranger)
    lab3.kubectl("c1", "delete", "chartrelease", "etcd-o", "-n", NS, "--wait=true", timeout=120)
    for cluster in CLUSTERS:
        for kind in ("statefulsets", "services", "secrets", "jobs", "configmaps"):
            assert owned(lab3, cluster, kind, "etcd-o") == [], (cluster, kind)
        assert hook_jobs(lab3, cluster, "etcd-o") == []
        kubectl_json(lab3, cluster, "get", "configmap", "not-isthmus", "-n", NS)  # someone else's: untouched
