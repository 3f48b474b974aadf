"""ChartRelease on the lab: the real etcd and Redis charts, rendered by helm per cluster, rolled out in waves."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from _charts import REDIS, load_release, release_doc

from isthmus.helm import HelmBinary, TemplateRequest, find_helm, template
from isthmus.kube import ClusterRegistry, capabilities
from isthmus.lab import Lab
from isthmus.render.charts import parse_rendered
from isthmus.rollout import (
    Outcome,
    ProgressStore,
    RolloutOptions,
    RolloutPhase,
    app_status,
    apply_rollout,
    history,
    render_release,
)

pytestmark = pytest.mark.lab
FAST = RolloutOptions(poll_interval=0.3)
CLUSTERS = ("c1", "c2", "c3")


def kubectl_json(lab: Lab, cluster: str, *args: str) -> Any:
    return json.loads(lab.kubectl(cluster, *args, "-o", "json"))


def live_object(lab: Lab, cluster: str, obj: dict[str, Any]) -> dict[str, Any]:
    kind = obj["kind"].lower()
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    what = f"{kind}.{group}" if group else kind
    ns = obj["metadata"].get("namespace")
    return kubectl_json(lab, cluster, "get", what, obj["metadata"]["name"], *(["-n", ns] if ns else []))  # type: ignore


def leaves(value: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(value, dict):
        return {p: v for k, sub in value.items() for p, v in leaves(sub, (*path, k)).items()}
    if isinstance(value, list):
        return {p: v for i, sub in enumerate(value) for p, v in leaves(sub, (*path, i)).items()}
    return {path: value}


MISSING = object()


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return value


def same(live: Any, rendered: Any) -> bool:
    """Equal, or a zero value the API server leaves out (Go's omitempty: "", false, 0)."""
    return live == rendered or (live is MISSING and rendered in ("", False, 0))


async def helm_template(helm: HelmBinary, registry: ClusterRegistry, release: Any, fleet: Any,
                        cluster: str) -> list[dict[str, Any]]:
    """What `helm template` itself renders for that cluster's values (twice: leaves that differ are random)."""
    caps = await capabilities(registry[cluster])
    region = next(c.region for c in fleet.spec.clusters if c.name == cluster)
    request = TemplateRequest(chart=release.spec.chart, release=release.metadata.name, namespace=release.namespace,
                              cluster=cluster, values=release.values_for(cluster, region),
                              kube_version=caps.kube_version, api_versions=caps.api_versions)
    first, second = await asyncio.gather(template(helm, request), template(helm, request))
    a, b = parse_rendered(first, chart="c", cluster=cluster), parse_rendered(second, chart="c", cluster=cluster)
    again = {(o["kind"], o["metadata"]["name"]): leaves(o) for o in b}
    for obj in a:
        other = again[(obj["kind"], obj["metadata"]["name"])]
        obj["_random"] = {p for p, v in leaves(obj).items() if other.get(p) != v}
    return a


async def test_etcd_to_three_clusters_holds_what_helm_renders_with_the_isthmus_labels(
        lab3: Lab, registry: ClusterRegistry, helm: HelmBinary) -> None:
    fleet, release = load_release(release_doc("etcd-a", overrides=[
        {"region": "region-2", "values": {"replicaCount": 3}},
        {"cluster": "c3", "values": {"podLabels": {"site": "c3"}}},
    ]))
    manifests = await render_release(release, fleet, registry)
    result = await apply_rollout(release, fleet, registry, FAST, rendered=manifests)
    assert result.ok, result.state.message
    for cluster in CLUSTERS:
        expected = await helm_template(helm, registry, release, fleet, cluster)
        objects = [o for o in expected if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]
        assert {o["kind"] for o in objects} >= {"StatefulSet", "Service", "Secret", "PodDisruptionBudget",
                                                "ServiceAccount", "NetworkPolicy"}
        for obj in objects:
            live = live_object(lab3, cluster, obj)
            random = obj.pop("_random")
            for path, value in leaves(obj).items():
                if path in random or value is None or path == ("metadata", "labels", "app.kubernetes.io/managed-by"):
                    continue
                assert same(at(live, path), value), (cluster, obj["kind"], obj["metadata"]["name"], path,
                                                     at(live, path), value)
            labels = live["metadata"]["labels"]
            assert labels["isthmus.dev/app"] == "etcd-a" and labels["app.kubernetes.io/managed-by"] == "isthmus"
            assert "isthmus.dev/content-hash" in live["metadata"]["annotations"]
        sts = live_object(lab3, cluster, next(o for o in objects if o["kind"] == "StatefulSet"))
        assert sts["spec"]["replicas"] == (3 if cluster == "c2" else 1)
        assert sts["spec"]["template"]["metadata"]["labels"]["isthmus.dev/app"] == "etcd-a"
        assert (sts["spec"]["template"]["metadata"]["labels"].get("site") == "c3") == (cluster == "c3")
    status = await app_status(release, registry)
    assert status.healthy, status.to_dict()
    assert [(d.cluster, d.ready, d.desired) for d in status.datacenters] == [("c1", 1, 1), ("c2", 3, 3),
                                                                              ("c3", 1, 1)]
    # A second apply of the same spec renders the same objects (random values kept from the clusters): no writes.
    again = await apply_rollout(release, fleet, registry, RolloutOptions(poll_interval=0.3, unless_settled=True),
                                rendered=await render_release(release, fleet, registry))
    assert again.ok and "nothing to change" in " ".join(again.notes)


async def test_members_with_the_same_values_share_helms_runs_and_an_override_gets_its_own(
        registry: ClusterRegistry, helm: HelmBinary, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    wrapper = tmp_path / "helm"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec {helm.path} "$@"\n')
    wrapper.chmod(0o755)
    counting = find_helm(wrapper)
    fleet, release = load_release(release_doc("etcd-s", overrides=[
        {"cluster": "c3", "values": {"podLabels": {"site": "c3"}}}]))
    # What Helm is given per member: its values and its capabilities (other tests of the session may have added
    # CRDs to one cluster, e.g. the control plane's, which makes its API versions differ).
    caps = {c: await capabilities(registry[c]) for c in CLUSTERS}
    inputs = {c: (json.dumps(release.values_for(c, next(m.region for m in fleet.spec.clusters if m.name == c)),
                             sort_keys=True), caps[c].kube_version, tuple(sorted(caps[c].api_versions)))
              for c in CLUSTERS}
    log.write_text("")
    manifests = await render_release(release, fleet, registry, helm=counting)
    # Two runs per distinct input (the second finds the random leaves), not two per member: on a lab whose
    # clusters are alike, c1 and c2 share one pair and c3 (its override) has its own.
    assert log.read_text().split().count("template") == 2 * len(set(inputs.values()))
    sts = {c: next(o for o in manifests.objects[c] if o["kind"] == "StatefulSet") for c in CLUSTERS}
    labels = {c: sts[c]["spec"]["template"]["metadata"]["labels"] for c in CLUSTERS}
    assert labels["c1"] == labels["c2"] == {k: v for k, v in labels["c3"].items() if k != "site"}
    assert labels["c3"]["site"] == "c3"


def sts_of(lab: Lab, cluster: str, namespace: str) -> dict[str, Any]:
    items = kubectl_json(lab, cluster, "get", "statefulsets", "-n", namespace)["items"]
    assert len(items) == 1, [i["metadata"]["name"] for i in items]
    return items[0]  # type: ignore[no-any-return]


async def test_a_change_goes_cluster_by_cluster_and_a_broken_one_is_rolled_back_everywhere(
        lab3: Lab, registry: ClusterRegistry) -> None:
    strategy = {"canary": "c2", "maxConcurrentClusters": 1, "failureBudget": 0, "progressDeadlineSeconds": 90,
                "onFailure": "rollback"}
    fleet, v1 = load_release(release_doc("etcd-w", rollout=strategy))
    assert (await apply_rollout(v1, fleet, registry, FAST, rendered=await render_release(v1, fleet, registry))).ok
    _, v2 = load_release(release_doc("etcd-w", values={"podAnnotations": {"change": "two"}}, rollout=strategy))
    second = await apply_rollout(v2, fleet, registry, FAST, rendered=await render_release(v2, fleet, registry))
    assert second.ok, second.state.message
    steps = second.state.steps
    order = [f"release/{c}" for c in ("c2", "c1", "c3")]
    for before, after in itertools.pairwise(order):  # one wave after the other, gated
        assert steps[before].finished is not None and steps[after].started is not None
        assert steps[before].finished <= steps[after].started
    for cluster in CLUSTERS:
        sts = sts_of(lab3, cluster, "etcd-w")
        assert sts["spec"]["template"]["metadata"]["annotations"]["change"] == "two"
        assert sts["metadata"]["generation"] == 2
    # The chart's pre-upgrade hook Job ran (and was waited on) in every cluster.
    assert any("pre-upgrade hook Job etcd-w/etcd-w-pre-upgrade completed" in e for e in second.state.log)
    # Pods that can never be scheduled: the canary fails over the budget, and every cluster returns to revision 2.
    _, v3 = load_release(release_doc("etcd-w", values={"podAnnotations": {"change": "two"},
                                                      "nodeSelector": {"lab.isthmus.dev/no-such": "node"}},
                                     rollout=strategy))
    third = await apply_rollout(v3, fleet, registry, FAST, rendered=await render_release(v3, fleet, registry))
    assert third.phase is RolloutPhase.ROLLED_BACK, third.state.message
    assert any("revision 3 failed" in n and "unschedulable" in n and "rolled back to revision 2" in n
               for n in third.notes), third.notes
    for cluster in CLUSTERS:
        sts = sts_of(lab3, cluster, "etcd-w")
        assert "nodeSelector" not in sts["spec"]["template"]["spec"], cluster
        assert sts["spec"]["template"]["metadata"]["annotations"]["change"] == "two"
    hist = await history(registry, "c1", list(CLUSTERS), "etcd-w", "etcd-w")
    assert [(i.number, i.origin) for i in hist.revisions][:3] == [(1, "apply"), (2, "apply"), (3, "apply")]
    assert hist.revisions[-1].origin == "rollback to 2"
    assert {m.revision for m in hist.members.values()} == {hist.revisions[-1].number}
    status = await app_status(v2, registry)
    assert status.healthy, status.to_dict()


async def test_a_resource_removed_from_the_chart_is_pruned_and_foreign_objects_stay(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, v1 = load_release(release_doc("etcd-p"))
    assert (await apply_rollout(v1, fleet, registry, FAST, rendered=await render_release(v1, fleet, registry))).ok
    for cluster in CLUSTERS:
        assert kubectl_json(lab3, cluster, "get", "networkpolicy", "etcd-p", "-n", "etcd-p")["kind"] == \
            "NetworkPolicy"
        lab3.kubectl(cluster, "create", "configmap", "handmade", "-n", "etcd-p")
        lab3.kubectl(cluster, "create", "configmap", "lookalike", "-n", "etcd-p")
        lab3.kubectl(cluster, "label", "configmap", "lookalike", "-n", "etcd-p", "isthmus.dev/app=etcd-p")
    _, v2 = load_release(release_doc("etcd-p", values={"networkPolicy": {"enabled": False}}))
    result = await apply_rollout(v2, fleet, registry, FAST, rendered=await render_release(v2, fleet, registry))
    assert result.ok, result.state.message
    for cluster in CLUSTERS:
        names = {i["metadata"]["name"] for i in kubectl_json(lab3, cluster, "get", "networkpolicy", "-n",
                                                             "etcd-p")["items"]}
        assert names == set(), cluster
        configmaps = {i["metadata"]["name"] for i in kubectl_json(lab3, cluster, "get", "configmap", "-n",
                                                                  "etcd-p")["items"]}
        assert {"handmade", "lookalike"} <= configmaps
        assert kubectl_json(lab3, cluster, "get", "statefulset", "etcd-p", "-n", "etcd-p")["kind"] == "StatefulSet"
    pruned = {str(r) for c in CLUSTERS for r, a in result.reports[c].items() if a.value == "pruned"}
    assert pruned == {"NetworkPolicy etcd-p/etcd-p"}


@pytest.mark.parametrize("values", [{}, {"architecture": "standalone"}], ids=["defaults", "standalone"])
async def test_redis_renders_and_applies(lab3: Lab, registry: ClusterRegistry, values: dict[str, Any]) -> None:
    name = "redis-" + ("s" if values else "d")
    fleet, release = load_release(release_doc(name, REDIS, values=values))
    manifests = await render_release(release, fleet, registry)
    result = await apply_rollout(release, fleet, registry, FAST, rendered=manifests)
    assert result.ok, result.state.message
    for cluster in CLUSTERS:
        sets = {i["metadata"]["name"]: i["spec"]["replicas"] for i in
                kubectl_json(lab3, cluster, "get", "statefulsets", "-n", name)["items"]}
        assert sets == ({f"{name}-master": 1} if values else {f"{name}-master": 1, f"{name}-replicas": 3})
    status = await app_status(release, registry)
    assert status.healthy, status.to_dict()
    store = ProgressStore(registry["c1"], name)
    state = await store.load()
    assert state is not None and all(state.steps[s.id].outcome is Outcome.DONE for s in state.plan.steps)


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.isthmus.dev"},
    "spec": {"group": "test.isthmus.dev", "scope": "Namespaced",
             "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


async def test_a_charts_custom_resources_are_applied_and_an_unserved_kind_is_refused(
        lab3: Lab, registry: ClusterRegistry, tmp_path: Any) -> None:
    from isthmus.errors import UserError

    crd = tmp_path / "crd.json"
    crd.write_text(json.dumps(WIDGET_CRD))
    for cluster in CLUSTERS:
        lab3.kubectl(cluster, "apply", "-f", str(crd))
        lab3.kubectl(cluster, "wait", "--for=condition=Established", "crd/widgets.test.isthmus.dev", "--timeout=60s")
    try:
        widget = {"apiVersion": "test.isthmus.dev/v1", "kind": "Widget",
                  "metadata": {"name": "gadget", "namespace": "etcd-x"}, "spec": {"size": 3}}
        fleet, release = load_release(release_doc("etcd-x", values={"extraDeploy": [widget]}))
        result = await apply_rollout(release, fleet, registry, FAST,
                                     rendered=await render_release(release, fleet, registry))
        assert result.ok, result.state.message
        for cluster in CLUSTERS:
            live = kubectl_json(lab3, cluster, "get", "widgets.test.isthmus.dev", "gadget", "-n", "etcd-x")
            assert live["spec"] == {"size": 3} and live["metadata"]["labels"]["isthmus.dev/app"] == "etcd-x"
        _, monitored = load_release(release_doc("etcd-x", values={"metrics": {"enabled": True,
                                                                             "podMonitor": {"enabled": True}}}))
        with pytest.raises(UserError, match=r"cluster c\d: the chart renders monitoring.coreos.com/v1/PodMonitor, "
                                            "which the cluster does not serve"):
            await render_release(monitored, fleet, registry)
    finally:
        for cluster in CLUSTERS:
            lab3.kubectl(cluster, "delete", "namespace", "etcd-x", "--wait=false", check=False)
            lab3.kubectl(cluster, "delete", "-f", str(crd), "--wait=false", check=False)
