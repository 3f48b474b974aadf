"""``spec.keyspaces`` through the installed console script: the plan shows the keyspace steps; replication
the datacenters cannot hold is refused before anything is written or any cluster is asked (exit code 2)."""

from __future__ import annotations

from pathlib import Path

from fixtures.console import run, specs
from fixtures.labspecs import app_doc


def _doc(keyspaces: list[dict[str, object]]) -> dict[str, object]:
    doc = app_doc("ksc")
    doc["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    return doc


def test_rollout_plan_shows_each_keyspace_step(tmp_path: Path) -> None:
    args = specs(tmp_path, _doc([{"name": "orders", "replication": {"dc1": 2, "dc2": 2}, "consistency": "ONE"}]))
    shown = run("rollout", "plan", *args)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("rollout plan of ksc: 13 steps;")
    assert lines[-6:-4] == ["wave keyspaces:",
                            "  10. [keyspaces] keyspace/orders (gated): keyspace orders: NetworkTopologyStrategy "
                            "dc1=2, dc2=2 (read at ONE); create it, or change its replication to this, then repair "
                            "where replicas are added"]
    assert lines[-4] == "wave finalize:"


def test_replication_the_datacenters_cannot_hold_is_refused_before_anything_runs(tmp_path: Path) -> None:
    args = specs(tmp_path, _doc([{"name": "orders", "replication": {"dc1": 3}, "consistency": "ONE"},
                                 {"name": "events", "replication": {"dc2": 2}}]))
    app_file = args[-1]
    line = next(i for i, text in enumerate(Path(app_file).read_text().splitlines(), 1) if "dc1: 3" in text)
    expected = [
        f"{app_file}:{line}: spec.keyspaces[0].replication.dc1: keyspace 'orders' asks for 3 replicas in datacenter "
        "'dc1', which has 2 nodes (spec.datacenters[0].size); a datacenter holds at most one replica per node: "
        "lower the replicas or grow the datacenter",
        "spec.keyspaces[1].replication.dc2: keyspace 'events' is read at LOCAL_QUORUM, which needs 2 of the 2 "
        "replicas in datacenter 'dc2'"]
    out = tmp_path / "out"
    kubeconfig = tmp_path / "no-such-kubeconfig"
    for command in (("rollout", "plan"), ("apply",), ("render", "--out", str(out))):
        refused = run(*command, *args, kubeconfig=kubeconfig)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        said = " ".join(refused.stderr.split())
        assert expected[0] in said and expected[1] in said, (command, refused.stderr)
        assert "Traceback" not in refused.stderr
    assert not out.exists()  # nothing written
