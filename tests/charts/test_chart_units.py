"""The pure parts of a ChartRelease: spec, values merging, placement, plans, post-processing, health."""

from __future__ import annotations

from typing import Any

import pytest
from _charts import load_release, release_doc

from fixtures.labspecs import fleet_doc
from isthmus.kube import Health, job_health, object_health
from isthmus.render import RenderError, render
from isthmus.render.charts import (
    SECRET_PLACEHOLDER,
    hook_order,
    hooks_key,
    keep_live,
    mask_secrets,
    parse_rendered,
    random_paths,
)
from isthmus.rollout import plan_rollout
from isthmus.spec import SpecError, check_consistency, load_text, merge_values


def test_values_merge_as_helm_merges_them() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    assert merge_values(base, {"a": {"b": 2, "c": [3]}, "e": None}) == {"a": {"b": 2, "c": [3]}, "d": "x", "e": None}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}  # untouched


def test_region_then_cluster_overrides_win_in_that_order() -> None:
    _, release = load_release(release_doc("v", values={"replicaCount": 1, "x": {"y": 1, "z": 1}}, overrides=[
        {"cluster": "c2", "values": {"x": {"z": 3}}},
        {"region": "region-2", "values": {"replicaCount": 5, "x": {"y": 2, "z": 2}}},
    ]))
    assert release.values_for("c1", "region-1") == {"replicaCount": 1, "x": {"y": 1, "z": 1}}
    assert release.values_for("c2", "region-2") == {"replicaCount": 5, "x": {"y": 2, "z": 3}}


def test_placement_all_list_and_selector() -> None:
    fleet = fleet_doc()
    fleet["spec"]["clusters"][1]["labels"] = {"tier": "edge"}
    fleet["spec"]["clusters"][2]["labels"] = {"tier": "edge"}
    assert load_release(release_doc("p"), fleet)[1].member_clusters() == ["c1", "c2", "c3"]
    assert load_release(release_doc("p", clusters=["c3", "c1"]), fleet)[1].member_clusters() == ["c3", "c1"]
    picked = load_release(release_doc("p", clusterSelector={"matchLabels": {"tier": "edge"}}), fleet)[1]
    assert picked.member_clusters() == ["c2", "c3"]
    by_region = load_release(release_doc("p", clusterSelector={"matchLabels": {"isthmus.dev/region": "region-3"}}))[1]
    assert by_region.member_clusters() == ["c3"]


def test_an_override_for_an_unknown_cluster_is_refused_with_its_line() -> None:
    import yaml

    doc = release_doc("u", overrides=[{"cluster": "c9", "values": {"a": 1}}])
    specs = load_text(yaml.safe_dump(fleet_doc()) + "---\n" + yaml.safe_dump(doc), "both.yaml")
    with pytest.raises(SpecError, match=r"both\.yaml:\d+: spec\.overrides\[0\]\.cluster: override for cluster 'c9'"):
        check_consistency(specs)


def test_an_override_names_one_target() -> None:
    with pytest.raises(SpecError, match="exactly one of 'region' or 'cluster'"):
        load_release(release_doc("o", overrides=[{"cluster": "c1", "region": "region-1", "values": {}}]))


def test_the_plan_is_waves_of_clusters_canary_first_and_reversed_for_rollback() -> None:
    _, release = load_release(release_doc("w", rollout={"canary": "c2", "maxConcurrentClusters": 2}))
    plan = plan_rollout(release)
    assert [w.name for w in plan.waves] == ["seed: c2", "2: c1, c3", "finalize"]
    assert [s.id for s in plan.steps] == ["release/c2", "release/c1", "release/c3", "finalize/c1", "finalize/c2",
                                          "finalize/c3"]
    back = plan_rollout(release, reverse=True)
    assert [s.id for s in back.steps][:3] == ["release/c3", "release/c1", "release/c2"]
    assert all(s.disruptive for s in plan.steps)


def test_a_canary_that_is_not_a_member_is_refused() -> None:
    with pytest.raises(SpecError, match="canary cluster 'c3' is not a member"):
        load_release(release_doc("w", clusters=["c1", "c2"], rollout={"canary": "c3"}))


RENDERED = """
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: n}
data: {password: cmFuZG9t}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  labels: {app.kubernetes.io/managed-by: Helm, app.kubernetes.io/name: db}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: db}}
  template:
    metadata: {labels: {app.kubernetes.io/name: db}, annotations: {checksum/secret: abc}}
    spec: {containers: [{name: db, image: db:1}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: late
  annotations: {helm.sh/hook: post-upgrade, helm.sh/hook-weight: "5"}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: j, image: j}]}}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: early
  annotations: {helm.sh/hook: "pre-install,pre-upgrade", helm.sh/hook-weight: "-1"}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: j, image: j}]}}}
"""


def _rendered(fleet_release: Any, text: str = RENDERED) -> Any:
    fleet, release = fleet_release
    objects = {c: parse_rendered(text, chart="x", cluster=c) for c in release.member_clusters()}
    return render(release, fleet, rendered=objects)


def test_rendered_objects_get_labels_namespace_and_hash_and_hooks_stay_apart() -> None:
    manifests = _rendered(load_release(release_doc("db", clusters=["c1"])))
    objs = {o["kind"]: o for o in manifests.for_cluster("c1")}
    assert set(objs) == {"Namespace", "Secret", "StatefulSet"}
    sts = objs["StatefulSet"]
    assert sts["metadata"]["namespace"] == "db"
    assert sts["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "isthmus", "app.kubernetes.io/name": "db",
                                         "isthmus.dev/app": "db"}
    assert sts["spec"]["template"]["metadata"]["labels"] == {"app.kubernetes.io/name": "db", "isthmus.dev/app": "db"}
    assert sts["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "db"}}
    assert "labels" not in sts["spec"]["volumeClaimTemplates"][0]["metadata"]
    assert "isthmus.dev/content-hash" in sts["metadata"]["annotations"]
    hooks = hook_order(manifests.for_cluster(hooks_key("c1")))
    assert [(h.name, h.pre, sorted(h.phases)) for h in hooks] == [
        ("early", True, ["pre-install", "pre-upgrade"]), ("late", False, ["post-upgrade"])]
    assert hooks[0].delete_policies == frozenset({"before-hook-creation"})


@pytest.mark.parametrize(("hook", "kind", "words"), [
    ("pre-delete", "Job", "hook pre-delete is not supported"),
    ("test", "Pod", "hook test is not supported"),
    ("pre-install", "ConfigMap", "only Job hooks are supported"),
])
def test_unsupported_hooks_are_refused_clearly(hook: str, kind: str, words: str) -> None:
    text = f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: h\n  annotations: {{helm.sh/hook: {hook}}}\n"
    with pytest.raises(RenderError, match=f"cluster c1: {kind} h is a Helm hook .*{words}"):
        _rendered(load_release(release_doc("db", clusters=["c1"])), text)


def test_output_that_is_not_objects_is_refused() -> None:
    with pytest.raises(RenderError, match="not a Kubernetes object"):
        parse_rendered("- just\n- a list\n", chart="x", cluster="c1")


def test_random_leaves_are_found_and_taken_from_the_live_object() -> None:
    first = parse_rendered(RENDERED, chart="x", cluster="c1")
    second = parse_rendered(RENDERED.replace("cmFuZG9t", "b3RoZXI=").replace("checksum/secret: abc",
                                                                            "checksum/secret: def"),
                            chart="x", cluster="c1")
    rand = random_paths(first, second)
    assert rand == {("v1", "Secret", "n", "s"): frozenset({("data", "password")}),
                    ("apps/v1", "StatefulSet", "", "db"): frozenset(
                        {("spec", "template", "metadata", "annotations", "checksum/secret")})}
    live = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "bGl2ZQ=="}}
    kept = keep_live(first[0], rand[("v1", "Secret", "n", "s")], live)
    assert kept["data"] == {"password": "bGl2ZQ=="} and first[0]["data"] == {"password": "cmFuZG9t"}
    assert keep_live(first[0], rand[("v1", "Secret", "n", "s")], None) is first[0]


def test_stored_revisions_hold_no_secret_value_but_keep_the_hash() -> None:
    manifests = _rendered(load_release(release_doc("db", clusters=["c1"])))
    masked = mask_secrets(manifests)
    real = next(o for o in manifests.for_cluster("c1") if o["kind"] == "Secret")
    kept = next(o for o in masked.for_cluster("c1") if o["kind"] == "Secret")
    assert kept["data"] == {"password": SECRET_PLACEHOLDER} and real["data"] == {"password": "cmFuZG9t"}
    assert kept["metadata"]["annotations"] == real["metadata"]["annotations"]


def _with(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "x", "generation": 2}, **fields}


@pytest.mark.parametrize(("obj", "health"), [
    (_with("Deployment", spec={"replicas": 2}, status={"observedGeneration": 1}), Health.PROGRESSING),
    (_with("Deployment", spec={"replicas": 2}, status={"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2,
                                                        "readyReplicas": 2, "availableReplicas": 2}), Health.HEALTHY),
    (_with("Deployment", spec={"replicas": 2}, status={"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3,
                                                        "readyReplicas": 2, "availableReplicas": 2}),
     Health.PROGRESSING),
    (_with("DaemonSet", status={"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                                "numberReady": 2}), Health.PROGRESSING),
    (_with("DaemonSet", status={"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3,
                                "numberReady": 3}), Health.HEALTHY),
    (_with("Job", status={"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
     Health.DEGRADED),
    (_with("Job", status={"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}), Health.HEALTHY),
    (_with("PodDisruptionBudget", status={"observedGeneration": 2, "currentHealthy": 1, "desiredHealthy": 2}),
     Health.PROGRESSING),
    (_with("PersistentVolumeClaim", status={"phase": "Bound"}), Health.HEALTHY),
    (_with("PersistentVolumeClaim", status={"phase": "Pending"}), Health.PROGRESSING),
    (_with("Service", spec={"type": "LoadBalancer"}), Health.PROGRESSING),
    (_with("Service", spec={"type": "ClusterIP"}), Health.HEALTHY),
    (_with("NetworkPolicy"), Health.HEALTHY),
])
def test_health_of_arbitrary_objects(obj: dict[str, Any], health: Health) -> None:
    assert object_health(obj).health is health


def test_a_failed_job_says_why() -> None:
    failed = _with("Job", status={"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                                  "message": "too slow"}]})
    assert job_health(failed).reason == "Job failed: DeadlineExceeded too slow"


def test_random_annotations_of_an_object_no_member_holds_get_a_stable_stand_in() -> None:
    from isthmus.render.charts import settle_annotations

    job = parse_rendered(RENDERED, chart="x", cluster="c1")[1]
    paths = frozenset({("spec", "template", "metadata", "annotations", "checksum/secret"), ("spec", "replicas")})
    settled = settle_annotations(job, paths, "seed")
    assert settled["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] == "seed"
    assert "replicas" not in settled["spec"]  # only annotations are stood in for; nothing is added
    assert job["spec"]["template"]["metadata"]["annotations"]["checksum/secret"] == "abc"
