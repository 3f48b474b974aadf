"""Deploying one CassandraCluster across the lab's three real clusters (issue: deploy from one spec).

Every apply here goes through :func:`isthmus.rollout.apply_rollout`, what `isthmus apply` and the
operator run: a revision, the app's lock, gated steps.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load, write_specs
from isthmus.kube import ApplyAction, ClusterRegistry, Health, Reach
from isthmus.lab import Lab
from isthmus.rollout import (
    Outcome,
    RolloutOptions,
    RolloutPhase,
    app_status,
    apply_rollout,
    delete_app,
    render_app,
    wait_healthy,
)

pytestmark = pytest.mark.lab
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
FAST = RolloutOptions(poll_interval=0.3)
SETTLED = replace(FAST, unless_settled=True)  # what `isthmus apply` runs


def spec_args(files: list[Path]) -> list[str]:
    return [arg for f in files for arg in ("-f", str(f))]


def versions(lab: Lab, cluster: str, namespace: str) -> dict[str, str]:
    out = json.loads(lab.kubectl(cluster, "get", "statefulsets,services,configmaps,secrets,poddisruptionbudgets",
                                 "-n", namespace, "-l", "isthmus.dev/app", "-o", "json"))
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in out["items"]}


async def test_apply_converges_every_cluster_and_a_second_apply_writes_nothing(
    lab3: Lab, registry: ClusterRegistry
) -> None:
    fleet, app = load(fleet_doc(), app_doc("shop"))
    result = await apply_rollout(app, fleet, registry, SETTLED)
    assert result.ok, result.state.to_dict()
    assert set(result.reports) == {"c1", "c2", "c3"}
    for name in ("c1", "c2", "c3"):
        assert result.counts(name)[ApplyAction.CREATED] == len(render_app(app, fleet).for_cluster(name))
        sts = lab3.kubectl(name, "get", "statefulsets", "-n", "shop", "-o", "name").split()
        dc = f"dc{name[1]}"
        assert sorted(sts) == [f"statefulset.apps/shop-{dc}-ra", f"statefulset.apps/shop-{dc}-rb"]
        services = lab3.kubectl(name, "get", "services", "-n", "shop", "-o", "name").split()
        assert {f"service/shop-{dc}-all", f"service/shop-{dc}-seeds", f"service/shop-{dc}-client"} <= set(services)

    status = await wait_healthy(app, registry, within=120)
    assert status.healthy, status.to_dict()
    assert [(d.datacenter, d.ready, d.desired) for d in status.datacenters] == [
        ("dc1", 2, 2), ("dc2", 2, 2), ("dc3", 2, 2)]

    # The superuser Secret is identical in every cluster.
    secrets = {n: json.loads(lab3.kubectl(n, "get", "secret", "shop-superuser", "-n", "shop", "-o", "json"))["data"]
               for n in ("c1", "c2", "c3")}
    assert secrets["c1"] == secrets["c2"] == secrets["c3"]

    before = {n: versions(lab3, n, "shop") for n in ("c1", "c2", "c3")}
    writes_before = {n: registry[n].writes for n in registry}
    again = await apply_rollout(app, fleet, registry, SETTLED)
    assert again.ok and set(again.reports) == {"c1", "c2", "c3"}
    assert all(a is ApplyAction.UNCHANGED for r in again.reports.values() for a in r.values()), {
        n: [(str(ref), a.value) for ref, a in r.items() if a is not ApplyAction.UNCHANGED]
        for n, r in again.reports.items()}
    assert {n: registry[n].writes - writes_before[n] for n in registry} == {"c1": 0, "c2": 0, "c3": 0}
    assert {n: versions(lab3, n, "shop") for n in ("c1", "c2", "c3")} == before


async def test_a_change_touches_only_what_it_affects_and_a_removed_rack_is_pruned(
    lab3: Lab, registry: ClusterRegistry
) -> None:
    fleet, app = load(fleet_doc(), app_doc("inv"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    before = versions(lab3, "c2", "inv")

    doc = app_doc("inv")
    doc["spec"]["datacenters"][1]["racks"] = [{"name": "ra", "zone": "region-2a"}]  # type: ignore[index]
    doc["spec"]["datacenters"][1]["size"] = 1  # type: ignore[index]
    _, changed = load(fleet_doc(), doc)
    result = await apply_rollout(changed, fleet, registry, FAST)
    assert result.ok, result.state.to_dict()
    pruned = [str(ref) for ref, action in result.reports["c2"].items() if action is ApplyAction.PRUNED]
    assert pruned == ["StatefulSet inv/inv-dc2-rb"]
    after = versions(lab3, "c2", "inv")
    assert "StatefulSet/inv-dc2-rb" not in after
    unchanged = [k for k in after if before.get(k) == after[k]]
    assert "Service/inv-dc2-client" in unchanged and "Secret/inv-superuser" in unchanged
    # Other clusters saw no change to any object of the app.
    for name in ("c1", "c3"):
        assert result.reports[name] and all(a is ApplyAction.UNCHANGED for a in result.reports[name].values())


async def test_a_frozen_member_is_unknown_and_the_others_finish(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("frz"))
    lab3.freeze("c3")
    try:
        result = await apply_rollout(app, fleet, registry, replace(FAST, timeout=15.0))
        status = await app_status(app, registry)
    finally:
        lab3.thaw("c3")
    assert result.phase is RolloutPhase.PAUSED and "c3" in result.state.message, result.state.to_dict()
    assert any("no answer within" in line for line in result.state.log), result.state.log
    assert result.state.steps["prepare/c1"].outcome is Outcome.DONE
    assert result.state.steps["prepare/c2"].outcome is Outcome.DONE
    assert {d.cluster: d.reach for d in status.datacenters}["c3"] is Reach.UNREACHABLE
    # After thawing (and the breaker's cooldown) the same apply converges c3.
    registry["c3"].breaker.succeeded()
    retry = await apply_rollout(app, fleet, registry, FAST)
    assert retry.ok, retry.state.to_dict()
    assert lab3.kubectl("c3", "get", "statefulset", "frz-dc3-ra", "-n", "frz", "-o", "name").strip()


def test_apply_reports_api_requests_and_writes_per_cluster(lab3: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("reqs"))
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(lab3.kubeconfig), "HOME": str(Path.home())}

    def apply_json() -> dict[str, dict[str, object]]:
        run = subprocess.run([ISTHMUS, "apply", "-o", "json", *spec_args(files)], capture_output=True, text=True,
                             env=env, timeout=180)
        assert run.returncode == 0, run.stdout + run.stderr
        clusters: dict[str, dict[str, object]] = json.loads(run.stdout)["clusters"]
        return clusters

    first = apply_json()
    fleet, app = load(fleet_doc(), app_doc("reqs"))
    objects = {n: len(render_app(app, fleet).for_cluster(n)) for n in first}
    # Every object is written, plus the inventory and the rollout's fence and revision records (and on
    # c1, which holds the lock and the history, those too).
    for name in ("c1", "c2", "c3"):
        assert first[name]["writes"] > objects[name], first[name]
        assert first[name]["requests"] > first[name]["writes"]
    again = apply_json()
    # Nothing to change: not even the lock, the fences or the member records are written.
    assert {n: again[n]["writes"] for n in again} == {"c1": 0, "c2": 0, "c3": 0}
    assert all(isinstance(again[n]["requests"], int) and again[n]["requests"] > 0 for n in again)
    # A member that lost an object is not settled: the next apply puts it back, through the rollout.
    lab3.kubectl("c2", "delete", "service", "reqs-dc2-client", "-n", "reqs")
    repaired = apply_json()
    assert repaired["c2"]["writes"] > 0
    assert lab3.kubectl("c2", "get", "service", "reqs-dc2-client", "-n", "reqs", "-o", "name").strip()


def test_conflict_with_another_field_manager_is_reported_by_name(lab3: Lab, tmp_path: Path) -> None:
    files = write_specs(tmp_path, fleet_doc(), app_doc("cfl"))
    env = {"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "KUBECONFIG": str(lab3.kubeconfig), "HOME": str(Path.home())}
    first = subprocess.run([ISTHMUS, "apply", *spec_args(files)], capture_output=True,
                           text=True, env=env, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    # Someone scales a StatefulSet with their own field manager (server-side), taking .spec.replicas.
    lab3.kubectl("c1", "patch", "statefulset", "cfl-dc1-ra", "-n", "cfl", "--type=merge",
                 "--field-manager=ops-team", "-p", '{"spec":{"replicas":3}}')
    doc = app_doc("cfl", size=4)  # now we want 2 per rack: our replicas field changes too
    files = write_specs(tmp_path, fleet_doc(), doc)
    second = subprocess.run([ISTHMUS, "apply", *spec_args(files)], capture_output=True,
                            text=True, env=env, timeout=180)
    assert second.returncode == 1
    assert "ops-team" in second.stdout and "conflict" in second.stdout
    forced = subprocess.run([ISTHMUS, "apply", "--force-conflicts", *spec_args(files)],
                            capture_output=True, text=True, env=env, timeout=180)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    replicas = lab3.kubectl("c1", "get", "statefulset", "cfl-dc1-ra", "-n", "cfl", "-o", "jsonpath={.spec.replicas}")
    assert replicas == "2"


async def test_delete_removes_only_what_isthmus_created(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("del"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    lab3.kubectl("c1", "create", "configmap", "not-ours", "-n", "del", "--from-literal=a=b")
    outcomes = await delete_app(app, registry)
    assert all(o.reach is Reach.REACHED for o in outcomes.values())
    for name in ("c1", "c2", "c3"):
        left = lab3.kubectl(name, "get", "statefulsets,services,secrets,configmaps,poddisruptionbudgets", "-n", "del",
                            "-l", "isthmus.dev/app=del", "-o", "name").split()
        assert left == [], left
        assert lab3.kubectl(name, "get", "namespace", "del", "-o", "name").strip() == "namespace/del"
        claims = lab3.kubectl(name, "get", "pvc", "-n", "del", "-l", "isthmus.dev/app=del", "-o", "name").split()
        assert len(claims) == 2  # data volumes are kept unless asked
    assert lab3.kubectl("c1", "get", "configmap", "not-ours", "-n", "del", "-o", "name").strip() == \
        "configmap/not-ours"
    status = await app_status(app, registry)
    assert all(d.health is Health.MISSING for d in status.datacenters)


def test_rendered_manifests_are_stable_and_pass_server_dry_run(lab3: Lab, tmp_path: Path) -> None:
    fleet, app = load(fleet_doc(), app_doc("dry"))
    first = render_app(app, fleet)
    second = render_app(app, fleet)
    for name in ("c1", "c2", "c3"):
        lab3.kubectl(name, "create", "namespace", "dry")  # a dry run cannot create the namespace it needs
        text = first.to_yaml(name)
        assert text == second.to_yaml(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        out = lab3.kubectl(name, "apply", "--server-side", "--dry-run=server", "--field-manager=dry", "-f", str(path))
        assert "serverside-applied (server dry run)" in out
        assert out.count("(server dry run)") == len(first.for_cluster(name))


async def test_delete_volumes_removes_the_claims_too(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("vol"))
    assert (await apply_rollout(app, fleet, registry, FAST)).ok
    await wait_healthy(app, registry, within=120)
    claims = lab3.kubectl("c2", "get", "pvc", "-n", "vol", "-l", "isthmus.dev/app=vol", "-o", "name").split()
    assert len(claims) == 2
    outcomes = await delete_app(app, registry, delete_volumes=True)
    report = outcomes["c2"].value
    assert report is not None
    assert sorted(str(o.ref) for o in report.outcomes if o.ref.kind == "PersistentVolumeClaim") == [
        "PersistentVolumeClaim vol/data-vol-dc2-ra-0", "PersistentVolumeClaim vol/data-vol-dc2-rb-0"]
    # The claims go once the protection finalizer sees their pods gone.
    for _ in range(60):
        if not lab3.kubectl("c2", "get", "pvc", "-n", "vol", "-o", "name").split():
            break
        await asyncio.sleep(1)
    assert lab3.kubectl("c2", "get", "pvc", "-n", "vol", "-o", "name").split() == []
