"""The lab DNS from inside a pod's network namespace, on a real two-cluster lab.

Names resolve through the pod's own resolver (``ip netns exec <pod> getent``, which reads the
``/etc/netns/<pod>/resolv.conf`` that ``add_pod`` wrote) from live Services and EndpointSlices,
and ``clusterset.local`` names resolve across clusters only while a ServiceExport exists.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import dns.rdatatype
import pytest

from isthmus.lab import Lab, LabClusterSpec, LabSettings
from isthmus.lab.dnsclient import query
from isthmus.lab.podnet import LabNetwork, PodNetwork
from isthmus.lab.state import PodMode

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

NS = "dnst"
SPECS = [LabClusterSpec(name=f"d{i}", region=f"r{i}", zones={f"r{i}a": 1}, pod_cidr=f"10.{i}.0.0/16",
                        service_cidr=f"172.16.{16 * i}.0/20") for i in (1, 2)]
T = TypeVar("T")

def headless(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"clusterIP": "None", "ports": [{"name": "cql", "port": 9042}]}}


def slice_of(service: str, endpoints: list[tuple[str, str, bool]]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service}-manual", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "tests.isthmus.dev"}},
            "addressType": "IPv4", "ports": [{"name": "cql", "port": 9042, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "hostname": host, "conditions": {"ready": ready}}
                          for ip, host, ready in endpoints]}


def getent(pod: PodNetwork, name: str) -> list[str]:
    """The addresses the pod's own resolver finds for ``name`` (empty when it finds none)."""
    out = subprocess.run(["ip", "netns", "exec", pod.netns, "getent", "ahostsv4", name],
                         capture_output=True, text=True, timeout=20)
    if out.returncode == 2:  # not found
        return []
    assert out.returncode == 0, out.stderr
    return sorted({line.split()[0] for line in out.stdout.splitlines()})


def eventually(what: str, probe: Callable[[], T], ok: Callable[[T], bool], *, within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while True:
        got = probe()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {got!r} after {within:.0f}s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(name="dns", specs=SPECS, state_dir=tmp_path_factory.mktemp("labdns") / "state",
              settings=LabSettings(ready_timeout=180.0, pods=PodMode.SIMULATED))
    lab.up()
    try:
        for c in ("d1", "d2"):
            with lab.api(c) as api:
                api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": NS}})
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def pod(lab: Lab) -> PodNetwork:
    net = LabNetwork.load(lab.state_dir)  # as the pod runtime does, from the persisted state
    return net.add_pod("d1", "p1", net.pod_range("d1").network_address + 10, namespace=NS)


def test_local_names_resolve_to_live_objects(lab: Lab, pod: PodNetwork) -> None:
    with lab.api("d1") as api:
        api.create(f"/api/v1/namespaces/{NS}/services", headless("db"))
        api.create(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                   slice_of("db", [("10.1.128.30", "db-0", True), ("10.1.128.31", "db-1", False)]))
        api.create(f"/api/v1/namespaces/{NS}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 80}]}})
        web_ip = api.get(f"/api/v1/namespaces/{NS}/services/web")["spec"]["clusterIP"]
    eventually("db resolving", lambda: getent(pod, "db.dnst.svc.cluster.local"), lambda r: r == ["10.1.128.30"])
    assert getent(pod, "db") == ["10.1.128.30"]  # through the search path of the pod's namespace
    assert getent(pod, "db-0.db") == ["10.1.128.30"]
    assert getent(pod, "db-1.db.dnst.svc.cluster.local") == []  # not ready
    eventually("web resolving", lambda: getent(pod, "web"), lambda r: r == [web_ip])
    assert getent(pod, "kubernetes.default") == [str(SPECS[0].kubernetes_service_ip)]
    assert getent(pod, "nothing-here") == []
    assert getent(pod, "example.com") == []  # no recursion to the outside
    srv = query(pod.netns, str(SPECS[0].dns_service_ip), "_http._tcp.web.dnst.svc.cluster.local", "SRV", tcp=True)
    assert [(r.port, r.target.to_text()) for r in srv.answer[0]] == [(80, "web.dnst.svc.cluster.local.")]
    assert srv.answer[0].rdtype == dns.rdatatype.SRV


def test_an_endpoint_turning_ready_resolves_within_a_second(lab: Lab, pod: PodNetwork) -> None:
    eventually("db resolving", lambda: getent(pod, "db.dnst.svc.cluster.local"), lambda r: r != [])
    with lab.api("d1") as api:
        api.merge_patch(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/db-manual",
                        slice_of("db", [("10.1.128.30", "db-0", True), ("10.1.128.31", "db-1", True)]))
    started = time.monotonic()
    eventually("db-1 turning ready", lambda: getent(pod, "db.dnst.svc.cluster.local"),
               lambda r: r == ["10.1.128.30", "10.1.128.31"], within=5.0)
    assert time.monotonic() - started < 1.5
    assert getent(pod, "db-1.db") == ["10.1.128.31"]


def test_clusterset_name_resolves_only_while_exported(lab: Lab, pod: PodNetwork) -> None:
    remote = "seeds.dnst.svc.clusterset.local"
    with lab.api("d2") as api:
        api.create(f"/api/v1/namespaces/{NS}/services", headless("seeds"))
        api.create(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
                   slice_of("seeds", [("10.2.128.40", "seeds-0", True)]))
    eventually("the local db", lambda: getent(pod, "db"), lambda r: r != [])
    with lab.api("d2") as api:
        assert api.status(f"/apis/multicluster.x-k8s.io/v1alpha1/namespaces/{NS}/serviceexports") == 200
        assert getent(pod, remote) == []  # a Service alone exports nothing
        path = f"/apis/multicluster.x-k8s.io/v1alpha1/namespaces/{NS}/serviceexports"
        api.create(path, {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
                          "metadata": {"name": "seeds", "namespace": NS}})
        eventually("the exported seeds", lambda: getent(pod, remote), lambda r: r == ["10.2.128.40"])
        assert getent(pod, "seeds-0.d2.seeds.dnst.svc.clusterset.local") == ["10.2.128.40"]
        assert getent(pod, "seeds.dnst.svc.cluster.local") == []  # d1 has no such Service
        api.delete(f"{path}/seeds")
        eventually("the unexported seeds", lambda: getent(pod, remote), lambda r: r == [])
    assert getent(pod, "seeds-0.d2.seeds.dnst.svc.clusterset.local") == []


def test_status_names_the_network_and_what_this_kernel_lacks(lab: Lab) -> None:
    net = lab.status().network
    assert net["up"] is True and net["routing"] == "tunnel" and net["tunnel"] == "vxlan"
    assert net["routeMTU"] == 1450 and net["encryption"] == "none" and net["fallbacks"] == []
    assert net["clusters"]["d2"]["dnsIP"] == "172.16.32.10"
    assert IPv4Address(net["clusters"]["d1"]["gateway"]) == IPv4Address("10.1.128.1")
    assert Path(f"/run/netns/{net['clusters']['d1']['netns']}").exists()
