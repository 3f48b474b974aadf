"""What one reconcile of a CassandraCluster does; no kopf here, the handlers only call in.

A reconcile reads the object (a plain mapping), the Fleets (from kopf's index) and the member
registry; checks everything that can be checked before a write (the spec validates, the Fleet
exists, every datacenter's cluster is a registered member, every rack's zone exists, the spec
renders); then hands the app to the rollout engine exactly as ``isthmus apply`` does
(:func:`~isthmus.rollout.apply_rollout`: a revision, gated waves, the app's Lease lock and its
fencing token, held under this replica's identity), reads the per-datacenter health back, and
returns the status and the events to post. A semantic error is a condition with a reason and
nothing is applied anywhere. Members whose Reachable condition is False are skipped (the engine
records the skip) and caught up on a later retry.

Level-based: :meth:`Reconciler.tick` runs on a short timer. It refreshes the status (one LIST
per member) every time, and when due starts, in the background, the rollout of a generation not
yet everywhere, or -- every ``resync_interval`` -- a drift check: a server-side dry run of every
object, and a rollout when something differs (``spec.rollout.drift: correct``) or a ``Drifted``
condition (``report``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import ApplyReport, ClusterConnection, ClusterOutcome, ClusterRegistry, Health, ObjectOutcome, Reach
from ..render import RenderError
from ..rollout import (
    DatacenterStatus,
    LockHeld,
    RolloutOptions,
    RolloutResult,
    StatusReport,
    app_status,
    apply_rollout,
    delete_app,
    diff_app,
)
from ..rollout.locking import TOKEN_ANNOTATION
from ..rollout.steps import datacenter_waves
from ..spec import CassandraCluster, Fleet
from ..spec.cassandra import DriftPolicy
from .inputs import Invalid, choose_fleet, parse_app, spec_revision
from .members import MemberRegistry
from .metrics import OperatorMetrics
from .settings import DELETE_VOLUMES_ANNOTATION, OperatorSettings
from .status import (
    CassandraClusterStatus,
    Condition,
    DatacenterStatusModel,
    MemberStatus,
    Phase,
    RackStatus,
    merge_conditions,
    now_rfc3339,
    rfc3339,
)

__all__ = ["EventType", "OperatorEvent", "Outcome", "Reconciler", "Trigger", "roll_up"]

log = logging.getLogger(__name__)


class Trigger(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RESUME = "resume"
    TIMER = "timer"
    DELETE = "delete"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class OperatorEvent:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    status: CassandraClusterStatus
    events: tuple[OperatorEvent, ...] = ()
    retry_after: float | None = None
    """Set when the work is not done (a member did not answer during a delete): try again later."""
    write: bool = True
    """False when this replica must not write (not the leader any more): the handler patches nothing."""


# ---------------------------------------------------------------- status roll-up (pure)


def _dc_model(row: DatacenterStatus) -> DatacenterStatusModel:
    return DatacenterStatusModel(
        name=row.datacenter, cluster=row.cluster, health=row.health.value, reach=row.reach.value, ready=row.ready,
        desired=row.desired, revisions=list(row.revisions), error=row.error, last_seen_time=rfc3339(row.seen_at),
        racks=[RackStatus(stateful_set=r.name, health=r.health.value, ready=r.ready, desired=r.desired,
                          revision=r.revision, reason=r.reason) for r in row.racks])


def _cond(type_: str, ok: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(type=type_, status="True" if ok else "False", reason=reason, message=message,
                     observed_generation=generation)


def _health(dc: DatacenterStatus, racks: int) -> Health:
    """A datacenter's health, where a rack whose StatefulSet does not exist yet counts as not there."""
    if dc.health is Health.UNKNOWN or len(dc.racks) >= racks:
        return dc.health
    return Health.PROGRESSING if dc.racks else Health.MISSING


def roll_up(report: StatusReport, applied: Mapping[str, ClusterOutcome[Any]] | None, generation: int | None, *,
            racks: Mapping[str, int] | None = None, rolled_out: bool = True) -> tuple[Phase, list[Condition], str]:
    """Phase, the Ready/Progressing/Degraded conditions and a one-line message from live health.

    ``racks``: racks each datacenter should have; ``rolled_out``: the rollout of ``generation`` reached
    every member (until then the app is Progressing, never Ready).
    """
    dcs = report.datacenters
    health = {d.datacenter: _health(d, (racks or {}).get(d.datacenter, 0)) for d in dcs}
    healthy = [d for d in dcs if health[d.datacenter] is Health.HEALTHY]
    unknown = [d for d in dcs if health[d.datacenter] is Health.UNKNOWN]
    degraded = [d for d in dcs if health[d.datacenter] is Health.DEGRADED]
    moving = [d for d in dcs if health[d.datacenter] in (Health.PROGRESSING, Health.MISSING)]
    failed = {n: o for n, o in (applied or {}).items() if o.reach is not Reach.DONE}
    ready = bool(dcs) and len(healthy) == len(dcs) and not failed and rolled_out
    parts = [f"{len(healthy)}/{len(dcs)} datacenters healthy"]
    parts += [f"{d.datacenter} on {d.cluster}: {health[d.datacenter].value}{f' ({d.error})' if d.error else ''}"
              for d in dcs if health[d.datacenter] is not Health.HEALTHY]
    parts += [f"apply on {n}: {o.reach.value} ({o.error})" for n, o in sorted(failed.items())]
    if not rolled_out and not failed:
        parts.append(f"generation {generation} is still rolling out")
    message = "; ".join(parts)
    if unknown or any(o.reach is Reach.UNKNOWN for o in failed.values()):
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
        _cond("Ready", ready, "AllDatacentersHealthy" if ready else "NotAllDatacentersHealthy", message, generation),
        _cond("Progressing", progressing, "RollingOut" if progressing else "Stable",
              ", ".join(f"{d.datacenter}: {health[d.datacenter].value}" for d in moving), generation),
        _cond("Degraded", is_degraded, deg_reason, message if is_degraded else "", generation),
    ]
    phase = (Phase.READY if ready else Phase.DEGRADED if is_degraded else Phase.PROGRESSING if progressing
             else Phase.PENDING)
    return phase, conditions, message


def _previous(body: Mapping[str, Any]) -> CassandraClusterStatus:
    raw = body.get("status") or {}
    try:
        return CassandraClusterStatus.model_validate(dict(raw))
    except ValueError:
        return CassandraClusterStatus()


def _apply_summary(outcomes: Mapping[str, ClusterOutcome[ApplyReport]]) -> str:
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


# ---------------------------------------------------------------- the reconciler


@dataclass
class _Memory:
    last_apply: float = 0.0
    attempted_generation: int | None = None
    applied_generation: int | None = None
    """The generation whose rollout last reached every member (then a resync only looks for drift)."""
    pending_events: list[OperatorEvent] = field(default_factory=list)
    status: CassandraClusterStatus | None = None
    """The status this process last wrote: newer than a timer's body, which kopf may have read before the patch."""


@dataclass
class Reconciler:
    """One per operator process; safe to call concurrently (one reconcile per object at a time)."""

    members: MemberRegistry
    metrics: OperatorMetrics
    settings: OperatorSettings
    control_plane: Callable[[str], ClusterConnection] | None = None
    """Connection to the cluster the operator runs in, named as the Fleet's control plane (when not a member)."""
    is_leader: Callable[[], bool] = lambda: True
    """False once this replica's Lease term may have ended: then nothing is applied or written."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _memory: dict[str, _Memory] = field(default_factory=lambda: defaultdict(_Memory))
    _running: dict[str, asyncio.Task[Outcome]] = field(default_factory=dict)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        self.metrics.queue_depth += 1
        try:
            async with self._locks[key]:
                yield
        finally:
            self.metrics.queue_depth -= 1

    def _registry(self, app: CassandraCluster, fleet: Fleet) -> ClusterRegistry:
        missing = [c for c in app.member_clusters() if c not in self.members]
        if missing:
            raise Invalid("UnregisteredMember",
                          f"datacenters are placed on {', '.join(missing)}, which no Secret labelled "
                          f"isthmus.dev/cluster registers in {self.settings.namespace}; nothing was applied")
        control = fleet.spec.control_plane
        fallback = {control: self.control_plane(control)} if self.control_plane and control not in self.members else {}
        try:
            return self.members.registry([*app.member_clusters(), control], fallback=fallback)
        except KeyError as exc:
            raise Invalid("UnregisteredMember", f"the Fleet's control plane {control} is not a registered member "
                          "and the operator has no connection to it; nothing was applied") from exc

    def _members_status(self, app: CassandraCluster, previous: CassandraClusterStatus, *,
                        fresh: bool) -> list[MemberStatus]:
        """Each member's Reachable condition; between re-applies an unchanged one keeps its old times."""
        before = {m.name: {c.type: c for c in m.conditions} for m in previous.members}
        out = []
        for name, cond in self.members.conditions(app.member_clusters()):
            old = before.get(name, {}).get(cond.type)
            keep = not fresh and old is not None and (old.status, old.reason) == (cond.status, cond.reason)
            out.append(MemberStatus(name=name, conditions=[old if keep and old is not None else cond]))
        return out

    async def tick(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> Outcome:
        """The timer: start a due rollout or drift check in the background, and refresh the status now.

        A rollout waits on gates and pods for minutes; run inline it would stop the timer, and with it
        the status and the Reachable conditions, for as long. Its events are posted by a later tick.
        """
        key = _key(body)
        memory = self._memory[key]
        generation = (body.get("metadata") or {}).get("generation")
        since = time.monotonic() - memory.last_apply
        rc = self.settings.reconcile
        due = (memory.attempted_generation != generation or since >= rc.resync_interval
               or (memory.applied_generation != generation and since >= rc.retry_interval))
        if due and key not in self._running and not self._locks[key].locked():
            snapshot = copy.deepcopy(dict(body))
            memory.last_apply = time.monotonic()
            task = asyncio.create_task(self.reconcile(snapshot, list(fleets), trigger=Trigger.TIMER))
            self._running[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        outcome = await self.reconcile(body, fleets, trigger=Trigger.TIMER, apply=False)
        pending, memory.pending_events = memory.pending_events, []
        return replace(outcome, events=(*pending, *outcome.events))

    def _finished(self, key: str, task: asyncio.Task[Outcome]) -> None:
        self._running.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background reconcile of %s failed", key, exc_info=exc)
            return
        if key in self._memory:
            self._memory[key].pending_events += task.result().events

    async def reconcile(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                        trigger: Trigger, apply: bool = True) -> Outcome:
        """Apply (one at a time per object) or, with ``apply=False``, only refresh the status (never waits)."""
        key = _key(body)
        started = time.perf_counter()
        result = "error"
        try:
            if not self.is_leader():
                result = "not-leader"
                return Outcome(_previous(body), write=False)
            if apply:
                async with self._turn(key):
                    outcome = await self._reconcile_once(body, fleets, trigger=trigger, apply=True)
            else:
                outcome = await self._reconcile_once(body, fleets, trigger=trigger, apply=False)
            self._memory[key].status = outcome.status
            result = outcome.status.phase.value.lower()
            return outcome
        finally:
            label = trigger.value if apply else "refresh"
            self.metrics.reconcile_duration.labels(label, result).observe(time.perf_counter() - started)

    async def _reconcile_once(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                              trigger: Trigger, apply: bool) -> Outcome:
        meta = body.get("metadata") or {}
        generation: int | None = meta.get("generation")
        previous = self._memory[_key(body)].status or _previous(body)
        now = now_rfc3339()
        app: CassandraCluster | None = None
        try:
            app = parse_app(body)
            fleet = choose_fleet(app, fleets)
            registry = self._registry(app, fleet)
        except Invalid as exc:
            members = self._members_status(app, previous, fresh=True) if app is not None else previous.members
            return self._invalid(body, previous.model_copy(update={"members": members}), exc, generation, now)

        events: list[OperatorEvent] = []
        applied: dict[str, ClusterOutcome[ApplyReport]] | None = None
        drifted: list[str] | None = None
        memory = self._memory[_key(body)]
        settled = memory.applied_generation == generation
        report_only = app.spec.rollout.drift is DriftPolicy.REPORT and settled
        if apply:
            memory.last_apply = time.monotonic()
            memory.attempted_generation = generation
            if settled:  # a resync: a dry run shows drift (deleted or changed objects) without writing
                drifted = await self._drift(app, fleet, registry)
            if not settled or (drifted and not report_only):
                try:
                    applied = await self._apply(app, fleet, registry)
                except UserError as exc:  # raised before any write: a render error, the lock held elsewhere...
                    members = self._members_status(app, previous, fresh=True)
                    reason = "InvalidSpec" if isinstance(exc, RenderError) else type(exc).__name__
                    return self._invalid(body, previous.model_copy(update={"members": members}),
                                         Invalid(reason, str(exc)), generation, now,
                                         phase=Phase.PENDING if isinstance(exc, LockHeld) else Phase.INVALID)
                if all(o.reach is Reach.DONE for o in applied.values()):
                    memory.applied_generation = generation
                summary = _apply_summary(applied)
                if summary:
                    events.append(OperatorEvent(EventType.NORMAL, "DriftCorrected" if settled else "Applied", summary))
                for name, out in sorted(applied.items()):
                    if out.reach is not Reach.DONE:
                        events.append(OperatorEvent(EventType.WARNING, "MemberUnreachable"
                                                    if out.reach is Reach.UNKNOWN else "RolloutFailed",
                                                    f"{name}: {out.error}"))
            if not report_only:
                drifted = None

        report = await app_status(app, registry)
        for row in report.datacenters:
            self.members.observe(row.cluster, row.reach, row.error)
        for name, out in (applied or {}).items():
            self.members.observe(name, out.reach, out.error)

        all_applied = memory.applied_generation == generation or (
            memory.applied_generation is None and bool(previous.revision) and previous.revision == spec_revision(body))
        racks = {dc.name: len(dc.racks) for dc in app.spec.datacenters}
        healthy = sum(1 for d in report.datacenters if _health(d, racks[d.datacenter]) is Health.HEALTHY)
        phase, conditions, message = roll_up(report, applied, generation, racks=racks, rolled_out=all_applied)
        if drifted is not None:
            conditions.append(_cond("Drifted", bool(drifted), "LiveObjectsDiffer" if drifted else "InSync",
                                    "; ".join(drifted), generation))
            if drifted and not any(c.type == "Drifted" and c.status == "True" for c in previous.conditions):
                events.append(OperatorEvent(EventType.WARNING, "DriftDetected", "; ".join(drifted)))
        elif report_only:
            conditions += [c for c in previous.conditions if c.type == "Drifted"]
        merged = merge_conditions(previous.conditions, conditions, now=now)
        status = CassandraClusterStatus(
            observed_generation=generation,
            phase=phase,
            revision=spec_revision(body) if all_applied else previous.revision,
            ready_datacenters=f"{healthy}/{len(report.datacenters)}",
            message=message,
            last_reconcile_time=now if apply else previous.last_reconcile_time,
            conditions=merged,
            datacenters=[_dc_model(row) for row in report.datacenters],
            members=self._members_status(app, previous, fresh=apply),
        )
        if not apply:
            status = _keep_times(status, previous)
        if phase is Phase.READY and previous.phase is not Phase.READY:
            events.append(OperatorEvent(EventType.NORMAL, "Ready", message))
        return Outcome(status, tuple(events))

    def _invalid(self, body: Mapping[str, Any], previous: CassandraClusterStatus, exc: Invalid,
                 generation: int | None, now: str, *, phase: Phase = Phase.INVALID) -> Outcome:
        message = str(exc)
        conditions = [_cond(t, False, exc.reason, message, generation) for t in ("Ready", "Progressing", "Degraded")]
        status = previous.model_copy(update={
            "observed_generation": generation, "phase": phase, "message": message,
            "conditions": merge_conditions(previous.conditions, conditions, now=now),
        })
        old = next((c for c in previous.conditions if c.type == "Ready"), None)
        events: tuple[OperatorEvent, ...] = ()
        if old is None or old.reason != exc.reason or old.message != message:
            events = (OperatorEvent(EventType.WARNING, exc.reason, message),)
        log.info("%s is invalid (%s): %s", _key(body), exc.reason, message)
        return Outcome(status, events)

    async def _apply(self, app: CassandraCluster, fleet: Fleet,
                     registry: ClusterRegistry) -> dict[str, ClusterOutcome[ApplyReport]]:
        """The one call into the rollout engine, the same as ``isthmus apply``: a revision, gated waves, the
        app's lock (fencing token) held by this replica. Members known to be unreachable are skipped."""
        members = app.member_clusters()
        down = {c: s.message for c in members if (s := self.members.state(c)) is not None and s.status == "False"}
        outcomes: dict[str, ClusterOutcome[ApplyReport]] = {
            c: ClusterOutcome(c, Reach.UNKNOWN, error=f"skipped, unreachable: {why}") for c, why in down.items()}
        if len(down) < len(members):
            options = RolloutOptions(identity=self.settings.identity, lock_wait=0.0,
                                     lock_duration=self.settings.leadership.lease_duration,
                                     skip_clusters=frozenset(down), timeout=self.settings.reconcile.rollout_timeout)
            result: RolloutResult | None = None
            try:
                result = await apply_rollout(app, fleet, registry, options)
                error = f"rollout {result.phase.value}: {result.state.message}"
            except UserError:
                raise
            except IsthmusError as exc:  # the lock was lost or a fence refused us: stop writing, say why
                error = f"{type(exc).__name__}: {exc}"
            for name in members:
                if name in down:
                    continue
                if result is not None and result.ok:
                    refs = result.reports.get(name, {})
                    outcomes[name] = ClusterOutcome(name, Reach.DONE, ApplyReport(
                        name, tuple(ObjectOutcome(ref, action) for ref, action in sorted(refs.items()))))
                else:
                    outcomes[name] = ClusterOutcome(name, Reach.FAILED, error=error)
        for name, out in outcomes.items():
            if out.value is None:
                self.metrics.rollout_steps.labels(name, out.reach.value.lower()).inc()
                continue
            for obj in out.value.outcomes:
                self.metrics.rollout_steps.labels(name, obj.action.value).inc()
        return outcomes

    async def _drift(self, app: CassandraCluster, fleet: Fleet, registry: ClusterRegistry) -> list[str]:
        """Objects whose live state differs from the spec (server-side dry run); the engine's own fencing
        token annotation is not drift."""
        outcomes = await diff_app(app, fleet, registry)
        found = []
        for name, out in sorted(outcomes.items()):
            for diff in out.value or []:
                changed = [line for line in diff.text.splitlines()
                           if line[:1] in "+-" and line[:3] not in ("---", "+++")]
                if any(TOKEN_ANNOTATION not in line for line in changed):
                    found.append(f"{name}: {diff.ref}")
        return found

    async def finalize(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> Outcome:
        """Remove what the app put in every member, datacenter waves in reverse; volumes stay unless asked."""
        key = _key(body)
        started = time.perf_counter()
        previous = _previous(body)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        delete_volumes = str(annotations.get(DELETE_VOLUMES_ANNOTATION, "")).lower() == "true"
        events: list[OperatorEvent] = []
        retry: float | None = None
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()
        try:
            async with self._turn(key):
                try:
                    app = parse_app(body)
                except Invalid as exc:
                    events.append(OperatorEvent(EventType.WARNING, "CleanupSkipped",
                                                f"the spec does not parse, so its members are unknown: {exc}"))
                    return Outcome(previous, tuple(events))
                dcs = {dc.name: dc for dc in app.spec.datacenters}
                done: set[str] = set()
                for wave in reversed(datacenter_waves(app)):
                    clusters = [dcs[n].cluster for n in wave if dcs[n].cluster not in done]
                    absent = [c for c in clusters if c not in self.members]
                    if absent:
                        events.append(OperatorEvent(EventType.WARNING, "CleanupSkipped",
                                                    f"{', '.join(absent)}: not a registered member; its objects stay"))
                    present = [c for c in dict.fromkeys(clusters) if c in self.members]
                    if not present:
                        continue
                    part = app.model_copy(update={"spec": app.spec.model_copy(
                        update={"datacenters": [dcs[n] for n in wave if dcs[n].cluster in present]})})
                    outcomes = await delete_app(part, self.members.registry(present), delete_volumes=delete_volumes)
                    for name, out in sorted(outcomes.items()):
                        self.members.observe(name, out.reach, out.error)
                        if out.reach is not Reach.DONE:
                            events.append(OperatorEvent(EventType.WARNING, "CleanupPending", f"{name}: {out.error}"))
                            retry = 10.0
                        elif out.value is not None:
                            done.add(name)
                            events.append(OperatorEvent(EventType.NORMAL, "Deleted", f"{name}: "
                                                        f"{len(out.value.outcomes)} object(s) deleted"
                                                        f"{' (volumes too)' if delete_volumes else ''}"))
                    if retry is not None:
                        break
            self._memory.pop(key, None)
            status = previous.model_copy(update={"phase": Phase.DELETING})
            return Outcome(status, tuple(events), retry)
        finally:
            self.metrics.reconcile_duration.labels(Trigger.DELETE.value, "retry" if retry else "done").observe(
                time.perf_counter() - started)


def _without_times(status: CassandraClusterStatus) -> dict[str, Any]:
    data = status.model_dump(mode="json")
    for dc in data["datacenters"]:
        dc.pop("last_seen_time", None)
    return data


def _keep_times(status: CassandraClusterStatus, previous: CassandraClusterStatus) -> CassandraClusterStatus:
    """A refresh that found nothing new returns the previous status, so kopf writes nothing."""
    return previous if _without_times(status) == _without_times(previous) else status


def _key(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
