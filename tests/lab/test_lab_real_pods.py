"""The pod runtime's pods leave nothing behind: `lab down`, and a lab killed with SIGKILL (issue 18).

A pod of the Cassandra image whose command is `sleep` is a real process in a real sandbox without the cost
of a JVM: enough to check processes, network namespaces and exec/logs plumbing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.lab import Lab, LabClusterSpec, LabSettings, PodMode
from isthmus.lab.podnet import lab_netns

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

POD: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {"terminationGracePeriodSeconds": 5, "containers": [
        {"name": "cassandra", "image": "cassandra:5.0.9", "command": ["sh", "-c", "echo started; exec sleep 3600"]}]},
}


def _lab(state: Path) -> Lab:
    spec = LabClusterSpec(name="solo", region="r1", zones={"r1-a": 1}, pod_cidr="10.40.0.0/22",
                          service_cidr="10.41.0.0/20")
    return Lab(name="pytest-real-pods", specs=[spec], state_dir=state, settings=LabSettings(pods=PodMode.REAL))


def _ours(state: Path) -> list[int]:
    """PIDs whose command line names the lab's state folder, or that run inside one of its network namespaces."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmdline:
            pids.append(int(d.name))
    for ns in lab_netns(state):
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


def _sleeper_running(lab: Lab) -> int:
    deadline = time.monotonic() + 180
    while True:
        doc = json.loads(lab.kubectl("solo", "get", "pod", "sleeper", "-o", "json"))
        statuses = doc["status"].get("containerStatuses") or []
        if statuses and statuses[0].get("ready"):
            return int(statuses[0]["containerID"].rsplit("/", 1)[1])
        assert time.monotonic() < deadline, json.dumps(doc.get("status"))
        time.sleep(1)


def test_lab_down_leaves_no_process_or_network_namespace(tmp_path: Path) -> None:
    lab = _lab(tmp_path / "lab")
    lab.up()
    try:
        (tmp_path / "pod.yaml").write_text(yaml.safe_dump(POD))
        lab.kubectl("solo", "apply", "-f", str(tmp_path / "pod.yaml"))
        pid = _sleeper_running(lab)
        assert Path(f"/proc/{pid}").exists()
        assert lab.kubectl("solo", "exec", "sleeper", "-c", "cassandra", "--", "cat", "/etc/hostname").strip() \
            == "sleeper"
        assert "started" in lab.kubectl("solo", "logs", "sleeper")
    finally:
        lab.down()
    assert not Path(f"/proc/{pid}").exists()
    assert _ours(tmp_path / "lab") == []
    assert lab_netns(tmp_path / "lab") == []


def test_a_lab_killed_with_sigkill_is_cleaned_by_the_next_up(tmp_path: Path) -> None:
    state = tmp_path / "lab"
    lab = _lab(state)
    lab.up()
    try:
        (tmp_path / "pod.yaml").write_text(yaml.safe_dump(POD))
        lab.kubectl("solo", "apply", "-f", str(tmp_path / "pod.yaml"))
        pid = _sleeper_running(lab)
    except BaseException:
        lab.down()
        raise
    for cluster in lab.pids().values():  # the lab dies at once: every component, the runtime with them
        for component_pid in cluster.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component_pid, signal.SIGKILL)
    assert Path(f"/proc/{pid}").exists(), "the container outlives its runtime, as an orphan would"
    again = _lab(state)
    again.up()
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            assert time.monotonic() < deadline, "the orphaned container was not cleaned by the next lab up"
            time.sleep(0.2)
    finally:
        again.down()
    assert _ours(state) == []
    assert lab_netns(state) == []
