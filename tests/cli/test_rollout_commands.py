"""`isthmus rollout plan`, `diff` and `history` through the real console script (a subprocess of the
installed ``isthmus``), as a user runs them: the plan with no cluster, the other two against the lab."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.console import run, specs
from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.lab import Lab
from isthmus.rollout import plan_rollout


def test_rollout_plan_prints_every_step_in_order_without_a_cluster(tmp_path: Path) -> None:
    doc = app_doc("rpl")
    doc["spec"]["rollout"] = {"canary": "dc2", "soakSeconds": 30}  # type: ignore[index]
    args = specs(tmp_path, doc)
    shown = run("rollout", "plan", *args)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == ("rollout plan of rpl: 12 steps; maxConcurrentDatacenters=1, soak=30s, progressDeadline=600s, "
                        "failureBudget=0, onFailure=pause")
    steps = [line.split("] ")[1].split(" (")[0] for line in lines if line.lstrip()[:1].isdigit()]
    assert steps == ["prepare/c1", "prepare/c2", "prepare/c3", "rack/dc2/ra", "rack/dc2/rb", "rack/dc1/ra",
                     "rack/dc1/rb", "rack/dc3/ra", "rack/dc3/rb", "finalize/c1", "finalize/c2", "finalize/c3"]
    assert "  4. [dc2] rack/dc2/ra (gated): roll rack ra of datacenter dc2 in c2" in shown.stdout
    as_json = run("rollout", "plan", *args, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == plan_rollout(load(fleet_doc(), doc)[1]).to_dict()


def test_rollout_plan_of_a_missing_file_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    missing = run("rollout", "plan", "-f", tmp_path / "nope.yaml")
    assert missing.returncode == 2
    assert "nope.yaml" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.lab
def test_diff_and_history_through_the_console_script(lab3: Lab, tmp_path: Path) -> None:
    args = specs(tmp_path, app_doc("cdh"))
    before = run("diff", *args, kubeconfig=lab3.kubeconfig)
    assert before.returncode == 1, before.stdout + before.stderr  # nothing applied yet: everything would change
    assert "c2: " in before.stdout and "object(s) would change" in before.stdout
    assert run("apply", *args, kubeconfig=lab3.kubeconfig).returncode == 0

    same = run("diff", *args, kubeconfig=lab3.kubeconfig)
    assert same.returncode == 0, same.stdout + same.stderr
    assert [line for line in same.stdout.splitlines() if line.startswith("c")] == [
        "c1: 0 object(s) would change", "c2: 0 object(s) would change", "c3: 0 object(s) would change"]
    lab3.kubectl("c2", "patch", "configmap", "cdh-dc2-config", "-n", "cdh", "--type", "merge",
                 "-p", json.dumps({"data": {"cassandra.yaml": "edited: by hand\n"}}))
    refused = run("diff", *args, kubeconfig=lab3.kubeconfig)  # kubectl patch now owns the field
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert 'c2: Failed (cluster c2: ConfigMap cdh/cdh-dc2-config: 409 Conflict: Apply failed with 1 conflict: ' \
           'conflict with "kubectl-patch"' in refused.stdout
    assert "c1: 0 object(s) would change" in refused.stdout and "c3: 0 object(s) would change" in refused.stdout
    edited = run("diff", *args, "--force-conflicts", kubeconfig=lab3.kubeconfig)
    assert edited.returncode == 1, edited.stdout + edited.stderr
    assert "c2: 1 object(s) would change" in edited.stdout
    assert any(line.startswith("-") and "edited: by hand" in line for line in edited.stdout.splitlines())
    assert "c1: 0 object(s) would change" in edited.stdout

    args = specs(tmp_path, app_doc("cdh", heap="512M"))
    assert run("apply", *args, kubeconfig=lab3.kubeconfig).returncode == 0
    shown = run("history", *args, kubeconfig=lab3.kubeconfig)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "history of cdh" in shown.stdout
    assert [line for line in shown.stdout.splitlines() if ": runs revision" in line] == [
        "c1: runs revision 2", "c2: runs revision 2", "c3: runs revision 2"]
    as_json = json.loads(run("history", *args, "-o", "json", kubeconfig=lab3.kubeconfig).stdout)
    assert [r["number"] for r in as_json["revisions"]] == [1, 2]
    assert [r["origin"] for r in as_json["revisions"]] == ["apply", "apply"]
    assert {c: m["revision"] for c, m in as_json["members"].items()} == {"c1": 2, "c2": 2, "c3": 2}
