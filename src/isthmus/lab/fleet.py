"""Shaping a lab from a Fleet spec: one lab cluster per Fleet cluster, with the plan's CIDRs.

The lab names its kubeconfig contexts ``lab-<cluster>``; a Fleet meant for the lab must use those
contexts, and this module says so plainly when it does not.
"""

from __future__ import annotations

from ..netplan import Plan
from ..spec import Fleet
from .errors import LabError
from .specs import LabClusterSpec, check_lab_specs

__all__ = ["specs_from_fleet"]


def specs_from_fleet(fleet: Fleet, plan: Plan) -> tuple[LabClusterSpec, ...]:
    """The lab clusters for ``fleet``: its regions, zones and node counts, and the plan's CIDRs."""
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
        try:
            specs.append(LabClusterSpec(name=cluster.name, region=cluster.region, zones=zones,
                                        pod_cidr=str(planned.pod_cidr), service_cidr=str(planned.service_cidr)))
        except ValueError as exc:
            raise LabError(f"{where}: the lab cannot honour it: {exc}") from exc
    try:
        check_lab_specs(specs)
    except ValueError as exc:
        raise LabError(f"Fleet {fleet.metadata.name}: the lab cannot honour it: {exc}") from exc
    return tuple(specs)
