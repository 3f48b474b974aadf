"""Pure parts of the lab's pod runtime: which images run for real, the kubelet's status and back-off."""

from __future__ import annotations

import re
from pathlib import Path

from isthmus.lab.images import REAL_IMAGE_PATTERN, ImageKind, cassandra_version, image_kind, runs_for_real
from isthmus.lab.pods.status import ContainerState, PodView, backoff_delay, expand, pod_status


def test_cassandra_images_run_for_real_and_others_stay_kwoks() -> None:
    for image in ("cassandra:5.0.9", "docker.io/library/cassandra:4.1", "registry.example/team/cassandra@sha256:ab"):
        assert image_kind(image) is ImageKind.CASSANDRA and re.search(REAL_IMAGE_PATTERN, image)
    assert image_kind("ghcr.io/isthmus-dev/isthmus:0.1.0") is ImageKind.ISTHMUS
    for image in ("nginx:1.27", "cassandra-exporter:1", "bitnami/redis:7", "notcassandra:5"):
        assert image_kind(image) is not ImageKind.CASSANDRA, image
    assert runs_for_real(["isthmus:1", "cassandra:5.0.9"]) and not runs_for_real(["isthmus:1", "nginx"])
    assert cassandra_version("cassandra:5.0.9", default="x") == "5.0.9"
    assert cassandra_version("cassandra@sha256:ab", default="5.0.9") == "5.0.9"
    assert cassandra_version("cassandra:latest", default="5.0.9") == "5.0.9"


def test_crash_loop_back_off_doubles_from_ten_seconds_to_five_minutes() -> None:
    assert [backoff_delay(n) for n in range(0, 8)] == [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


def test_dollar_var_expansion_is_kubernetes() -> None:
    env = {"POD_IP": "10.0.2.5"}
    assert expand("$(POD_IP):9042", env) == "10.0.2.5:9042"
    assert expand("$(UNSET) $$(POD_IP)", env) == "$(UNSET) $(POD_IP)"


def test_pod_status_is_ready_only_when_every_container_is() -> None:
    view = PodView(pod_ip="10.0.2.5", host_ip="127.0.0.1", start_time=100.0, scheduled_at=99.0)
    init = ContainerState("config", "cassandra:5.0.9", init=True).running(101.0, "lab://x").terminated(102.0, 0,
                                                                                                         "Completed")
    running = ContainerState("cassandra", "cassandra:5.0.9").running(103.0, "lab://y")
    status = pod_status(view, [init], [running])
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == "Running" and status["podIP"] == "10.0.2.5"
    assert conditions["Initialized"] == "True" and conditions["Ready"] == "False"
    from dataclasses import replace
    ready = pod_status(view, [init], [replace(running, ready=True, started=True)])
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"
    crashed = running.terminated(110.0, 3, "Error", "no such option").restarted()
    doc = crashed.waiting("CrashLoopBackOff", "back-off 10s").to_status()
    assert doc["restartCount"] == 1 and doc["lastState"]["terminated"]["exitCode"] == 3
    assert doc["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert "qosClass" not in status  # the API server's, immutable


def test_a_freed_pod_address_is_not_handed_out_again_at_once(tmp_path: Path) -> None:
    """Two pods deleted together must not come back with each other's addresses (Cassandra refuses a node
    at an address another host ID held: "A node with address ... already exists"). As host-local IPAM: the
    next free address after the last one given, wrapping round."""
    import ipaddress
    from types import SimpleNamespace
    from typing import Any, cast

    from isthmus.lab.pods.runtime import Runtime, RuntimeSettings

    net = ipaddress.IPv4Network("10.0.8.0/29")  # hosts .1-.6; .1 is the gateway
    provider = SimpleNamespace(pod_range=lambda _cluster: net)
    folder = tmp_path
    rt = Runtime(RuntimeSettings("eu", folder, folder, folder), cast(Any, None), cast(Any, provider))

    def pod(uid: str, ip: str = "") -> Any:
        return SimpleNamespace(uid=uid, pod={"status": {"podIP": ip}} if ip else {})

    a, b = rt.allocate_ip(pod("a")), rt.allocate_ip(pod("b"))
    assert (str(a), str(b)) == ("10.0.8.2", "10.0.8.3")
    rt.used_ips.clear()  # both deleted together
    c, d = rt.allocate_ip(pod("c")), rt.allocate_ip(pod("d"))
    assert (str(c), str(d)) == ("10.0.8.4", "10.0.8.5")  # not .2 and .3 again, in either order
    e = rt.allocate_ip(pod("e"))
    assert str(e) == "10.0.8.6"
    assert str(rt.allocate_ip(pod("f"))) == "10.0.8.2"  # wraps round to the first free one
    assert str(rt.allocate_ip(pod("c", "10.0.8.4"))) == "10.0.8.4"  # a pod keeps the address it has
