"""A lab's network over its life: ``up`` builds it before the components, ``down`` leaves nothing,
a cluster stopped and started keeps it, and a SIGKILLed lab's network is cleaned by the next ``up``."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.lab import Lab, LabClusterSpec, LabSettings
from isthmus.lab.dnsclient import resolve_a
from isthmus.lab.podnet import ETC_NETNS, LabNetwork, lab_netns, list_netns
from isthmus.lab.state import PodMode

from .netprobe import ip

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = LabClusterSpec(name="n1", region="r1", zones={"r1a": 1}, pod_cidr="10.78.0.0/16",
                      service_cidr="10.178.0.0/16")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text.encode() in cmd and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(name="netlife", specs=[SPEC], state_dir=tmp_path / "state",
              settings=LabSettings(ready_timeout=180.0, pods=PodMode.SIMULATED))
    try:
        yield lab
    finally:
        lab.down()


def _dns_ok(lab: Lab) -> bool:
    net = LabNetwork.load(lab.state_dir)
    return resolve_a(net.cluster_netns("n1"), str(net.dns_ip("n1")), "kubernetes.default.svc.cluster.local") == [
        str(SPEC.kubernetes_service_ip)]


def test_lifecycle_leaves_nothing_and_a_killed_lab_is_cleaned(lab: Lab) -> None:
    lab.up()
    net = LabNetwork.load(lab.state_dir)
    c = net.layout.cluster("n1")
    assert sorted(lab_netns(lab.state_dir)) == sorted([c.netns, net.layout.underlay_netns])
    # Every link in a lab namespace is the lab's own (its prefix), lo, or a pod's eth0.
    for name in lab_netns(lab.state_dir):
        links = [line.split(": ")[1].split("@")[0] for line in ip("-o", "link", netns=name).splitlines()]
        assert all(link == "lo" or link.startswith(net.layout.prefix) for link in links), links
    assert _dns_ok(lab)

    # stop/start keeps the network (and a pod on it)
    pod = net.add_pod("n1", "k1", net.pod_range("n1").network_address + 3)
    lab.stop_cluster("n1")
    assert pod.netns_path.exists() and c.netns in lab_netns(lab.state_dir)
    lab.start_cluster("n1")
    assert _dns_ok(lab)

    # SIGKILL everything the lab started, with a process left inside the pod's namespace
    sleeper = subprocess.Popen(["ip", "netns", "exec", pod.netns, "sleep", "600"])
    try:
        for comps in lab.pids().values():
            for pid in comps.values():
                os.kill(pid, signal.SIGKILL)
        again = Lab(name="netlife", specs=[SPEC], state_dir=lab.state_dir, settings=lab.settings)
        again.up()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not pod.netns_path.exists()
        assert sorted(lab_netns(lab.state_dir)) == sorted([c.netns, net.layout.underlay_netns])
        assert _dns_ok(again)
    finally:
        sleeper.kill()

    pids = [p for comps in lab.pids().values() for p in comps.values()]
    lab.down()
    assert lab_netns(lab.state_dir) == []
    assert not any(n.startswith(net.layout.prefix) for n in list_netns())
    assert not list(ETC_NETNS.glob(f"{net.layout.prefix}-*"))
    assert net.layout.prefix not in ip("-o", "link")
    assert set(pids).isdisjoint(_processes_mentioning(str(lab.state_dir)))
    assert not _processes_mentioning(str(lab.state_dir))
