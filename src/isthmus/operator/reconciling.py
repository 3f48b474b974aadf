"""What one reconcile of a CassandraCluster does; no kopf here, the handlers only call in.

A reconcile reads the object (a plain mapping), the Fleets (from kopf's index) and the member
registry; checks everything that can be checked before a write (the spec validates, the Fleet
exists, every datacenter's cluster is a registered member, every rack's zone exists, the spec
renders); then hands the app to the rollout engine exactly as ``isthmus apply`` does
(:func:`~isthmus.rollout.apply_rollout`: a revision, gated waves, the app's Lease lock and its
fencing token, held under this replica's identity), reads the per-datacenter health back, and
returns the status and the events to post. A semantic error is a condition with a reason and
nothing is applied anywhere. Members whose Reachable condition is False are skipped (the engine
records the skip) and caught up on a later retry. The parsed and rendered spec is kept while the
spec and the Fleets stay the same, and so is the last health read while no StatefulSet moved.

Level-based: :meth:`Reconciler.tick` runs on a short timer. When due it starts, in the
background, the rollout of a generation not yet everywhere, or -- every ``resync_interval`` -- a
drift check; it refreshes the status unless the app is settled and nothing the status shows can
have changed (then it does no work at all).

Drift: a watch per member and kind of object the app owns (:mod:`.watches`) reports changes made
by someone else; ``drift_debounce`` later a drift check of those members runs. A check lists each
kind once per member and dry-runs only what another field manager wrote
(:func:`isthmus.kube.find_drift`). Then a rollout of the same revision puts it back, objects
edited in place written again with their fields taken over (``spec.rollout.drift: correct``), or
a ``Drifted`` condition names it (``report``).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import (
    Action,
    ApplyReport,
    ClusterConnection,
    ClusterOutcome,
    ClusterRegistry,
    Drift,
    DriftKind,
    Health,
    ObjectOutcome,
    ObjectRef,
    Reach,
    WatchSettings,
    across,
    find_drift,
)
from ..render import Manifests, RenderError, render
from ..rollout import (
    DatacenterStatus,
    LockHeld,
    RolloutOptions,
    RolloutResult,
    StatusReport,
    app_status,
    apply_rollout,
    delete_app,
    superuser_password,
)
from ..rollout.engine import Timeline
from ..rollout.locking import TOKEN_ANNOTATION
from ..rollout.rolling import fill_password
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
from .watches import AppWatches, Change, ChangeKind, targets_for

__all__ = ["EventType", "OperatorEvent", "Outcome", "Reconciler", "Trigger", "roll_up"]

log = logging.getLogger(__name__)


class Trigger(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RESUME = "resume"
    TIMER = "timer"
    WATCH = "watch"
    """A watch saw a member's object changed by someone else: a drift check of those members."""
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


Applied = ClusterOutcome[ApplyReport]
MIN_CHECK_INTERVAL = 2.0
"""Seconds between the starts of two drift checks that watches asked for."""


@dataclass(frozen=True)
class _Parsed:
    """A CassandraCluster and its Fleet as last parsed and rendered, reused while neither changes."""

    revision: str
    fleets: str
    app: CassandraCluster
    fleet: Fleet
    manifests: Manifests
    """Rendered with the password placeholder (what drift checks compare with)."""
    kinds: dict[str, frozenset[tuple[str, str]]]
    """Per member: (apiVersion, kind) of the objects the app has in its namespace there."""


@dataclass
class _Memory:
    last_apply: float = 0.0
    attempted_generation: int | None = None
    applied_generation: int | None = None
    """The generation whose rollout last reached every member (then a resync only looks for drift)."""
    pending_events: list[OperatorEvent] = field(default_factory=list)
    status: CassandraClusterStatus | None = None
    """The status this process last wrote: newer than a timer's body, which kopf may have read before the patch."""
    body: dict[str, Any] | None = None
    """The newest object seen (background work always uses this one, never an older snapshot)."""
    fleets: list[Mapping[str, Any]] = field(default_factory=list)
    parsed: _Parsed | None = None
    dirty: bool = True
    """Something the status shows may have changed (a StatefulSet event, a rollout) since the last refresh."""
    refreshed: float = -1e9
    members_seen: tuple[Any, ...] = ()
    """The members' reachability (and connections) at the last refresh."""
    drifted: dict[str, list[str]] | None = None
    """Per member, the drift the last check found there; None until a check ran."""
    suspects: set[str] = field(default_factory=set)
    """Members where a watch saw a change made by someone else since the last drift check."""
    check: asyncio.TimerHandle | None = None
    last_check: float = -1e9
    invalid: tuple[str, str, Invalid] | None = None
    """The spec and Fleets (their digests) last found invalid, and why."""
    report: StatusReport | None = None
    """The datacenters' health as last read, with the datacenters it was read for and when."""
    report_shape: tuple[tuple[str, str], ...] = ()
    report_read: float = -1e9


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    watch_settings: WatchSettings | None = None
    _locks: dict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    _memory: dict[str, _Memory] = field(default_factory=lambda: defaultdict(_Memory))
    _running: dict[str, asyncio.Task[Outcome]] = field(default_factory=dict)
    _watches: AppWatches = field(init=False)

    def __post_init__(self) -> None:
        self._watches = AppWatches(self._on_change, self.watch_settings)

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

    def _parse(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], memory: _Memory) -> _Parsed:
        """The app and its Fleet, checked and rendered; parsed again only when the spec or a Fleet changed."""
        revision, fleets_digest = spec_revision(body), _digest([dict(f) for f in fleets])
        known = memory.parsed
        if known is not None and (known.revision, known.fleets) == (revision, fleets_digest):
            return known
        if memory.invalid is not None and memory.invalid[:2] == (revision, fleets_digest):
            known_error = memory.invalid[2]  # the same input is wrong the same way: no need to parse it again
            raise Invalid(known_error.reason, str(known_error), app=known_error.app)
        try:
            app = parse_app(body)
            try:
                fleet = choose_fleet(app, fleets)
                manifests = render(app, fleet)
            except Invalid as exc:
                exc.app = app
                raise
            except RenderError as exc:
                raise Invalid("InvalidSpec", str(exc), app=app) from exc
        except Invalid as exc:
            memory.invalid = (revision, fleets_digest, exc)
            raise
        memory.invalid = None
        kinds = {c: frozenset((o["apiVersion"], o["kind"]) for o in manifests.for_cluster(c)
                              if o["metadata"].get("namespace") == app.namespace) for c in manifests.clusters}
        memory.parsed = _Parsed(revision, fleets_digest, app, fleet, manifests, kinds)
        return memory.parsed

    def _members_seen(self, app: CassandraCluster) -> tuple[Any, ...]:
        out = []
        for name, cond in self.members.conditions(app.member_clusters()):
            state = self.members.state(name)
            out.append((name, cond.status, cond.reason, id(state.connection) if state is not None else 0))
        return tuple(out)

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

    # -- watches on the members ----------------------------------------------------------------

    def _watch(self, key: str, parsed: _Parsed) -> None:
        app = parsed.app
        connections = {}
        for name in app.member_clusters():
            state = self.members.state(name)
            if state is not None and state.connection is not None:
                connections[name] = state.connection
        self._watches.want(key, targets_for(app.metadata.name, app.namespace, parsed.kinds, connections))

    def _on_change(self, change: Change) -> None:
        memory = self._memory.get(change.key)
        if memory is None:
            return
        if change.kind == "StatefulSet":
            memory.dirty = True
        if change.change is not ChangeKind.FOREIGN:
            return
        log.info("%s: %s %s in %s %s by someone else; checking for drift", change.key, change.kind, change.name,
                 change.cluster, "deleted" if change.event == "DELETED" else "changed")
        memory.suspects.add(change.cluster)
        self._schedule_check(change.key)

    def _schedule_check(self, key: str) -> None:
        """A drift check of the suspect members, ``drift_debounce`` from now, and never sooner than
        ``MIN_CHECK_INTERVAL`` after the last one began (a controller that keeps touching an object costs
        a bounded number of checks)."""
        memory = self._memory.get(key)
        if memory is None or memory.check is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(self.settings.reconcile.drift_debounce, memory.last_check + MIN_CHECK_INTERVAL - time.monotonic())
        memory.check = loop.call_later(delay, self._start_check, key)

    def _start_check(self, key: str) -> None:
        memory = self._memory.get(key)
        if memory is None:
            return
        memory.check = None
        memory.last_check = time.monotonic()
        if memory.suspects and key not in self._running:  # else the running one reschedules when it ends
            self._start(key, Trigger.WATCH)

    def watch_count(self) -> int:
        """How many watches are open on members' objects, for every app."""
        return self._watches.count()

    # -- the timer ------------------------------------------------------------------------------

    def _remember(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> _Memory:
        """Keep the newest object seen, for background work that starts later."""
        memory = self._memory[_key(body)]
        generation = (body.get("metadata") or {}).get("generation") or 0
        known = ((memory.body or {}).get("metadata") or {}).get("generation") or 0
        if memory.body is None or generation >= known:
            memory.body, memory.fleets = copy.deepcopy(dict(body)), list(fleets)
        return memory

    def _needs_refresh(self, key: str, memory: _Memory, generation: int | None) -> bool:
        status = memory.status
        if status is None or memory.dirty or key in self._running or self._locks[key].locked():
            return True
        if memory.applied_generation != generation or status.observed_generation != generation:
            return True
        if time.monotonic() - memory.refreshed >= self.settings.reconcile.resync_interval:
            return True
        return memory.parsed is None or self._members_seen(memory.parsed.app) != memory.members_seen

    async def tick(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> Outcome:
        """The timer: start a due rollout or drift check in the background, and refresh the status if needed.

        A rollout waits on gates and pods for minutes; run inline it would stop the timer, and with it
        the status and the Reachable conditions, for as long. Its events are posted by a later tick.
        Refreshing costs one LIST per member, so it is skipped while the app is settled: its
        generation rolled out, no StatefulSet event since the last refresh, the members' reachability
        unchanged (the periodic resync refreshes anyway).
        """
        key = _key(body)
        memory = self._remember(body, fleets)
        generation = (body.get("metadata") or {}).get("generation")
        since = time.monotonic() - memory.last_apply
        rc = self.settings.reconcile
        due = (memory.attempted_generation != generation or since >= rc.resync_interval
               or (memory.applied_generation != generation and since >= rc.retry_interval))
        if due and key not in self._running and not self._locks[key].locked():
            memory.last_apply = time.monotonic()
            self._start(key, Trigger.TIMER)
        if self._needs_refresh(key, memory, generation):
            outcome = await self.reconcile(body, fleets, trigger=Trigger.TIMER, apply=False)
        else:
            status = memory.status if memory.status is not None else _previous(body)
            outcome = Outcome(status, write=self.is_leader())
        pending, memory.pending_events = memory.pending_events, []
        return replace(outcome, events=(*pending, *outcome.events))

    def _start(self, key: str, trigger: Trigger) -> None:
        """Reconcile ``key`` in the background with the newest object seen (read once it is our turn)."""
        task = asyncio.create_task(self._background(key, trigger), name=f"reconcile {key} ({trigger.value})")
        self._running[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))

    async def _background(self, key: str, trigger: Trigger) -> Outcome:
        timeline = Timeline()
        async with self._turn(key):
            memory = self._memory[key]
            if memory.body is None:
                return Outcome(CassandraClusterStatus(), write=False)
            timeline.mark("turn")
            return await self._run(memory.body, memory.fleets, trigger=trigger, apply=True, timeline=timeline)

    def _finished(self, key: str, task: asyncio.Task[Outcome]) -> None:
        self._running.pop(key, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background reconcile of %s failed", key, exc_info=exc)
            return
        memory = self._memory.get(key)
        if memory is not None:
            memory.pending_events += task.result().events
            if memory.suspects:
                self._schedule_check(key)

    # -- one reconcile --------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                        trigger: Trigger, apply: bool = True) -> Outcome:
        """Apply (one at a time per object) or, with ``apply=False``, only refresh the status (never waits)."""
        timeline = Timeline()
        self._remember(body, fleets)
        if apply:
            async with self._turn(_key(body)):
                timeline.mark("turn")
                return await self._run(body, fleets, trigger=trigger, apply=True, timeline=timeline)
        return await self._run(body, fleets, trigger=trigger, apply=False, timeline=timeline)

    async def _run(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                   trigger: Trigger, apply: bool, timeline: Timeline) -> Outcome:
        key = _key(body)
        started = time.perf_counter()
        result = "error"
        try:
            if not self.is_leader():
                result = "not-leader"
                return Outcome(_previous(body), write=False)
            outcome = await self._reconcile_once(body, fleets, trigger=trigger, apply=apply, timeline=timeline)
            self._memory[key].status = outcome.status
            result = outcome.status.phase.value.lower()
            return outcome
        finally:
            label = trigger.value if apply else "refresh"
            self.metrics.reconcile_duration.labels(label, result).observe(time.perf_counter() - started)

    async def _reconcile_once(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                              trigger: Trigger, apply: bool, timeline: Timeline) -> Outcome:
        key = _key(body)
        meta = body.get("metadata") or {}
        generation: int | None = meta.get("generation")
        memory = self._memory[key]
        previous = memory.status or _previous(body)
        now = now_rfc3339()
        parsed: _Parsed | None = None
        try:
            parsed = self._parse(body, fleets, memory)
            app, fleet = parsed.app, parsed.fleet
            registry = self._registry(app, fleet)
        except Invalid as exc:
            if parsed is not None:
                self._watch(key, parsed)  # the members still registered keep their watches, the others lose them
            known = parsed.app if parsed is not None else exc.app
            members = self._members_status(known, previous, fresh=True) if known is not None else previous.members
            return self._invalid(body, previous.model_copy(update={"members": members}), exc, generation, now)
        self._watch(key, parsed)
        timeline.mark("parsed")

        events: list[OperatorEvent] = []
        applied: dict[str, ClusterOutcome[ApplyReport]] | None = None
        settled = memory.applied_generation == generation
        report_only = app.spec.rollout.drift is DriftPolicy.REPORT
        drift_before = memory.drifted
        if apply and trigger is Trigger.WATCH and not settled:
            apply = False  # a watch only ever starts a drift check; rolling out is the timer's and kopf's job
        if apply:
            if trigger is not Trigger.WATCH:
                memory.last_apply = time.monotonic()
                memory.attempted_generation = generation
            repair: dict[str, frozenset[ObjectRef]] = {}
            found: dict[str, list[Drift]] = {}
            if settled:  # a drift check: one LIST per kind, a dry run only of what someone else wrote
                only = set(memory.suspects) if trigger is Trigger.WATCH else None
                memory.suspects -= only if only is not None else set(memory.suspects)
                found = await self._drift(parsed, registry, only)
                repair = {c: frozenset(d.ref for d in ds if d.kind is DriftKind.EDITED) for c, ds in found.items()}
                memory.drifted = {**(memory.drifted or {}), **{c: [str(d) for d in ds] for c, ds in found.items()}}
            if not settled or (any(found.values()) and not report_only):
                try:
                    applied = await self._apply(parsed, registry, repair=repair, timeline=timeline)
                except UserError as exc:  # raised before any write: a render error, the lock held elsewhere...
                    members = self._members_status(app, previous, fresh=True)
                    reason = "InvalidSpec" if isinstance(exc, RenderError) else type(exc).__name__
                    return self._invalid(body, previous.model_copy(update={"members": members}),
                                         Invalid(reason, str(exc)), generation, now,
                                         phase=Phase.PENDING if isinstance(exc, LockHeld) else Phase.INVALID)
                if all(o.reach is Reach.DONE for o in applied.values()):
                    memory.applied_generation = generation
                    if settled:
                        memory.drifted = {c: [] for c in memory.drifted or {}}
                    elif any((memory.drifted or {}).values()):  # drift seen before: is it still there?
                        memory.suspects |= set(memory.drifted or {})
                        self._schedule_check(key)
                summary = _apply_summary(applied)
                if settled and all(o.reach is Reach.DONE for o in applied.values()):
                    fixed = "; ".join(f"{c}: {d}" for c, ds in sorted(found.items()) for d in ds)
                    events.append(OperatorEvent(EventType.NORMAL, "DriftCorrected",
                                                f"{fixed} ({summary})" if summary else fixed))
                elif summary:
                    events.append(OperatorEvent(EventType.NORMAL, "DriftCorrected" if settled else "Applied", summary))
                for name, out in sorted(applied.items()):
                    if out.reach is not Reach.DONE:
                        events.append(OperatorEvent(EventType.WARNING, "MemberUnreachable"
                                                    if out.reach is Reach.UNKNOWN else "RolloutFailed",
                                                    f"{name}: {out.error}"))

        report = await self._status_report(memory, parsed, registry, applied)
        for row in report.datacenters:
            self.members.observe(row.cluster, row.reach, row.error)
        for name, out in (applied or {}).items():
            self.members.observe(name, out.reach, out.error)
        memory.refreshed, memory.members_seen = time.monotonic(), self._members_seen(app)
        if applied is not None:
            timeline.mark("status read")
            log.info("%s: %s reconcile in %.3fs: %s", key, trigger.value, time.monotonic() - timeline.started,
                     timeline)

        all_applied = memory.applied_generation == generation or (
            memory.applied_generation is None and bool(previous.revision) and previous.revision == spec_revision(body))
        racks = {dc.name: len(dc.racks) for dc in app.spec.datacenters}
        healthy = sum(1 for d in report.datacenters if _health(d, racks[d.datacenter]) is Health.HEALTHY)
        phase, conditions, message = roll_up(report, applied, generation, racks=racks, rolled_out=all_applied)
        if report_only and memory.drifted is not None:
            lines = [f"{c}: {d}" for c in sorted(memory.drifted) for d in memory.drifted[c]]
            conditions.append(_cond("Drifted", bool(lines), "LiveObjectsDiffer" if lines else "InSync",
                                    "; ".join(lines), generation))
            before = {f"{c}: {d}" for c in sorted(drift_before or {}) for d in (drift_before or {})[c]}
            if set(lines) - before:
                events.append(OperatorEvent(EventType.WARNING, "DriftDetected", "; ".join(lines)))
        elif report_only:
            conditions += [c for c in previous.conditions if c.type == "Drifted"]
        merged = merge_conditions(previous.conditions, conditions, now=now)
        status = CassandraClusterStatus(
            observed_generation=generation,
            phase=phase,
            revision=spec_revision(body) if all_applied else previous.revision,
            ready_datacenters=f"{healthy}/{len(report.datacenters)}",
            message=message,
            last_reconcile_time=now if applied is not None or (apply and trigger is not Trigger.WATCH)
            else previous.last_reconcile_time,
            conditions=merged,
            datacenters=[_dc_model(row) for row in report.datacenters],
            members=self._members_status(app, previous, fresh=apply),
        )
        if not apply or trigger is Trigger.WATCH:
            status = _keep_times(status, previous)
        if phase is Phase.READY and previous.phase is not Phase.READY:
            events.append(OperatorEvent(EventType.NORMAL, "Ready", message))
        return Outcome(status, tuple(events))

    async def _status_report(self, memory: _Memory, parsed: _Parsed, registry: ClusterRegistry,
                             applied: Mapping[str, Applied] | None) -> StatusReport:
        """The datacenters' health: read from the StatefulSets in every member, unless nothing it shows can have
        changed since the last read (no StatefulSet event from the watches, none written by this reconcile, the
        same datacenters and reachable members, and not older than the resync interval)."""
        app = parsed.app
        shape = tuple((dc.name, dc.cluster) for dc in app.spec.datacenters)
        wrote = any(o.ref.kind == "StatefulSet" and o.action is not Action.UNCHANGED
                    for out in (applied or {}).values() if out.value is not None for o in out.value.outcomes)
        last = memory.report
        if last is not None and not memory.dirty and not wrote and memory.report_shape == shape \
                and all(d.reach is Reach.DONE for d in last.datacenters) \
                and self._members_seen(app) == memory.members_seen \
                and time.monotonic() - memory.report_read < self.settings.reconcile.resync_interval:
            return last
        memory.dirty = False  # from here on, a watch event means the status read below may be stale
        report = await app_status(app, registry)
        memory.report, memory.report_shape, memory.report_read = report, shape, time.monotonic()
        return report

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

    async def _apply(self, parsed: _Parsed, registry: ClusterRegistry, *,
                     repair: Mapping[str, frozenset[ObjectRef]] | None = None,
                     timeline: Timeline | None = None) -> dict[str, Applied]:
        """The one call into the rollout engine, the same as ``isthmus apply``: a revision, gated waves, the
        app's lock (fencing token) held by this replica. Members known to be unreachable are skipped."""
        app, fleet = parsed.app, parsed.fleet
        members = app.member_clusters()
        down = {c: s.message for c in members if (s := self.members.state(c)) is not None and s.status == "False"}
        outcomes: dict[str, ClusterOutcome[ApplyReport]] = {
            c: ClusterOutcome(c, Reach.UNKNOWN, error=f"skipped, unreachable: {why}") for c, why in down.items()}
        if len(down) < len(members):
            options = RolloutOptions(identity=self.settings.identity, lock_wait=0.0,
                                     lock_duration=self.settings.leadership.lease_duration,
                                     skip_clusters=frozenset(down), timeout=self.settings.reconcile.rollout_timeout,
                                     repair={c: refs for c, refs in (repair or {}).items() if refs and c not in down})
            result: RolloutResult | None = None
            try:
                result = await apply_rollout(app, fleet, registry, options, rendered=parsed.manifests,
                                             timeline=timeline)
                error = f"rollout {result.phase.value}: {result.state.message}"
                log.info("%s/%s: revision %d %s (%d of %d member(s) written without reading first, %d state "
                         "write(s))", app.namespace, app.metadata.name, result.state.revision, result.phase.value,
                         result.stats.changed_only, len(members) - len(down), result.stats.state_writes)
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

    async def _drift(self, parsed: _Parsed, registry: ClusterRegistry,
                     only: set[str] | None = None) -> dict[str, list[Drift]]:
        """Per member (reachable, and among ``only`` if given): objects whose live state differs from the spec.
        The engine's own fencing-token annotation is not drift."""
        app = parsed.app
        names = [c for c in app.member_clusters() if (only is None or c in only)
                 and not ((s := self.members.state(c)) is not None and s.status == "False")]
        if not names:
            return {}
        password = await superuser_password(registry, parsed.fleet, app)
        manifests = fill_password(parsed.manifests, password)
        outcomes = await across({c: registry[c] for c in names}, lambda conn: find_drift(
            conn, app.metadata.name, manifests.for_cluster(conn.name), ignore=(TOKEN_ANNOTATION,)))
        found = {}
        for name, out in outcomes.items():
            self.members.observe(name, out.reach, out.error)
            if out.value is not None:
                found[name] = out.value
        drifted = [f"{c}: {d}" for c, ds in sorted(found.items()) for d in ds]
        if drifted:
            log.info("%s/%s: drift: %s", app.namespace, app.metadata.name, "; ".join(drifted))
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
        memory = self._memory.get(key)
        if memory is not None and memory.check is not None:
            memory.check.cancel()
            memory.check = None
        await self._watches.drop(key)  # the deletions below are ours, not drift
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

    async def close(self) -> None:
        """Stop the watches and pending checks (the process is stopping or no longer leads)."""
        for memory in self._memory.values():
            if memory.check is not None:
                memory.check.cancel()
                memory.check = None
        await self._watches.close()


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
