"""Rendering a CassandraCluster: which objects land where, and what they say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.render import (
    CONTENT_HASH_ANNOTATION,
    SUPERUSER_PASSWORD_PLACEHOLDER,
    ApplyPhase,
    Manifests,
    RenderError,
    apply_rank,
    content_hash,
    render,
    render_cassandra,
)
from isthmus.render.cassandra import CONFIG_HASH_ANNOTATION, POD_INDEX_LABEL, SEED_RACK_LABEL
from isthmus.spec import CassandraCluster, Fleet, Mesh, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def example() -> tuple[CassandraCluster, Fleet]:
    specs = load_files([EXAMPLES / "fleet.yaml", EXAMPLES / "cassandra.yaml"])
    app = specs.apps[0]
    assert isinstance(app, CassandraCluster) and specs.fleet is not None
    return app, specs.fleet


def with_spec(app: CassandraCluster, **changes: Any) -> CassandraCluster:
    return app.model_copy(update={"spec": app.spec.model_copy(update=changes)})


def with_mesh(fleet: Fleet, mesh: Mesh) -> Fleet:
    network = fleet.spec.network.model_copy(update={"mesh": mesh})
    return fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"network": network})})


def find(objs: tuple[Obj, ...], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def seeds_of(config_map: Obj) -> list[str]:
    doc = yaml.safe_load(config_map["data"]["cassandra.yaml"])
    params = doc["seed_provider"][0]["parameters"][0]
    assert params["resolve_multiple_ip_addresses_per_dns_record"] == "true"
    return str(params["seeds"]).split(",")


def test_each_datacenter_lands_in_its_cluster(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    m = render(app, fleet, superuser_password="pw")
    assert set(m.clusters) == {"eu-west", "us-east", "ap-south"}
    for dc in app.spec.datacenters:
        objs = m.for_cluster(dc.cluster)
        assert sorted(o["kind"] for o in objs) == sorted(
            ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "Service", "Service", "Service",
             "StatefulSet", "StatefulSet", "StatefulSet", "PodDisruptionBudget",
             # discovery (mesh cilium): the fleet-wide client Service; exports of it, the seeds and the DC client
             "Service", "ServiceExport", "ServiceExport", "ServiceExport"])
        for o in objs:
            if o["kind"] != "Namespace":
                assert o["metadata"]["namespace"] == "cassandra"
            dc_label = o["metadata"]["labels"].get("isthmus.dev/datacenter")
            assert dc_label in (None, dc.name)
    assert m.for_cluster("nowhere") == ()


def test_statefulset_per_rack_pinned_and_spread(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    app = with_spec(app, datacenters=[app.spec.datacenters[0].model_copy(update={"size": 5})])
    objs = render_cassandra(app, fleet).for_cluster("eu-west")
    replicas = {s["metadata"]["name"]: s["spec"]["replicas"] for s in find(objs, "StatefulSet")}
    assert replicas == {"orders-dc-eu-rack-b": 2, "orders-dc-eu-rack-c": 2, "orders-dc-eu-rack-d": 1}
    sts = one(objs, "StatefulSet", "orders-dc-eu-rack-c")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    node_affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = node_affinity["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["europe-west1-c"]}]}]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti == [{"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {
        "app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": "orders"}}}]
    assert spec["serviceName"] == "orders-dc-eu-all"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert set(spec["selector"]["matchLabels"].items()) <= set(spec["template"]["metadata"]["labels"].items())
    assert pod["terminationGracePeriodSeconds"] == 1800
    (container,) = pod["containers"]
    assert container["image"] == "cassandra:5.0.6"
    assert {p["containerPort"] for p in container["ports"]} == {7000, 7001, 9042, 7199}
    resources = container["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "2", "memory": "8Gi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MAX_HEAP_SIZE"] == "2048M" and env["HEAP_NEWSIZE"] == "200M"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["nodetool", "drain"]
    assert "statusbinary" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert "tcpSocket" not in container["readinessProbe"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert "storageClassName" not in claim["spec"]


def test_heap_defaults_to_a_quarter_of_memory_and_storage_class_is_used(
        example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    app = with_spec(app, resources=app.spec.resources.model_copy(update={"heap": None, "memory": "6Gi"}),
                    storage=app.spec.storage.model_copy(update={"storage_class_name": "fast"}),
                    image="registry.example/cassandra:5.0.6-custom")
    sts = find(render_cassandra(app, fleet).for_cluster("us-east"), "StatefulSet")[0]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MAX_HEAP_SIZE"] == "1536M"
    assert container["image"] == "registry.example/cassandra:5.0.6-custom"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast"


def test_heap_that_does_not_fit_is_refused(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    app = with_spec(app, resources=app.spec.resources.model_copy(update={"heap": "8G", "memory": "8Gi"}))
    with pytest.raises(RenderError, match="does not fit"):
        render_cassandra(app, fleet)


def test_seeds_local_first_then_remote_names(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    m = render_cassandra(app, fleet)
    seeds = seeds_of(one(m.for_cluster("us-east"), "ConfigMap", "orders-dc-us-config"))
    assert seeds == [
        "orders-dc-us-rack-b-0.orders-dc-us-all.cassandra.svc.cluster.local",
        "orders-dc-us-rack-c-0.orders-dc-us-all.cassandra.svc.cluster.local",
        "orders-dc-eu-seeds.cassandra.svc.clusterset.local",
        "orders-dc-ap-seeds.cassandra.svc.clusterset.local",
    ]
    custom = render_cassandra(app, fleet, cluster_domain="us.example", clusterset_domain="mesh.example")
    seeds = seeds_of(one(custom.for_cluster("us-east"), "ConfigMap", "orders-dc-us-config"))
    assert seeds[0].endswith(".svc.us.example") and seeds[-1].endswith(".svc.mesh.example")


def test_seed_service_selects_ordinal_zero_of_the_seed_racks(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    objs = render_cassandra(app, fleet).for_cluster("eu-west")
    seeds = one(objs, "Service", "orders-dc-eu-seeds")
    assert seeds["spec"]["clusterIP"] == "None" and seeds["spec"]["publishNotReadyAddresses"] is True
    selector = seeds["spec"]["selector"]
    assert selector[POD_INDEX_LABEL] == "0" and selector[SEED_RACK_LABEL] == "true"
    seed_racks = {s["metadata"]["name"] for s in find(objs, "StatefulSet")
                  if s["spec"]["template"]["metadata"]["labels"].get(SEED_RACK_LABEL) == "true"}
    assert seed_racks == {"orders-dc-eu-rack-b", "orders-dc-eu-rack-c"}
    all_pods = one(objs, "Service", "orders-dc-eu-all")
    assert all_pods["spec"]["publishNotReadyAddresses"] is True
    assert {p["port"] for p in all_pods["spec"]["ports"]} == {7000, 7001, 9042}


def test_single_rack_datacenter_has_one_local_seed(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    dc = app.spec.datacenters[0]
    one_rack = dc.model_copy(update={"racks": dc.racks[:1]})
    app = with_spec(app, datacenters=[one_rack, *app.spec.datacenters[1:]])
    objs = render_cassandra(app, fleet).for_cluster("eu-west")
    seeds = seeds_of(one(objs, "ConfigMap", "orders-dc-eu-config"))
    assert seeds[0] == "orders-dc-eu-rack-b-0.orders-dc-eu-all.cassandra.svc.cluster.local"
    assert len(seeds) == 3


@pytest.mark.parametrize(("mesh", "annotated"), [(Mesh.CILIUM, True), (Mesh.BOTH, True), (Mesh.ISTIO, False)])
def test_client_service_is_global_only_with_cilium(
        example: tuple[CassandraCluster, Fleet], mesh: Mesh, annotated: bool) -> None:
    app, fleet = example
    client = one(render_cassandra(app, with_mesh(fleet, mesh)).for_cluster("ap-south"),
                 "Service", "orders-dc-ap-client")
    annotations = client["metadata"]["annotations"]
    assert client["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in client["spec"]["ports"]] == [9042]
    if annotated:
        assert annotations["service.cilium.io/global"] == "true"
        assert annotations["service.cilium.io/shared"] == "true"
    else:
        assert not any(k.startswith("service.cilium.io/") for k in annotations)


def test_superuser_secret_identical_everywhere(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    m = render_cassandra(app, fleet, superuser_password="s3cret")
    secrets = [one(m.for_cluster(c), "Secret", "orders-superuser") for c in m.clusters]
    assert all(s == secrets[0] for s in secrets)
    assert secrets[0]["stringData"]["password"] == "s3cret"
    placeholder = one(render_cassandra(app, fleet).for_cluster("eu-west"), "Secret", "orders-superuser")
    assert placeholder["stringData"]["password"] == SUPERUSER_PASSWORD_PLACEHOLDER
    # The hash annotation must say nothing about the password.
    assert (placeholder["metadata"]["annotations"][CONTENT_HASH_ANNOTATION]
            == secrets[0]["metadata"]["annotations"][CONTENT_HASH_ANNOTATION])


def test_labels_and_content_hash_on_every_object(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    m = render_cassandra(app, fleet, superuser_password="pw")
    for cluster in m.clusters:
        for obj in m.for_cluster(cluster):
            meta = obj["metadata"]
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "isthmus"
            if obj["kind"] != "Secret":
                assert meta["annotations"][CONTENT_HASH_ANNOTATION] == content_hash(obj)
            assert len(meta["annotations"][CONTENT_HASH_ANNOTATION]) == 16
            if obj["kind"] == "Namespace":
                continue
            expected = {"app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": "orders",
                        "app.kubernetes.io/version": "5.0.6", "isthmus.dev/app": "orders"}
            assert expected.items() <= meta["labels"].items()
            if obj["kind"] == "StatefulSet":
                assert "isthmus.dev/rack" in meta["labels"]
                assert CONFIG_HASH_ANNOTATION in obj["spec"]["template"]["metadata"]["annotations"]


def hashes(m: Manifests) -> dict[tuple[str, str, str], str]:
    return {(c, o["kind"], o["metadata"]["name"]): o["metadata"]["annotations"][CONTENT_HASH_ANNOTATION]
            for c in m.clusters for o in m.for_cluster(c)}


def changed(a: Manifests, b: Manifests) -> set[tuple[str, str, str]]:
    ha, hb = hashes(a), hashes(b)
    assert ha.keys() == hb.keys()
    return {k for k in ha if ha[k] != hb[k]}


def test_hash_changes_only_on_affected_objects(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    base = render_cassandra(app, fleet)
    cpu = with_spec(app, resources=app.spec.resources.model_copy(update={"cpu": "3"}))
    assert {k[1] for k in changed(base, render_cassandra(cpu, fleet))} == {"StatefulSet"}
    assert len(changed(base, render_cassandra(cpu, fleet))) == 9
    tokens = with_spec(app, num_tokens=8)
    diff = changed(base, render_cassandra(tokens, fleet))
    assert {k[1] for k in diff} == {"ConfigMap", "StatefulSet"}
    istio = changed(base, render_cassandra(app, with_mesh(fleet, Mesh.ISTIO)))
    assert istio == {(dc.cluster, "Service", f"orders-{dc.name}-client") for dc in app.spec.datacenters}


def test_config_change_rolls_pods(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example

    def config_hashes(m: Manifests) -> list[str]:
        return [s["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
                for c in m.clusters for s in find(m.for_cluster(c), "StatefulSet")]

    before = config_hashes(render_cassandra(app, fleet))
    after = config_hashes(render_cassandra(with_spec(app, num_tokens=8), fleet))
    assert all(a != b for a, b in zip(before, after, strict=True))
    assert len(set(before)) == len(before)  # each rack mounts its own rackdc file


def test_output_is_byte_identical_across_renders(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    first = render_cassandra(app, fleet, superuser_password="pw")
    second = render_cassandra(app.model_copy(deep=True), fleet.model_copy(deep=True), superuser_password="pw")
    for cluster in first.clusters:
        text = first.to_yaml(cluster)
        assert text == second.to_yaml(cluster)
        docs = list(yaml.safe_load_all(text))
        assert docs == list(first.for_cluster(cluster))
        assert [apply_rank(d) for d in docs] == sorted(apply_rank(d) for d in docs)


def test_apply_rank_orders_kinds() -> None:
    kinds = ["PodDisruptionBudget", "StatefulSet", "Service", "Secret", "ConfigMap", "ServiceAccount",
             "CustomResourceDefinition", "Namespace"]
    ranks = [apply_rank({"kind": k}) for k in kinds]
    assert ranks == [ApplyPhase.GUARD, ApplyPhase.WORKLOAD, ApplyPhase.NETWORK,
                     *[ApplyPhase.IDENTITY_AND_CONFIG] * 3, *[ApplyPhase.FOUNDATION] * 2]
    ordered = sorted(kinds, key=lambda k: apply_rank({"kind": k}))
    assert ordered[:2] == ["CustomResourceDefinition", "Namespace"]
    assert ordered[-3:] == ["Service", "StatefulSet", "PodDisruptionBudget"]
    assert apply_rank({"kind": "ServiceExport"}) > apply_rank({"kind": "PodDisruptionBudget"})


def test_manifests_refuse_duplicates_and_dispatch_refuses_unknown_kinds(
        example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}
    with pytest.raises(RenderError, match="twice"):
        Manifests({"a": (cm, dict(cm))})
    m = render_cassandra(app, fleet)
    with pytest.raises(RenderError, match="twice"):
        m.merge(m)
    other = app.model_copy(update={"kind": "KafkaCluster"})
    with pytest.raises(RenderError, match="no renderer"):
        render(other, fleet)


def test_two_datacenters_in_one_cluster_share_cluster_objects(
        example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    eu = app.spec.datacenters[0]
    second = eu.model_copy(update={"name": "dc-eu2"})
    m = render_cassandra(with_spec(app, datacenters=[eu, second]), fleet)
    assert m.clusters == ("eu-west",)
    objs = m.for_cluster("eu-west")
    assert len(find(objs, "Namespace")) == 1 and len(find(objs, "Secret")) == 1
    assert len(find(objs, "StatefulSet")) == 6


def test_names_too_long_for_kubernetes_are_refused(example: tuple[CassandraCluster, Fleet]) -> None:
    app, fleet = example
    long = app.model_copy(update={"metadata": app.metadata.model_copy(update={"name": "o" * 40})})
    with pytest.raises(RenderError, match="StatefulSet name"):
        render_cassandra(long, fleet)
