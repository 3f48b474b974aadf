"""Health of live objects, per kind, and its roll-up per datacenter and per cluster. Pure.

A StatefulSet is healthy only when the controller has observed its latest generation, its
update revision is the current one, and every replica is both ready and updated: a "healthy"
read from before the last change is never trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .objects import KubeObject

__all__ = ["Health", "ObjectHealth", "rollup", "statefulset_health"]


class Health(StrEnum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    UNKNOWN = "Unknown"
    MISSING = "Missing"


_SEVERITY = {Health.HEALTHY: 0, Health.PROGRESSING: 1, Health.MISSING: 2, Health.DEGRADED: 3, Health.UNKNOWN: 4}


@dataclass(frozen=True)
class ObjectHealth:
    name: str
    health: Health
    ready: int
    desired: int
    revision: str
    reason: str = ""


def statefulset_health(sts: KubeObject) -> ObjectHealth:
    meta: dict[str, Any] = sts.get("metadata", {})
    spec: dict[str, Any] = sts.get("spec", {})
    status: dict[str, Any] = sts.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    current_rev = status.get("currentRevision", "")
    update_rev = status.get("updateRevision", "")
    partition = int(((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition", 0))
    name = meta.get("name", "?")
    revision = str(update_rev).rsplit("-", 1)[-1] if update_rev else ""

    def out(health: Health, reason: str = "") -> ObjectHealth:
        return ObjectHealth(name, health, ready, desired, revision, reason)

    if int(status.get("observedGeneration", 0)) < int(meta.get("generation", 1)):
        return out(Health.PROGRESSING, "controller has not observed the latest generation")
    expected_updated = desired - partition if partition else desired
    if updated < expected_updated or (not partition and desired and current_rev != update_rev):
        return out(Health.PROGRESSING, f"{updated}/{desired} replicas updated")
    if ready < desired:
        return out(Health.PROGRESSING if ready else Health.DEGRADED, f"{ready}/{desired} replicas ready")
    return out(Health.HEALTHY)


def rollup(values: Iterable[Health]) -> Health:
    """The worst of ``values``; nothing at all counts as Missing."""
    worst: Health | None = None
    for value in values:
        if worst is None or _SEVERITY[value] > _SEVERITY[worst]:
            worst = value
    return worst or Health.MISSING


def _generation_seen(obj: KubeObject) -> bool:
    status = obj.get("status") or {}
    return int(status.get("observedGeneration", 0)) >= int(obj.get("metadata", {}).get("generation", 1))


def _counted(obj: KubeObject, health: Health, ready: int, desired: int, reason: str = "") -> ObjectHealth:
    return ObjectHealth(str(obj.get("metadata", {}).get("name", "?")), health, ready, desired, "", reason)


def _deployment_health(obj: KubeObject) -> ObjectHealth:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready, updated = int(status.get("readyReplicas", 0)), int(status.get("updatedReplicas", 0))
    available, total = int(status.get("availableReplicas", 0)), int(status.get("replicas", 0))
    if not _generation_seen(obj):
        return _counted(obj, Health.PROGRESSING, ready, desired, "controller has not observed the latest generation")
    for c in status.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return _counted(obj, Health.DEGRADED, ready, desired, "progress deadline exceeded")
    if updated < desired or total > updated:
        return _counted(obj, Health.PROGRESSING, ready, desired, f"{updated}/{desired} replicas updated")
    if available < desired or ready < desired:
        return _counted(obj, Health.PROGRESSING if ready else Health.DEGRADED, ready, desired,
                        f"{ready}/{desired} replicas ready")
    return _counted(obj, Health.HEALTHY, ready, desired)


def _daemonset_health(obj: KubeObject) -> ObjectHealth:
    status = obj.get("status") or {}
    desired = int(status.get("desiredNumberScheduled", 0))
    ready, updated = int(status.get("numberReady", 0)), int(status.get("updatedNumberScheduled", 0))
    if not _generation_seen(obj):
        return _counted(obj, Health.PROGRESSING, ready, desired, "controller has not observed the latest generation")
    if updated < desired:
        return _counted(obj, Health.PROGRESSING, ready, desired, f"{updated}/{desired} pods updated")
    if ready < desired:
        return _counted(obj, Health.PROGRESSING, ready, desired, f"{ready}/{desired} pods ready")
    return _counted(obj, Health.HEALTHY, ready, desired)


def job_health(obj: KubeObject) -> ObjectHealth:
    """Healthy once complete; Degraded when the Job failed (its condition's message is the reason)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    completions = int(spec.get("completions") or 1)
    succeeded = int(status.get("succeeded", 0))
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return _counted(obj, Health.HEALTHY, succeeded, completions)
        if c.get("type") == "Failed":
            return _counted(obj, Health.DEGRADED, succeeded, completions,
                            f"Job failed: {c.get('reason', '')} {c.get('message', '')}".strip())
    return _counted(obj, Health.PROGRESSING, succeeded, completions, f"{succeeded}/{completions} completions")


def _pdb_health(obj: KubeObject) -> ObjectHealth:
    status = obj.get("status") or {}
    healthy, wanted = int(status.get("currentHealthy", 0)), int(status.get("desiredHealthy", 0))
    if not _generation_seen(obj):
        return _counted(obj, Health.PROGRESSING, healthy, wanted, "controller has not observed the latest generation")
    if healthy < wanted:
        return _counted(obj, Health.PROGRESSING, healthy, wanted, f"{healthy}/{wanted} pods healthy")
    return _counted(obj, Health.HEALTHY, healthy, wanted)


def _pvc_health(obj: KubeObject) -> ObjectHealth:
    phase = (obj.get("status") or {}).get("phase", "")
    if phase == "Bound":
        return _counted(obj, Health.HEALTHY, 1, 1)
    if phase == "Lost":
        return _counted(obj, Health.DEGRADED, 0, 1, "claim lost its volume")
    return _counted(obj, Health.PROGRESSING, 0, 1, f"claim {phase or 'not yet'} bound")


def _service_health(obj: KubeObject) -> ObjectHealth:
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return _counted(obj, Health.HEALTHY, 1, 1)
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        return _counted(obj, Health.HEALTHY, 1, 1)
    return _counted(obj, Health.PROGRESSING, 0, 1, "load balancer has no address yet")


def object_health(obj: KubeObject) -> ObjectHealth:
    """The health of any live object, by its kind's status; a kind not judged here is healthy once it exists."""
    kind = obj.get("kind")
    if kind == "StatefulSet":
        return statefulset_health(obj)
    judge = {"Deployment": _deployment_health, "DaemonSet": _daemonset_health, "Job": job_health,
             "PodDisruptionBudget": _pdb_health, "PersistentVolumeClaim": _pvc_health,
             "Service": _service_health}.get(str(kind))
    return judge(obj) if judge is not None else _counted(obj, Health.HEALTHY, 1, 1)


#: the kinds :func:`object_health` judges by their status (others are healthy once applied)
JUDGED_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "Job", "PodDisruptionBudget",
                          "PersistentVolumeClaim", "Service"})

__all__ += ["JUDGED_KINDS", "job_health", "object_health"]
