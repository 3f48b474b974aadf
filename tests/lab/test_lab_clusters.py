"""Three real control planes (the shared ``lab3`` fixture): nodes, pods, and the faults."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from isthmus.lab import ComponentState, Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]


def _eventually(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _json(lab: Lab, cluster: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(lab.kubectl(cluster, *args, "-o", "json"))
    return out


def _ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def _statefulset(name: str, replicas: int) -> str:
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    })


def _apply(lab: Lab, cluster: str, manifest: str) -> None:
    import subprocess

    kubectl = lab._binaries().path("kubectl")
    subprocess.run([str(kubectl), f"--kubeconfig={lab.kubeconfig}", f"--context={lab.context(cluster)}",
                    "apply", "-f", "-"], input=manifest, text=True, check=True, capture_output=True)


@pytest.fixture
def sts_pods(lab3: Lab) -> Iterator[Callable[[str, str], list[dict[str, Any]]]]:
    def pods(cluster: str, app: str) -> list[dict[str, Any]]:
        return list(_json(lab3, cluster, "get", "pods", "-n", "default", "-l", f"app={app}")["items"])
    yield pods


def test_three_clusters_list_their_zoned_nodes(lab3: Lab) -> None:
    assert [s.name for s in lab3.specs] == ["c1", "c2", "c3"]
    status = lab3.status()
    assert all(c.healthy for c in status.clusters)
    for spec in lab3.specs:
        nodes = _json(lab3, spec.name, "get", "nodes")["items"]
        got = {n["metadata"]["name"]: n["metadata"]["labels"] for n in nodes}
        assert set(got) == {n.name for n in spec.nodes}
        for node in spec.nodes:
            labels = got[node.name]
            assert labels["topology.kubernetes.io/region"] == spec.region
            assert labels["topology.kubernetes.io/zone"] == node.zone
        assert all(_ready(n) for n in nodes)
    assert lab3.env() == f"export KUBECONFIG={lab3.kubeconfig}"


def test_statefulset_pods_are_ready_with_ips_from_the_cluster_pod_cidr(
        lab3: Lab, sts_pods: Callable[[str, str], list[dict[str, Any]]]) -> None:
    for spec in lab3.specs:
        _apply(lab3, spec.name, _statefulset("web", 3))
    for spec in lab3.specs:
        def three_ready(cluster: str = spec.name) -> bool:
            pods = sts_pods(cluster, "web")
            return len(pods) == 3 and all(_ready(p) and p["status"].get("podIP") for p in pods)

        _eventually(f"3 Ready pods in {spec.name}", three_ready)
        ips = {ipaddress.ip_address(p["status"]["podIP"]) for p in sts_pods(spec.name, "web")}
        assert len(ips) == 3
        assert all(ip in spec.pod_network for ip in ips), (spec.name, ips)
        sts = _json(lab3, spec.name, "get", "statefulset", "web", "-n", "default")
        assert sts["status"].get("readyReplicas") == 3


def test_frozen_apiserver_times_out_and_thaws(lab3: Lab) -> None:
    with lab3.api("c2", timeout=2.0) as api:
        assert api.status("/readyz") == 200
        lab3.freeze("c2")
        try:
            assert {c.spec.name: c.components[1].state for c in lab3.status().clusters}["c2"] \
                is ComponentState.FROZEN
            with pytest.raises(httpx.TimeoutException):
                api.status("/api/v1/nodes")
            # the other clusters do not care
            with lab3.api("c1", timeout=30.0) as other:
                assert other.status("/readyz") == 200
        finally:
            lab3.thaw("c2")
        _eventually("c2 answers after thaw", lambda: api.status("/api/v1/nodes") == 200, timeout=30)
    assert "c2-region-2a-1" in lab3.kubectl("c2", "get", "nodes", "-o", "name")


def test_not_ready_node_makes_its_pods_not_ready_and_recovers(
        lab3: Lab, sts_pods: Callable[[str, str], list[dict[str, Any]]]) -> None:
    _apply(lab3, "c3", _statefulset("faulty", 4))
    _eventually("4 Ready pods in c3", lambda: len(sts_pods("c3", "faulty")) == 4
                and all(_ready(p) for p in sts_pods("c3", "faulty")))
    node = sts_pods("c3", "faulty")[0]["spec"]["nodeName"]
    lab3.node_not_ready("c3", node)
    try:
        assert not _ready(_json(lab3, "c3", "get", "node", node))
        pods = sts_pods("c3", "faulty")
        on_node = [p for p in pods if p["spec"]["nodeName"] == node]
        elsewhere = [p for p in pods if p["spec"]["nodeName"] != node]
        assert on_node and not any(_ready(p) for p in on_node)
        assert all(_ready(p) for p in elsewhere)
        # and it stays that way (kwok does not heal it behind our back)
        time.sleep(3)
        assert not any(_ready(p) for p in sts_pods("c3", "faulty") if p["spec"]["nodeName"] == node)
    finally:
        lab3.node_recover("c3", node)
    assert _ready(_json(lab3, "c3", "get", "node", node))
    _eventually("all c3 pods Ready again", lambda: all(_ready(p) for p in sts_pods("c3", "faulty")), timeout=30)


def test_stopped_cluster_restarts_on_the_same_ports_with_its_data(lab3: Lab) -> None:
    before = lab3.status().clusters[0]
    lab3.kubectl("c1", "create", "configmap", "survives-restart", "--from-literal=k=v")
    lab3.stop_cluster("c1")
    stopped = lab3.status().clusters[0]
    assert all(c.state is ComponentState.STOPPED for c in stopped.components)
    with lab3.api("c2") as api:  # others unaffected
        assert api.status("/readyz") == 200
    lab3.start_cluster("c1")
    after = lab3.status().clusters[0]
    assert after.healthy and after.server == before.server
    assert lab3.kubectl("c1", "get", "configmap", "survives-restart", "-o", "jsonpath={.data.k}") == "v"


def test_unknown_targets_are_user_errors(lab3: Lab) -> None:
    from isthmus.lab import UnknownTargetError

    with pytest.raises(UnknownTargetError, match="no cluster 'c9'"):
        lab3.freeze("c9")
    with pytest.raises(UnknownTargetError, match="no node 'nope'"):
        lab3.node_not_ready("c1", "nope")
    with pytest.raises(UnknownTargetError, match="no lab component"):
        lab3.log_path("c1", "kubelet")
