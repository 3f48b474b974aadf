"""Discovery: exports for seeds and clients, one fleet-wide global client Service, client addresses."""

from __future__ import annotations

from isthmus.render import render_cassandra
from isthmus.render.discovery import DiscoveryMode, client_addresses, render_discovery
from isthmus.spec import Mesh

from ._mesh import example, with_network


def test_seed_and_client_services_are_exported_where_their_datacenter_lives() -> None:
    fleet, app = example()
    m = render_discovery(app, fleet)
    for dc in app.spec.datacenters:
        exports = {o["metadata"]["name"] for o in m.for_cluster(dc.cluster) if o["kind"] == "ServiceExport"}
        assert {f"orders-{dc.name}-seeds", f"orders-{dc.name}-client", "orders-client"} == exports
        assert all(o["apiVersion"] == "multicluster.x-k8s.io/v1alpha1"
                   for o in m.for_cluster(dc.cluster) if o["kind"] == "ServiceExport")


def test_exports_name_services_the_cassandra_renderer_makes() -> None:
    fleet, app = example()
    apps = render_cassandra(app, fleet).merge(render_discovery(app, fleet))
    for cluster in apps.clusters:
        services = {o["metadata"]["name"] for o in apps.for_cluster(cluster) if o["kind"] == "Service"}
        exports = {o["metadata"]["name"] for o in apps.for_cluster(cluster) if o["kind"] == "ServiceExport"}
        assert exports <= services


def test_fleet_client_service_is_global_with_local_affinity_in_every_cluster() -> None:
    fleet, app = example()
    extra = fleet.spec.model_copy(update={"clusters": [*fleet.spec.clusters,
                                                       fleet.spec.clusters[0].model_copy(update={"name": "edge",
                                                                                                 "context": "edge"})]})
    fleet = fleet.model_copy(update={"spec": extra})
    m = render_discovery(app, fleet)
    services = [o for c in m.clusters for o in m.for_cluster(c) if o["kind"] == "Service"]
    assert len(services) == len(fleet.spec.clusters) and all(s == services[0] for s in services)
    notes = services[0]["metadata"]["annotations"]
    assert notes == {"isthmus.dev/content-hash": notes["isthmus.dev/content-hash"], "service.cilium.io/global": "true",
                     "service.cilium.io/shared": "true", "service.cilium.io/affinity": "local"}
    assert any(o["kind"] == "Namespace" for o in m.for_cluster("edge"))  # no datacenter there
    assert not any(o["kind"] == "Namespace" for o in m.for_cluster("eu-west"))


def test_istio_gets_locality_load_balancing_and_no_cilium_annotations() -> None:
    fleet, app = example()
    m = render_discovery(app, with_network(fleet, mesh=Mesh.ISTIO))
    objs = m.for_cluster("us-east")
    (svc,) = [o for o in objs if o["kind"] == "Service"]
    assert not any(k.startswith("service.cilium.io") for k in svc["metadata"].get("annotations", {}))
    (rule,) = [o for o in objs if o["kind"] == "DestinationRule"]
    assert rule["spec"]["host"] == "orders-client.cassandra.svc.cluster.local"
    assert rule["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["enabled"] is True


def test_client_addresses_per_mode() -> None:
    fleet, app = example()
    hosts = {(a.mode, a.host) for a in client_addresses(app, fleet)}
    assert hosts == {(DiscoveryMode.CILIUM_GLOBAL, "orders-client.cassandra.svc.cluster.local"),
                     (DiscoveryMode.MCS, "orders-client.cassandra.svc.clusterset.local")}
    istio = client_addresses(app, with_network(fleet, mesh=Mesh.BOTH), mode=DiscoveryMode.ISTIO)
    assert {a.cluster for a in istio} == {c.name for c in fleet.spec.clusters}
    assert all(a.port == 9042 and a.to_dict()["mode"] == "istio" for a in istio)


def test_byte_stable() -> None:
    fleet, app = example()
    again_fleet, again_app = example()
    again = render_discovery(again_app, again_fleet)
    assert render_discovery(app, fleet).to_yaml("eu-west") == again.to_yaml("eu-west")
