"""The operator end to end on the lab: a real ``isthmus operator run`` process against c1 (control plane),
member clusters registered as kubeconfig Secrets. Tests run in file order and share one operator."""

from __future__ import annotations

import copy
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc
from fixtures.opharness import (
    DEPLOY,
    NAMESPACE,
    OperatorProcess,
    apply_doc,
    cassandra,
    condition,
    converged,
    events,
    member_condition,
    register_member,
    statefulsets,
    until,
    wait_for,
)
from isthmus.lab import Lab, LabError
from isthmus.lab.prometheus import PrometheusServer, ScrapeJob

pytestmark = [pytest.mark.lab, pytest.mark.slow]
APP = "opshop"  # names unique to this module: other lab tests deploy apps too


@pytest.fixture(scope="module")
def control_plane(lab3: Lab) -> Lab:
    lab3.kubectl("c1", "apply", "--server-side", "-f", str(DEPLOY / "crds.yaml"))
    lab3.kubectl("c1", "wait", "--for=condition=Established", "crd/fleets.isthmus.dev",
                 "crd/cassandraclusters.isthmus.dev")
    for ns in (NAMESPACE, APP, "opbad", "opha"):
        apply_doc(lab3, "c1", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    register_member(lab3, "c1")
    register_member(lab3, "c2")  # c3 joins later, while the operator runs
    apply_doc(lab3, "c1", fleet_doc())
    return lab3


@pytest.fixture(scope="module")
def operators(control_plane: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[OperatorProcess]]:
    """The running replicas; the first one leads. Tests may add replicas (they are all stopped at the end)."""
    logs = tmp_path_factory.mktemp("operator")
    procs = [OperatorProcess(control_plane, "op-a", logs).start()]
    wait_for(lambda: procs[0].leading, 30, "op-a leads", *procs)
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def doc_with(dcs: list[int], *, heap: str = "1G", name: str = APP) -> dict[str, Any]:
    doc = app_doc(name, size=2, heap=heap)
    doc["spec"]["datacenters"] = [d for d in doc["spec"]["datacenters"]
                                  if int(d["cluster"][1:]) in dcs]
    return doc


def test_the_crd_rejects_an_invalid_object_naming_the_field(control_plane: Lab) -> None:
    bad = doc_with([1])
    bad["spec"]["datacenters"][0]["size"] = 0
    with pytest.raises(LabError, match=r"spec\.datacenters\[0\]\.size"):
        apply_doc(control_plane, "c1", bad)
    unknown = doc_with([1])
    unknown["spec"]["replicationFactor"] = 3
    with pytest.raises(LabError, match=r"\.spec\.replicationFactor: field not declared in schema"):
        apply_doc(control_plane, "c1", unknown)


def test_apply_brings_the_dcs_up_and_a_late_member_joins_without_restart(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    apply_doc(lab, "c1", doc_with([1, 2]))
    obj = until(lab, APP, APP, converged, 120, "opshop Ready on c1,c2", op)
    assert obj["status"]["readyDCs"] == "2/2" and obj["status"]["phase"] == "Ready"
    assert [d["health"] for d in obj["status"]["datacenters"]] == ["Healthy", "Healthy"]
    assert len(statefulsets(lab, "c1", APP, APP)) == 2 and len(statefulsets(lab, "c2", APP, APP)) == 2
    columns = lab.kubectl("c1", "get", "cassandracluster", APP, "-n", APP).split("\n")
    assert columns[0].split() == ["NAME", "READY", "DCS", "REVISION", "PHASE", "AGE"]
    assert columns[1].split()[:5] == [APP, "True", "2/2", obj["status"]["revision"], "Ready"]
    assert any(e["reason"] == "Applied" for e in events(lab, APP, APP))

    # A DC on c3, which is not registered yet: a condition with a reason, and nothing applied anywhere.
    before = {c: statefulsets(lab, c, APP, APP) for c in ("c1", "c2")}
    apply_doc(lab, "c1", doc_with([1, 2, 3]))
    obj = until(lab, APP, APP, lambda o: bool(o["status"]["phase"] == "Invalid"), 30, "UnregisteredMember reported", op)
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "UnregisteredMember" and "c3" in ready["message"]
    assert member_condition(obj, "c3")["reason"] == "NotRegistered"
    assert statefulsets(lab, "c3", APP, APP) == {}
    assert {c: statefulsets(lab, c, APP, APP) for c in ("c1", "c2")} == before
    wait_for(lambda: any(e["reason"] == "UnregisteredMember" for e in events(lab, APP, APP)), 10, "event", op)

    # Registering c3 deploys it, with the same operator process.
    pid = op.proc.pid if op.proc else None
    register_member(lab, "c3")
    obj = until(lab, APP, APP, converged, 120, "opshop Ready on c1..c3", op)
    assert obj["status"]["readyDCs"] == "3/3"
    assert len(statefulsets(lab, "c3", APP, APP)) == 2
    assert op.proc is not None and op.proc.pid == pid and op.proc.poll() is None
    assert {member_condition(obj, c)["status"] for c in ("c1", "c2", "c3")} == {"True"}
    # The mesh's discovery objects come with the app, in every member (the lab's Fleet: mesh cilium).
    for i, cluster in enumerate(("c1", "c2", "c3"), start=1):
        exported = lab.kubectl(cluster, "get", "serviceexports.multicluster.x-k8s.io", "-n", APP, "-o", "name",
                               "-l", f"isthmus.dev/app={APP}").split()
        assert sorted(exported) == sorted(f"serviceexport.multicluster.x-k8s.io/{n}" for n in (
            f"{APP}-client", f"{APP}-dc{i}-client", f"{APP}-dc{i}-seeds")), (cluster, exported)


def test_rotated_credentials_keep_the_member_reachable_and_a_spec_edit_rolls_everywhere(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    register_member(lab, "c2", variant="rotated")
    wait_for(lambda: "rotated=('c2',)" in op.log.read_text(), 30, "c2 rotated", op)
    rotated_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    before = {c: statefulsets(lab, c, APP, APP) for c in ("c1", "c2", "c3")}
    apply_doc(lab, "c1", doc_with([1, 2, 3], heap="768M"))
    until(lab, APP, APP, converged, 120, "heap change converged", op)
    after = {c: statefulsets(lab, c, APP, APP) for c in ("c1", "c2", "c3")}
    for cluster in ("c1", "c2", "c3"):
        assert set(after[cluster]) == set(before[cluster])
        assert all(after[cluster][s] != before[cluster][s] for s in after[cluster]), cluster
    obj = until(lab, APP, APP, lambda o: member_condition(o, "c2").get("lastSeenTime", "") >= rotated_at, 30,
                "c2 seen after rotation", op)
    assert member_condition(obj, "c2")["status"] == "True"


def test_a_hand_edit_or_deletion_in_a_member_is_corrected_within_seconds(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    """drift: correct (the default). The operator's resync here is 300 s: only its watches can be this quick."""
    lab, op = control_plane, operators[0]
    until(lab, APP, APP, converged, 60, "opshop settled", op)
    # One watch per member and kind of object the app has there: ConfigMap, Secret, ServiceAccount, Service,
    # StatefulSet, PodDisruptionBudget, ServiceExport, in c1..c3.
    wait_for(lambda: "isthmus_operator_member_watches 21.0" in op.get("/metrics"), 30, "21 watches open", op)
    config = f"{APP}-dc2-config"
    rendered = json.loads(lab.kubectl("c2", "get", "configmap", config, "-n", APP, "-o", "json"))["data"]
    lab.kubectl("c2", "patch", "configmap", config, "-n", APP, "--type", "merge",
                "-p", json.dumps({"data": {"cassandra.yaml": "edited: by hand\n"}}))
    lab.kubectl("c3", "delete", "service", f"{APP}-dc3-seeds", "-n", APP)
    lab.kubectl("c1", "delete", "serviceexport", f"{APP}-dc1-seeds", "-n", APP)

    def corrected() -> bool:
        data = json.loads(lab.kubectl("c2", "get", "configmap", config, "-n", APP, "-o", "json"))["data"]
        seeds = lab.kubectl("c3", "get", "service", f"{APP}-dc3-seeds", "-n", APP, "-o", "name", check=False)
        export = lab.kubectl("c1", "get", "serviceexport", f"{APP}-dc1-seeds", "-n", APP, "-o", "name", check=False)
        return bool(data == rendered and seeds.strip() and export.strip())

    wait_for(corrected, 30, "the edit and the deletion corrected", op, interval=0.2)  # (how fast: a benchmark's)
    wait_for(lambda: any(e["reason"] == "DriftCorrected" and f"{APP}-dc2-config" in e["message"]
                         for e in events(lab, APP, APP)), 15, "DriftCorrected event", op)
    assert "changed by someone else; checking for drift" in op.log.read_text()


def test_with_drift_report_a_hand_edit_is_a_drifted_condition_and_is_left_alone(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    doc = doc_with([1, 2, 3], heap="768M")
    doc["spec"]["rollout"] = {"drift": "report"}
    apply_doc(lab, "c1", doc)
    until(lab, APP, APP, converged, 120, "report policy rolled out", op)
    sts = f"{APP}-dc2-ra"
    lab.kubectl("c2", "label", "statefulset", sts, "-n", APP, "app.kubernetes.io/version=0.0.0-by-hand",
                "--overwrite")

    def label() -> str:
        out = json.loads(lab.kubectl("c2", "get", "statefulset", sts, "-n", APP, "-o", "json"))
        return str(out["metadata"]["labels"]["app.kubernetes.io/version"])

    obj = until(lab, APP, APP, lambda o: bool(condition(o, "Drifted").get("status") == "True"), 20,
                "Drifted=True", op)
    drifted = condition(obj, "Drifted")
    assert drifted["reason"] == "LiveObjectsDiffer"
    assert f"c2: StatefulSet {APP}/{sts} edited" in drifted["message"], drifted["message"]
    wait_for(lambda: any(e["reason"] == "DriftDetected" and sts in e["message"] for e in events(lab, APP, APP)),
             15, "DriftDetected event", op)
    # Another hand edit, in c3: once a later drift check has reported it too, c2's edit is still there.
    other = f"{APP}-dc3-ra"
    lab.kubectl("c3", "label", "statefulset", other, "-n", APP, "app.kubernetes.io/version=0.0.1-by-hand",
                "--overwrite")
    until(lab, APP, APP, lambda o: f"c3: StatefulSet {APP}/{other} edited" in condition(o, "Drifted").get(
        "message", ""), 20, "the second edit reported", op)
    assert label() == "0.0.0-by-hand"  # reported, not corrected

    # Back to correcting: the drift seen before is looked at again, and put right.
    doc["spec"]["rollout"] = {"drift": "correct"}
    apply_doc(lab, "c1", doc)
    wait_for(lambda: label() == "5.0.6", 30, "the label put back", op)
    obj = until(lab, APP, APP, converged, 60, "converged with drift: correct", op)
    assert condition(obj, "Drifted") == {}


def test_a_semantic_error_is_a_condition_and_nothing_is_applied(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    bad = doc_with([1, 2], name="opbad")
    bad["spec"]["datacenters"][1]["racks"][0]["zone"] = "region-1a"  # a c1 zone, on c2
    apply_doc(lab, "c1", bad)
    obj = until(lab, "opbad", "opbad", lambda o: bool(o.get("status", {}).get("phase") == "Invalid"
                  ), 30, "bad reported Invalid", op)
    ready = condition(obj, "Ready")
    assert ready["reason"] == "InvalidPlacement" and "spec.datacenters[1].racks[0].zone" in ready["message"]
    assert all(statefulsets(lab, c, "opbad", "opbad") == {} for c in ("c1", "c2"))
    lab.kubectl("c1", "delete", "cassandracluster", "opbad", "-n", "opbad", "--timeout=60s")


def test_a_frozen_member_turns_unreachable_while_the_others_keep_reconciling(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    before = {c: statefulsets(lab, c, APP, APP) for c in ("c1", "c2")}
    frozen_at = time.monotonic()
    lab.freeze("c3")
    try:
        obj = until(lab, APP, APP, lambda o: bool(member_condition(o, "c3").get("status") == "False"
                      ), 60, "c3 Reachable=False", op)
        assert time.monotonic() - frozen_at < 60
        assert member_condition(obj, "c3")["reason"] == "Unreachable"
        assert member_condition(obj, "c1")["status"] == "True"

        apply_doc(lab, "c1", doc_with([1, 2, 3], heap="512M"))
        for cluster in ("c1", "c2"):
            def updated(c: str = cluster) -> bool:
                return all(h != before[c][s] for s, h in statefulsets(lab, c, APP, APP).items())

            wait_for(updated, 60, f"{cluster} updated while c3 is frozen", op)
        obj = until(lab, APP, APP, lambda o: bool(condition(o, "Degraded").get("status") == "True"
                      ), 30, "Degraded while c3 is frozen", op)
        assert condition(obj, "Degraded")["reason"] == "MemberUnreachable"
    finally:
        lab.thaw("c3")
    obj = until(lab, APP, APP, converged, 120, "converged after thaw", op)
    assert member_condition(obj, "c3")["status"] == "True"


@pytest.mark.prometheus
def test_prometheus_scrapes_the_reconcile_metrics(
    control_plane: Lab, operators: list[OperatorProcess], prometheus: PrometheusServer
) -> None:
    op = operators[0]
    with prometheus.scraping(ScrapeJob("isthmus_operator", (f"127.0.0.1:{op.port}",))):
        samples = prometheus.wait_for(
            'sum(isthmus_operator_reconcile_duration_seconds_count{job="isthmus_operator"}) > 0', timeout=30)
        assert samples[0].value > 0
        reach = prometheus.wait_for('isthmus_operator_member_reachable{job="isthmus_operator"}', timeout=30,
                                    until=lambda s: len(s) == 3)
        assert {s.metric["member"]: s.value for s in reach} == {"c1": 1.0, "c2": 1.0, "c3": 1.0}
        [lock] = prometheus.wait_for('isthmus_operator_lock_held{job="isthmus_operator"}', timeout=30)
        assert lock.value == 1.0


def test_deleting_the_resource_cleans_every_member_and_keeps_the_volumes(
    control_plane: Lab, operators: list[OperatorProcess]
) -> None:
    lab, op = control_plane, operators[0]
    lab.kubectl("c1", "delete", "cassandracluster", APP, "-n", APP, "--timeout=90s", timeout=100)
    for cluster in ("c1", "c2", "c3"):
        left = lab.kubectl(cluster, "get", "statefulsets,services,configmaps,secrets,poddisruptionbudgets,"
                           "serviceexports.multicluster.x-k8s.io", "-n", APP, "-l", f"isthmus.dev/app={APP}",
                           "-o", "name")
        assert left.strip() == "", (cluster, left)
        claims = lab.kubectl(cluster, "get", "pvc", "-n", APP, "-o", "name").split()
        assert len(claims) == 2, (cluster, claims)  # data stays unless isthmus.dev/delete-volumes: "true"
    assert cassandra(lab, APP, APP) == {}
    wait_for(lambda: any(e["reason"] == "Deleted" for e in events(lab, APP, APP)), 15, "Deleted events", op)


def test_the_standby_takes_over_from_a_killed_leader_mid_rollout(
    control_plane: Lab, operators: list[OperatorProcess], tmp_path: Path
) -> None:
    lab, leader = control_plane, operators[0]
    standby = OperatorProcess(lab, "op-b", tmp_path).start()
    operators.append(standby)
    assert leader.leading and "standby" in standby.get("/readyz")

    doc = copy.deepcopy(doc_with([1, 2, 3], name="opha"))
    apply_doc(lab, "c1", doc)
    wait_for(lambda: statefulsets(lab, "c1", "opha", "opha"), 60, "rollout of opha started", leader, interval=0.1)
    killed_at = time.monotonic()
    leader.stop(signal.SIGKILL)
    wait_for(lambda: standby.leading, 30, "op-b leads", standby)
    took_over = time.monotonic() - killed_at
    obj = until(lab, "opha", "opha", converged, 120, "opha finished by op-b", standby)
    assert obj["status"]["readyDCs"] == "3/3"
    assert took_over < 6 + 10, f"standby took {took_over:.1f}s to lead"
    holder = lab.kubectl("c1", "get", "lease", "isthmus-operator", "-n", NAMESPACE,
                         "-o", "jsonpath={.spec.holderIdentity}")
    assert holder == "op-b"
    lab.kubectl("c1", "delete", "cassandracluster", "opha", "-n", "opha", "--timeout=90s", timeout=100)
    assert all(statefulsets(lab, c, "opha", "opha") == {} for c in ("c1", "c2", "c3"))
