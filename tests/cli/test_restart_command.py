"""`isthmus restart` through the real console script, where no cluster is needed: bad input is one line and
exit code 2 before anything is contacted. (Restarting a real ring is ``tests/ring/test_restart_racks.py``.)"""

from __future__ import annotations

from pathlib import Path

from fixtures.console import run, specs
from fixtures.labspecs import app_doc


def test_a_datacenter_the_spec_lacks_is_refused_before_any_cluster_is_contacted(tmp_path: Path) -> None:
    args = specs(tmp_path, app_doc("rst"))
    refused = run("restart", *args, "--dc", "dc1", "--dc", "dc-mars", kubeconfig=tmp_path / "no-such-kubeconfig")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: --dc dc-mars: app rst has no datacenter 'dc-mars' (its datacenters: dc1, dc2, dc3); nothing was "
        "restarted"]
    assert refused.stdout == ""


def test_restart_help_names_its_options() -> None:
    shown = run("restart", "--help")
    assert shown.returncode == 0, shown.stderr
    for option in ("--dc", "--gate-timeout", "--round-timeout", "--one-node-at-a-time", "--lock-wait", "--output"):
        assert option in shown.stdout
