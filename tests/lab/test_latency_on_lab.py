"""Distance on a real lab: three minimal clusters behind Toxiproxy, faults set by ``isthmus lab fault``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from fixtures.labspecs import app_doc, fleet_doc, write_specs
from isthmus import console
from isthmus.lab import Lab, default_specs
from isthmus.lab.cli import lab_app
from isthmus.lab.latency import Link, ProxyState, Toxiproxy, rtt_profile

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
runner = CliRunner()


PROFILE = "azure-east-us"


@pytest.fixture(scope="module")
def far_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """``c1..c3``, only etcd and kube-apiserver each, every context through the proxy with the profile's RTTs.

    Started as the README says, ``isthmus lab up --minimal --rtt-profile azure-east-us``.
    """
    state_dir = tmp_path_factory.mktemp("far")
    result = runner.invoke(lab_app, ["up", "-n", "3", "--minimal", "--rtt-profile", PROFILE, "--name", "pytest-far",
                                     "--state-dir", str(state_dir), "--timeout", "180"])
    lab = Lab(name="pytest-far", state_dir=state_dir)
    try:
        assert result.exit_code == 0, result.output
        yield lab
    finally:
        lab.down()


def profile_link(i: int) -> Link:
    return Link(rtt_ms=rtt_profile(PROFILE).rtt_ms(i))


def fault(lab: Lab, *args: str) -> str:
    result = runner.invoke(lab_app, ["fault", *args, "--state-dir", str(lab.state_dir)])
    assert result.exit_code == 0, result.output
    return result.output


def proxy(lab: Lab) -> ProxyState:
    state = ProxyState.load(lab.state_dir)
    assert state is not None
    return state


def test_the_profile_puts_each_cluster_at_its_regions_distance(far_lab: Lab) -> None:
    assert {f"c{i + 1}": far_lab.link(f"c{i + 1}") for i in range(3)} == {
        "c1": Link(rtt_ms=21), "c2": Link(rtt_ms=35), "c3": Link(rtt_ms=76)}
    assert {c.spec.name: c.link for c in far_lab.status().clusters} == {
        "c1": "rtt 21ms", "c2": "rtt 35ms", "c3": "rtt 76ms"}
    saved = (console.out_console, console.err_console)
    console.use_consoles(Console(width=300, soft_wrap=False, no_color=True), saved[1])
    try:
        table = runner.invoke(lab_app, ["status", "--state-dir", str(far_lab.state_dir)])
    finally:
        console.use_consoles(*saved)
    assert table.exit_code == 0, table.output
    # cluster | context | server | zones | etcd | apiserver | kcm | scheduler | kwok | dns | runtime | link
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in table.output.splitlines() if line.startswith("│ c")}
    assert {name: (cells[3:5], cells[5:10], cells[10]) for name, cells in rows.items()} == {
        "c1": (["running", "running"], ["-", "-", "-", "-", "-"], "rtt 21ms"),
        "c2": (["running", "running"], ["-", "-", "-", "-", "-"], "rtt 35ms"),
        "c3": (["running", "running"], ["-", "-", "-", "-", "-"], "rtt 76ms")}


def test_the_kubeconfig_points_through_the_proxy(far_lab: Lab) -> None:
    servers = {c["name"]: c["cluster"]["server"] for c in yaml.safe_load(far_lab.kubeconfig.read_text())["clusters"]}
    assert servers == {f"lab-c{i}": proxy(far_lab).server(f"c{i}") for i in (1, 2, 3)}
    shown = {c.spec.name: c.server for c in far_lab.status().clusters}
    assert shown == {f"c{i}": proxy(far_lab).server(f"c{i}") for i in (1, 2, 3)}


def test_a_round_trip_delays_kubectl_and_clear_removes_it(far_lab: Lab) -> None:
    far_lab.kubectl("c2", "get", "namespaces")  # a warm kubectl cache, so the timed run is one request
    assert "rtt 200ms" in fault(far_lab, "latency", "c2", "--rtt", "200ms")
    started = time.monotonic()
    far_lab.kubectl("c2", "get", "namespace", "default", "-o", "name")
    assert time.monotonic() - started >= 0.2
    assert far_lab.link("c2") == Link(rtt_ms=200)
    assert far_lab.link("c1") == profile_link(0)  # the others keep theirs
    fault(far_lab, "latency", "c2", "--clear")
    with Toxiproxy(proxy(far_lab).api_port) as api:
        assert api.toxics("c2") == []
        assert api.link("c2") == Link()


def test_options_not_given_keep_their_value(far_lab: Lab) -> None:
    fault(far_lab, "latency", "c1", "--jitter", "4ms")
    assert far_lab.link("c1") == Link(rtt_ms=profile_link(0).rtt_ms, jitter_ms=4)  # the profile's RTT stays
    fault(far_lab, "latency", "c1", "--rtt", "30ms")
    fault(far_lab, "latency", "c1", "--bandwidth", "2MB/s")
    try:
        assert far_lab.link("c1") == Link(rtt_ms=30, jitter_ms=4, bandwidth_kbps=2000)
        with Toxiproxy(proxy(far_lab).api_port) as api:
            names = sorted(t["name"] for t in api.toxics("c1"))
        assert names == ["bandwidth-downstream", "bandwidth-upstream", "rtt-downstream", "rtt-upstream"]
    finally:
        fault(far_lab, "latency", "c1", "--clear")
    assert far_lab.link("c1").direct


def test_a_partitioned_cluster_is_unknown_and_the_others_answer(far_lab: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("part"))
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(far_lab.kubeconfig),
           "HOME": str(Path.home())}
    fault(far_lab, "partition", "c3")
    try:
        assert far_lab.link("c3") == Link(rtt_ms=profile_link(2).rtt_ms, partitioned=True)
        run = subprocess.run([ISTHMUS, "status", "-o", "json", "--request-timeout", "3",
                              *[a for f in files for a in ("-f", str(f))]],
                             capture_output=True, text=True, env=env, timeout=60)
    finally:
        fault(far_lab, "partition", "c3", "--heal")
    rows = {d["cluster"]: d for d in json.loads(run.stdout)["datacenters"]}
    assert rows["c3"]["reach"] == "Unknown" and rows["c3"]["health"] == "Unknown", rows["c3"]
    assert "no answer within 3s" in rows["c3"]["error"]  # the request timeout decided it
    assert rows["c1"]["reach"] == "Done" and rows["c2"]["reach"] == "Done", rows
    assert far_lab.link("c3") == profile_link(2)  # healed, the distance stays
    assert far_lab.kubectl("c3", "get", "namespace", "default", "-o", "name").strip() == "namespace/default"


def _lab_processes(state_dir: Path) -> set[int]:
    """PIDs of every process whose command line names the lab's state folder."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(state_dir) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.add(int(proc.name))
            except OSError:
                continue
    return found


def test_a_minimal_lab_runs_only_etcd_and_the_api_server(far_lab: Lab) -> None:
    pids = far_lab.pids()
    assert {name: set(comps) for name, comps in pids.items()} == {
        f"c{i}": {"etcd", "kube-apiserver"} for i in (1, 2, 3)}
    recorded = {pid for comps in pids.values() for pid in comps.values()}
    assert _lab_processes(far_lab.state_dir) == recorded | {proxy(far_lab).process.pid}
    for status in far_lab.status().clusters:
        assert [c.component.value for c in status.components] == ["etcd", "kube-apiserver"]
        assert status.healthy
    # Its nodes exist with their zones and are Ready once and for all (nothing heartbeats them).
    nodes = json.loads(far_lab.kubectl("c2", "get", "nodes", "-o", "json"))["items"]
    assert {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes} == set(default_specs(3)[1].zones)
    assert all({c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"] == "True" for n in nodes)
