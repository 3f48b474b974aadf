"""The status roll-up: from live health and what a rollout did in each member, the phase, the conditions
and one message; and what a rollout did, per member, from the engine's result. Pure.

A member's apply outcome is its own (:meth:`isthmus.rollout.RolloutResult.members`): a member whose step
failed is ``Failed`` with that step's reason, one paused on is ``Unknown`` only when it did not answer,
and the others are reported as they are (``Done``, with what was written there), so one failed member no
longer marks every member failed. ``rolled_out`` says whether the rollout reached every member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..kube import ApplyReport, ClusterOutcome, Drift, Health, ObjectOutcome, Reach
from ..rollout import DatacenterStatus, MemberOutcome, RolloutResult, StatusReport
from .status import (
    CassandraClusterStatus,
    Condition,
    DatacenterStatusModel,
    MemberStatus,
    RackStatus,
    StatusPhase,
    merge_conditions,
    rfc3339,
)

__all__ = [
    "Applied",
    "ByMember",
    "EventType",
    "OperatorEvent",
    "ReconcileOutcome",
    "applied_by_member",
    "apply_summary",
    "cond",
    "dc_model",
    "health",
    "keep_times",
    "previous_status",
    "roll_up",
    "rollout_events",
]

Applied = ClusterOutcome[ApplyReport]


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class OperatorEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class ReconcileOutcome:
    """What one reconcile hands back to its kopf handler: the status to write and the events to post."""

    status: CassandraClusterStatus
    events: tuple[OperatorEvent, ...] = ()
    retry_after: float | None = None
    """Set when the work is not done (a member did not answer during a delete): try again later."""
    write: bool = True
    """False when this replica must not write (not the leader any more): the handler patches nothing."""


def dc_model(row: DatacenterStatus) -> DatacenterStatusModel:
    return DatacenterStatusModel(
        name=row.datacenter, cluster=row.cluster, health=row.health.value, reach=row.reach.value, ready=row.ready,
        desired=row.desired, revisions=list(row.revisions), error=row.error, last_seen_time=rfc3339(row.seen_at),
        racks=[RackStatus(stateful_set=r.name, health=r.health.value, ready=r.ready, desired=r.desired,
                          revision=r.revision, reason=r.reason) for r in row.racks])


def cond(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message,
                     observed_generation=generation)


def health(dc: DatacenterStatus, racks: int) -> Health:
    """A datacenter's health, where a rack whose StatefulSet does not exist yet counts as not there."""
    if dc.health is Health.UNKNOWN or len(dc.racks) >= racks:
        return dc.health
    return Health.PROGRESSING if dc.racks else Health.MISSING


def roll_up(report: StatusReport, applied: Mapping[str, ClusterOutcome[Any]] | None, generation: int | None, *,
            racks: Mapping[str, int] | None = None,
            rolled_out: bool = True) -> tuple[StatusPhase, list[Condition], str]:
    """Phase, the Ready/Progressing/Degraded conditions and a one-line message from live health.

    ``racks``: racks each datacenter should have; ``rolled_out``: the rollout of ``generation`` reached
    every member (until then the app is Progressing, never Ready).
    """
    dcs = report.datacenters
    states = {d.datacenter: health(d, (racks or {}).get(d.datacenter, 0)) for d in dcs}
    healthy = [d for d in dcs if states[d.datacenter] is Health.HEALTHY]
    unknown = [d for d in dcs if states[d.datacenter] is Health.UNKNOWN]
    degraded = [d for d in dcs if states[d.datacenter] is Health.DEGRADED]
    moving = [d for d in dcs if states[d.datacenter] in (Health.PROGRESSING, Health.MISSING)]
    failed = {n: o for n, o in (applied or {}).items() if o.reach is not Reach.REACHED}
    ready = bool(dcs) and len(healthy) == len(dcs) and not failed and rolled_out
    parts = [f"{len(healthy)}/{len(dcs)} datacenters healthy"]
    parts += [f"{d.datacenter} on {d.cluster}: {states[d.datacenter].value}{f' ({d.error})' if d.error else ''}"
              for d in dcs if states[d.datacenter] is not Health.HEALTHY]
    parts += [f"apply on {n}: {o.reach.value} ({o.error})" for n, o in sorted(failed.items())]
    if not rolled_out and not failed:
        parts.append(f"generation {generation} is still rolling out")
    message = "; ".join(parts)
    if unknown or any(o.reach is Reach.UNREACHABLE for o in failed.values()):
        deg_reason = "MemberUnreachable"
    elif failed:
        deg_reason = "ApplyFailed"
    elif degraded:
        deg_reason = "DatacenterDegraded"
    else:
        deg_reason = "AsExpected"
    is_degraded = deg_reason != "AsExpected"
    progressing = bool(moving) or (not rolled_out and not failed)
    conditions = [
        cond("Ready", ready, "AllDatacentersHealthy" if ready else "NotAllDatacentersHealthy", message, generation),
        cond("Progressing", progressing, "RollingOut" if progressing else "Stable",
             ", ".join(f"{d.datacenter}: {states[d.datacenter].value}" for d in moving), generation),
        cond("Degraded", is_degraded, deg_reason, message if is_degraded else "", generation),
    ]
    phase = (StatusPhase.READY if ready else StatusPhase.DEGRADED if is_degraded
             else StatusPhase.PROGRESSING if progressing else StatusPhase.PENDING)
    return phase, conditions, message


@dataclass(frozen=True)
class ByMember:
    """What one rollout did in each member, and whether it reached every one."""

    outcomes: dict[str, Applied]
    rolled_out: bool


def applied_by_member(members: Sequence[str], down: Mapping[str, str], result: RolloutResult | None,
                      error: str) -> ByMember:
    """Per member, what the rollout did: ``down`` members were skipped as unreachable; with no ``result``
    (the lock was lost, a fence refused us) every other member failed with ``error``; otherwise each
    member's own outcome."""
    outcomes: dict[str, Applied] = {
        c: ClusterOutcome(c, Reach.UNREACHABLE, error=f"skipped, unreachable: {why}") for c, why in down.items()}
    judged = result.members() if result is not None else {}
    for name in members:
        if name in down:
            continue
        mine = judged.get(name)
        if result is None or mine is None:
            outcomes[name] = ClusterOutcome(name, Reach.FAILED, error=error)
            continue
        refs = result.reports.get(name, {})
        report = ApplyReport(name, tuple(ObjectOutcome(ref, action) for ref, action in sorted(refs.items())))
        if mine.outcome is MemberOutcome.FAILED:
            outcomes[name] = ClusterOutcome(name, Reach.FAILED, report, error=f"{error}: {mine.step}: {mine.reason}")
        elif mine.outcome is MemberOutcome.PAUSED:  # the rollout stopped at a step of this member
            outcomes[name] = ClusterOutcome(name, Reach.FAILED, report, error=f"{error}")
        else:  # rolled out, or not reached yet (the rollout stopped elsewhere)
            outcomes[name] = ClusterOutcome(name, Reach.REACHED, report)
    ok = result is not None and result.ok and not down
    return ByMember(outcomes, ok)


@dataclass(frozen=True)
class DriftSeen:
    """Under ``spec.rollout.drift: report``: per member, the drift the last check found (None: no check
    yet), and what it found before that (to tell new drift, which gets an event)."""

    now: Mapping[str, Sequence[str]] | None
    before: Mapping[str, Sequence[str]] | None


def build_status(report: StatusReport, applied: Mapping[str, Applied] | None, generation: int | None,
                 previous: CassandraClusterStatus, *, racks: Mapping[str, int], revision: str, rolled_out: bool,
                 drift: DriftSeen | None, now: str, counted: bool, keep: bool,
                 members: list[MemberStatus]) -> tuple[CassandraClusterStatus, list[OperatorEvent]]:
    """The status a reconcile writes, and the events it adds (new drift, becoming Ready).

    ``revision``: the spec revision known to be everywhere; ``counted``: this reconcile counts as one
    (its time is the new ``lastReconcileTime``); ``keep``: a refresh that finds nothing new keeps the
    previous status, times and all (so kopf writes nothing)."""
    events: list[OperatorEvent] = []
    healthy = sum(1 for d in report.datacenters if health(d, racks[d.datacenter]) is Health.HEALTHY)
    phase, conditions, message = roll_up(report, applied, generation, racks=racks, rolled_out=rolled_out)
    if drift is not None and drift.now is not None:
        lines = [f"{c}: {d}" for c in sorted(drift.now) for d in drift.now[c]]
        conditions.append(cond("Drifted", bool(lines), "LiveObjectsDiffer" if lines else "InSync",
                               "; ".join(lines), generation))
        before = {f"{c}: {d}" for c in sorted(drift.before or {}) for d in (drift.before or {})[c]}
        if set(lines) - before:
            events.append(OperatorEvent(EventType.WARNING, "DriftDetected", "; ".join(lines)))
    elif drift is not None:
        conditions += [c for c in previous.conditions if c.type == "Drifted"]
    status = CassandraClusterStatus(
        observed_generation=generation,
        phase=phase,
        revision=revision,
        ready_datacenters=f"{healthy}/{len(report.datacenters)}",
        message=message,
        last_reconcile_time=now if counted else previous.last_reconcile_time,
        conditions=merge_conditions(previous.conditions, conditions, now=now),
        datacenters=[dc_model(row) for row in report.datacenters],
        members=members,
    )
    if keep:
        status = keep_times(status, previous)
    if phase is StatusPhase.READY and previous.phase is not StatusPhase.READY:
        events.append(OperatorEvent(EventType.NORMAL, "Ready", message))
    return status, events


def invalid_outcome(previous: CassandraClusterStatus, reason: str, message: str, generation: int | None, now: str,
                    *, phase: StatusPhase = StatusPhase.INVALID) -> ReconcileOutcome:
    """A spec that cannot be applied: every condition False with ``reason``; an event when that is news."""
    conditions = [cond(t, False, reason, message, generation) for t in ("Ready", "Progressing", "Degraded")]
    status = previous.model_copy(update={
        "observed_generation": generation, "phase": phase, "message": message,
        "conditions": merge_conditions(previous.conditions, conditions, now=now),
    })
    old = next((c for c in previous.conditions if c.type == "Ready"), None)
    events: tuple[OperatorEvent, ...] = ()
    if old is None or old.reason != reason or old.message != message:
        events = (OperatorEvent(EventType.WARNING, reason, message),)
    return ReconcileOutcome(status, events)


def rollout_events(applied: Mapping[str, Applied], found: Mapping[str, Sequence[Drift]], *, settled: bool,
                   rolled_out: bool) -> list[OperatorEvent]:
    """The events of one rollout: what it wrote (or the drift it corrected), and each member it did not reach."""
    events = []
    summary = apply_summary(applied)
    if settled and rolled_out:
        fixed = "; ".join(f"{c}: {d}" for c, ds in sorted(found.items()) for d in ds)
        events.append(OperatorEvent(EventType.NORMAL, "DriftCorrected", f"{fixed} ({summary})" if summary else fixed))
    elif summary:
        events.append(OperatorEvent(EventType.NORMAL, "DriftCorrected" if settled else "Applied", summary))
    for name, out in sorted(applied.items()):
        if out.reach is not Reach.REACHED:
            events.append(OperatorEvent(EventType.WARNING, "MemberUnreachable" if out.reach is Reach.UNREACHABLE
                                        else "RolloutFailed", f"{name}: {out.error}"))
    return events


def apply_summary(outcomes: Mapping[str, Applied]) -> str:
    parts = []
    for name, outcome in sorted(outcomes.items()):
        report = outcome.value
        if report is None or not report.changed:
            continue
        counts: dict[str, int] = defaultdict(int)
        for o in report.outcomes:
            counts[o.action.value] += 1
        parts.append(f"{name}: " + ", ".join(f"{n} {a}" for a, n in sorted(counts.items()) if a != "unchanged"))
    return "; ".join(parts)


def previous_status(body: Mapping[str, Any]) -> CassandraClusterStatus:
    raw = body.get("status") or {}
    try:
        return CassandraClusterStatus.model_validate(dict(raw))
    except ValueError:
        return CassandraClusterStatus()


def _without_times(status: CassandraClusterStatus) -> dict[str, Any]:
    data = status.model_dump(mode="json")
    for dc in data["datacenters"]:
        dc.pop("last_seen_time", None)
    return data


def keep_times(status: CassandraClusterStatus, previous: CassandraClusterStatus) -> CassandraClusterStatus:
    """A refresh that found nothing new returns the previous status, so kopf writes nothing."""
    return previous if _without_times(status) == _without_times(previous) else status
