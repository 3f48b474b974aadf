"""The app's discovery objects are part of its rendered manifests (what `isthmus apply` deploys). Pure."""

from __future__ import annotations

import pytest

from isthmus.kube.objects import resource_class
from isthmus.render import CONTENT_HASH_ANNOTATION, Manifests, apply_rank, render, render_cassandra
from isthmus.render.customkinds import CUSTOM_KINDS, required_kinds
from isthmus.render.discovery import app_discovery, outside_discovery, render_discovery
from isthmus.rollout.requirements import missing_crd_message
from isthmus.spec import CassandraCluster, Fleet, Mesh

from ._mesh import example, with_network

CUSTOM = {"ServiceExport", "DestinationRule"}


def _with_edge(fleet: Fleet) -> Fleet:
    """The example Fleet plus a cluster ``edge`` that hosts no datacenter."""
    edge = fleet.spec.clusters[0].model_copy(update={"name": "edge", "context": "edge"})
    return fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"clusters": [*fleet.spec.clusters, edge]})})


def _one_cluster(fleet: Fleet, app: CassandraCluster) -> tuple[Fleet, CassandraCluster]:
    dc = app.spec.datacenters[0]
    only = [c for c in fleet.spec.clusters if c.name == dc.cluster]
    return (fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"clusters": only})}),
            app.model_copy(update={"spec": app.spec.model_copy(update={"datacenters": [dc]})}))


def _kinds(m: Manifests, cluster: str) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in m.for_cluster(cluster))


@pytest.mark.parametrize("mesh", list(Mesh))
def test_render_adds_the_meshs_discovery_objects_in_each_member(mesh: Mesh) -> None:
    fleet, app = example()
    fleet = with_network(fleet, mesh=mesh)
    m = render(app, fleet)
    for dc in app.spec.datacenters:
        extra = set(_kinds(m, dc.cluster)) - set(_kinds(render_cassandra(app, fleet), dc.cluster))
        wanted = {("Service", "orders-client"), ("ServiceExport", "orders-client"),
                  ("ServiceExport", f"orders-{dc.name}-seeds"), ("ServiceExport", f"orders-{dc.name}-client")}
        if mesh in (Mesh.ISTIO, Mesh.BOTH):
            wanted.add(("DestinationRule", "orders-client"))
        assert extra == wanted
        (client,) = [o for o in m.for_cluster(dc.cluster) if o["metadata"]["name"] == "orders-client"
                     and o["kind"] == "Service"]
        cilium = {k for k in client["metadata"].get("annotations", {}) if k.startswith("service.cilium.io/")}
        assert bool(cilium) is (mesh in (Mesh.CILIUM, Mesh.BOTH))


def test_discovery_objects_carry_the_isthmus_labels_and_a_content_hash() -> None:
    fleet, app = example()
    m = app_discovery(app, with_network(fleet, mesh=Mesh.BOTH))
    objects = [o for c in m.clusters for o in m.for_cluster(c)]
    assert {o["kind"] for o in objects} == {"Service", "ServiceExport", "DestinationRule"}
    for o in objects:
        labels = o["metadata"]["labels"]
        assert labels["isthmus.dev/app"] == "orders" and labels["app.kubernetes.io/managed-by"] == "isthmus"
        assert len(o["metadata"]["annotations"][CONTENT_HASH_ANNOTATION]) == 16


def test_apply_and_mesh_render_split_the_fleet_without_overlap() -> None:
    fleet, app = example()
    fleet = _with_edge(fleet)
    mine, outside, every = app_discovery(app, fleet), outside_discovery(app, fleet), render_discovery(app, fleet)
    assert set(mine.clusters) == set(app.member_clusters()) and outside.clusters == ("edge",)
    assert mine.merge(outside) == every  # together exactly what discovery decides, nothing twice
    assert {o["kind"] for o in outside.for_cluster("edge")} == {"Namespace", "Service", "ServiceExport"}
    assert render(app, fleet).for_cluster("edge") == ()  # the rollout never writes to a cluster without a DC


def test_a_one_cluster_fleet_needs_no_discovery_and_no_crd() -> None:
    fleet, app = _one_cluster(*example())
    assert app_discovery(app, fleet).clusters == () and outside_discovery(app, fleet).clusters == ()
    m = render(app, fleet)
    assert m.objects == render_cassandra(app, fleet).objects
    assert required_kinds(m.for_cluster(app.spec.datacenters[0].cluster)) == ()


@pytest.mark.parametrize(("mesh", "crds"), [
    (Mesh.CILIUM, ["serviceexports.multicluster.x-k8s.io"]),
    (Mesh.ISTIO, ["destinationrules.networking.istio.io", "serviceexports.multicluster.x-k8s.io"]),
    (Mesh.BOTH, ["destinationrules.networking.istio.io", "serviceexports.multicluster.x-k8s.io"]),
])
def test_each_member_needs_the_crds_of_its_meshs_kinds(mesh: Mesh, crds: list[str]) -> None:
    fleet, app = example()
    m = render(app, with_network(fleet, mesh=mesh))
    for cluster in m.clusters:
        assert [k.crd_name for k in required_kinds(m.for_cluster(cluster))] == crds


def test_custom_resources_apply_after_the_core_objects_and_after_a_crd_that_defines_them() -> None:
    fleet, app = example()
    m = render(app, with_network(fleet, mesh=Mesh.BOTH))
    for cluster in m.clusters:
        ranks = [(o["kind"] in CUSTOM, apply_rank(o)) for o in m.for_cluster(cluster)]
        first_custom = next(i for i, (custom, _) in enumerate(ranks) if custom)
        assert all(custom for custom, _ in ranks[first_custom:]), ranks  # every core object before any custom one
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "serviceexports.multicluster.x-k8s.io"}}
    export = next(o for o in m.for_cluster("eu-west") if o["kind"] == "ServiceExport")
    both = Manifests.build([("x", export), ("x", crd)]).for_cluster("x")
    assert [o["kind"] for o in both] == ["CustomResourceDefinition", "ServiceExport"]
    assert required_kinds(both) == ()  # a set that carries the CRD needs nothing from the cluster


def test_every_custom_kind_render_emits_is_typed_at_the_kube_boundary() -> None:
    for (api_version, kind), entry in CUSTOM_KINDS.items():
        res = resource_class(api_version, kind)
        assert res.__name__ == kind and entry.crd_name.startswith(entry.plural + ".")


def test_the_missing_crd_message_names_cluster_crd_and_fix() -> None:
    fleet, app = example()
    needed = required_kinds(render(app, fleet).for_cluster("us-east"))
    line = missing_crd_message("orders", {"us-east": needed})
    assert "\n" not in line
    assert line.startswith("app orders: cluster us-east lacks the CustomResourceDefinition "
                           "serviceexports.multicluster.x-k8s.io (ServiceExport, the MCS API)")
    assert "sigs.k8s.io/mcs-api" in line and line.endswith("nothing was applied")
