"""Shaping a lab from a Fleet spec: one lab cluster per Fleet cluster, with the plan's CIDRs and network.

The pod network follows the plan: each cluster's ``nodeCIDR`` (the lab picks ``192.168.<i>.0/24``
where the Fleet sets none) and ``underlayMTU``, the plan's route MTU, and the Fleet's routing,
tunnel protocol, encryption and mesh.

The lab names its kubeconfig contexts ``lab-<cluster>``; a Fleet meant for the lab must use those
contexts, and this module says so plainly when it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Network
from typing import Any

from ..netplan import NetworkPlan
from ..spec import Fleet
from .errors import LabError
from .specs import LabClusterSpec, check_lab_specs, complete_network

__all__ = ["cassandra_document", "fleet_document", "specs_from_fleet"]


def specs_from_fleet(fleet: Fleet, plan: NetworkPlan) -> tuple[LabClusterSpec, ...]:
    """The lab clusters for ``fleet``: its regions, zones and node counts, the plan's CIDRs and MTUs."""
    specs = []
    for cluster in fleet.spec.clusters:
        where = f"Fleet {fleet.metadata.name}, cluster {cluster.name}"
        if cluster.kube_context != f"lab-{cluster.name}":
            raise LabError(f"{where}: context is {cluster.kube_context!r} but the lab names it "
                           f"'lab-{cluster.name}'; set `context: lab-{cluster.name}` to run this Fleet in the lab")
        planned = plan.cluster(cluster.name)
        if planned.pod_cidr is None or planned.service_cidr is None:
            raise LabError(f"{where}: the lab runs IPv4 clusters only, and this one has no IPv4 pod/service CIDR")
        zones = {zone.name: zone.nodes for zone in cluster.zones if zone.nodes > 0}
        node_cidr = planned.node_cidr
        if node_cidr is not None and not isinstance(node_cidr, IPv4Network):
            raise LabError(f"{where}: the lab's underlay is IPv4, and nodeCIDR {node_cidr} is not")
        net = plan.network
        try:
            specs.append(LabClusterSpec(
                name=cluster.name, region=cluster.region, zones=zones, pod_cidr=str(planned.pod_cidr),
                service_cidr=str(planned.service_cidr), node_cidr=None if node_cidr is None else str(node_cidr),
                underlay_mtu=planned.underlay_mtu, route_mtu=planned.mtu.route_mtu, routing=net.routing,
                tunnel_protocol=net.tunnel_protocol, encryption=net.encryption, mesh=net.mesh))
        except ValueError as exc:
            raise LabError(f"{where}: the lab cannot honour it: {exc}") from exc
    try:
        specs = list(complete_network(specs))
        check_lab_specs(specs)
    except ValueError as exc:
        raise LabError(f"Fleet {fleet.metadata.name}: the lab cannot honour it: {exc}") from exc
    return tuple(specs)


def fleet_document(specs: Sequence[LabClusterSpec], *, name: str = "lab") -> dict[str, Any]:
    """A Fleet spec (as YAML data) that describes a running lab: one cluster per lab cluster."""
    return {
        "apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": name},
        "spec": {
            "controlPlane": specs[0].name,
            "network": {"podSupernet": "10.0.0.0/8", "serviceSupernet": "172.16.0.0/12"},
            "clusters": [
                {"name": s.name, "region": s.region, "context": s.context,
                 "zones": [{"name": zone, "nodes": count} for zone, count in s.zones.items()]}
                for s in specs
            ],
        },
    }


def cassandra_document(specs: Sequence[LabClusterSpec], name: str, *, size: int = 2, heap: str = "1G",
                       version: str = "5.0.6") -> dict[str, Any]:
    """A CassandraCluster (as YAML data) with a datacenter ``dc<i>`` in each lab cluster, a rack per zone."""
    return {
        "apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
        "metadata": {"name": name, "namespace": name},
        "spec": {
            "version": version,
            "datacenters": [
                {"name": f"dc{i}", "cluster": s.name, "size": size,
                 "racks": [{"name": f"r{chr(ord('a') + j)}", "zone": zone} for j, zone in enumerate(s.zones)]}
                for i, s in enumerate(specs, start=1)
            ],
            "resources": {"cpu": "500m", "memory": "2Gi", "heap": heap},
            "storage": {"size": "1Gi"},
        },
    }
