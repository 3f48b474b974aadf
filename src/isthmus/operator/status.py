"""What the operator writes back: a CassandraCluster's status, its conditions and their roll-up. Pure.

The status shape is a pydantic model, so the CRD's status schema is generated from the same
source as the code that fills it (see :mod:`.crds`). Conditions follow the Kubernetes
convention: ``lastTransitionTime`` moves only when ``status`` flips, so a resync that finds
nothing new writes an identical status (and kopf skips the patch).

Conditions on a CassandraCluster:

- ``Ready``: every datacenter is Healthy and the last apply reached every member.
- ``Progressing``: a change is rolling out (objects applied, pods not all updated and ready).
- ``Degraded``: a datacenter is Degraded or Unknown, or an apply failed; the reason says which.
- ``Drifted``: (``spec.rollout.drift: report``) a member holds objects that differ from the spec.

Per member cluster (``status.members[].conditions``): ``Reachable``, with ``lastSeenTime``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "CassandraClusterStatus",
    "Condition",
    "ConditionStatus",
    "DatacenterStatusModel",
    "MemberStatus",
    "RackStatus",
    "StatusPhase",
    "merge_conditions",
    "now_rfc3339",
    "rfc3339",
]

ConditionStatus = Literal["True", "False", "Unknown"]


class StatusPhase(StrEnum):
    PENDING = "Pending"
    INVALID = "Invalid"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    DELETING = "Deleting"


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    def to_json(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


class Condition(StatusModel):
    type: str = Field(description="Ready, Progressing, Degraded, Drifted; Reachable on a member")
    status: ConditionStatus
    reason: str = Field(description="CamelCase machine-readable cause")
    message: str = ""
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339)")
    last_seen_time: str | None = Field(default=None, description="Reachable: last successful call (RFC 3339)")
    observed_generation: int | None = None


class RackStatus(StatusModel):
    stateful_set: str
    health: str
    ready: int = 0
    desired: int = 0
    revision: str = ""
    reason: str = ""


class DatacenterStatusModel(StatusModel):
    name: str
    cluster: str
    health: str = Field(description="Healthy, Progressing, Degraded, Unknown or Missing")
    reach: str = Field(description="Done, Unknown (cluster did not answer) or Failed")
    ready: int = 0
    desired: int = 0
    revisions: list[str] = Field(default_factory=list)
    error: str = ""
    last_seen_time: str | None = None
    racks: list[RackStatus] = Field(default_factory=list)


class MemberStatus(StatusModel):
    name: str = Field(description="Member cluster name (label isthmus.dev/cluster of its kubeconfig Secret)")
    conditions: list[Condition] = Field(default_factory=list)


class CassandraClusterStatus(StatusModel):
    """``status`` of a CassandraCluster, written only by the leading operator replica."""

    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled")
    phase: StatusPhase = StatusPhase.PENDING
    revision: str = Field(default="", description="Hash of the spec last applied to every member")
    ready_datacenters: str = Field(default="", alias="readyDCs", description="Healthy DCs / all DCs, e.g. 3/3")
    message: str = ""
    last_reconcile_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    datacenters: list[DatacenterStatusModel] = Field(default_factory=list)
    members: list[MemberStatus] = Field(default_factory=list)


def rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(previous: Iterable[Condition], new: Sequence[Condition], *, now: str) -> list[Condition]:
    """``new`` conditions, each keeping its old ``lastTransitionTime`` when its status did not flip."""
    before = {c.type: c for c in previous}
    out: list[Condition] = []
    for cond in new:
        old = before.get(cond.type)
        stamp = old.last_transition_time if old is not None and old.status == cond.status else now
        out.append(cond.model_copy(update={"last_transition_time": stamp or now}))
    return out
