"""Lab lifecycle on small private labs: clean ``down``, stale-lab cleanup, a failing component."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.lab import (
    ComponentError,
    Lab,
    LabAlreadyRunningError,
    LabClusterSpec,
    LabNotRunningError,
    LabSettings,
)
from isthmus.lab.processes import port_is_free

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

SMALL = LabClusterSpec(name="s1", region="r1", zones={"r1a": 1}, pod_cidr="10.77.0.0/16",
                       service_cidr="10.177.0.0/16")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmd and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture
def small_lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(name="small", specs=[SMALL], state_dir=tmp_path / "state")
    try:
        yield lab
    finally:
        lab.down()


def test_down_leaves_no_process_port_or_lock(small_lab: Lab) -> None:
    small_lab.up()
    pids = [pid for comps in small_lab.pids().values() for pid in comps.values()]
    assert len(pids) == 7 and all(_pid_alive(p) for p in pids)  # five components, the DNS and the runtime
    ports = [int(s.server.rsplit(":", 1)[1]) for s in small_lab.status().clusters]
    assert "s1-r1a-1" in small_lab.kubectl("s1", "get", "nodes", "-o", "name")
    small_lab.freeze("s1")  # down must also kill a frozen API server
    small_lab.down()
    assert not [p for p in pids if _pid_alive(p)]
    assert all(port_is_free(p) for p in ports)
    assert not small_lab.state_dir.exists()
    assert not _processes_mentioning(str(small_lab.state_dir))
    with pytest.raises(LabNotRunningError):
        small_lab.status()
    small_lab.down()  # idempotent


def test_stale_lab_is_cleaned_on_up(small_lab: Lab, tmp_path: Path) -> None:
    small_lab.up()
    with pytest.raises(LabAlreadyRunningError):
        Lab(name="small", state_dir=small_lab.state_dir).up()
    old = small_lab.pids()["s1"]
    # a killed run: the API server died, the rest lingers
    os.kill(old["kube-apiserver"], 9)
    deadline = time.monotonic() + 10.0  # SIGKILL of a many-threaded Go process takes a moment to land
    while _pid_alive(old["kube-apiserver"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    again = Lab(name="small", specs=[SMALL], state_dir=small_lab.state_dir)
    again.up()
    assert not [p for p in old.values() if _pid_alive(p)]
    new = again.pids()["s1"]
    assert set(new.values()).isdisjoint(old.values())
    assert all(c.healthy for c in again.status().clusters)
    assert "s1-r1a-1" in again.kubectl("s1", "get", "nodes", "-o", "name")


def test_failing_component_raises_with_its_log_and_stops_everything(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    state = tmp_path / "state"
    # The port block starts with etcd's client port: etcd cannot bind it.
    lab = Lab(name="broken", specs=[SMALL], state_dir=state, settings=LabSettings(base_port=port))
    try:
        with pytest.raises(ComponentError) as info:
            lab.up()
        err = info.value
        assert err.component == "etcd" and err.cluster == "s1"
        assert "address already in use" in err.log_tail
        assert "etcd" in str(err).splitlines()[0]
        assert not _processes_mentioning(str(state))
        with pytest.raises(LabNotRunningError):
            lab.status()
    finally:
        busy.close()
        lab.down()
