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
