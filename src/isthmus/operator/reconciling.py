"""The wiring of one reconcile of an app (a CassandraCluster or a ChartRelease); no kopf here, the handlers only
call in.

A reconcile reads the object (a plain mapping), the Fleets (from kopf's index) and the member
registry; checks and renders the spec (:func:`.memory.parse_once`: the spec validates, the Fleet
exists, every datacenter's cluster is a registered member, every rack's zone exists); asks
:func:`.triggers.work_for` what the trigger needs (a drift check, a rollout, only a status
refresh); does it through :mod:`.rollouts` (the one call into the rollout engine, exactly as
``isthmus apply``; a ChartRelease is first rendered by Helm against its members, once per spec and Fleet);
reads the per-datacenter (a ChartRelease: per-member) health back; and returns the status and events that
:mod:`.rollup` makes of it. A semantic error is a condition with a reason and nothing is applied.

Level-based: :meth:`Reconciler.tick` runs on a short timer. When due (:func:`.triggers.rollout_due`)
it starts, in the background, the rollout of a generation not yet everywhere, or -- every
``resync_interval`` -- a drift check; it refreshes the status unless the app is settled and nothing
the status shows can have changed (then it does no work at all). kopf's own handlers run through the
same turn (:meth:`Reconciler._in_turn`), one reconcile per object at a time.

Drift: a watch per member and kind of object the app owns (:mod:`.watches`) reports changes made
by someone else; ``drift_debounce`` later a drift check of those members runs (:mod:`.driftchecks`).
Then a rollout of the same revision puts it back, objects edited in place written again with their fields taken
over (``spec.rollout.drift: correct``), or a ``Drifted`` condition names it (``report``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import IsthmusError, UserError
from ..helm import HelmError
from ..kube import ApplyAction, ClusterConnection, ClusterRegistry, Drift, DriftKind, ObjectRef, Reach, WatchSettings
from ..render import RenderError
from ..rollout import LockHeld, RolloutOptions, StatusReport, app_status
from ..rollout.results import Timeline
from ..spec import ChartRelease, Fleet
from ..spec.cassandra import DriftPolicy
from .driftchecks import DriftChecks
from .inputs import App, Invalid, choose_fleet, parse_app, spec_revision
from .members import MemberRegistry
from .memory import Memory, Parsed, parse_once
from .metrics import OperatorMetrics
from .rollouts import check_drift, delete_in_waves, render_chart, roll_out, rollout_options
from .rollup import (
    Applied,
    DriftSeen,
    EventType,
    OperatorEvent,
    ReconcileOutcome,
    build_status,
    invalid_outcome,
    previous_status,
    rollout_events,
)
from .settings import DELETE_VOLUMES_ANNOTATION, OperatorSettings
from .status import CassandraClusterStatus, StatusPhase, now_rfc3339
from .triggers import RolloutNeed, Trigger, rollout_due, work_for

__all__ = ["EventType", "OperatorEvent", "ReconcileOutcome", "Reconciler", "Trigger"]

log = logging.getLogger(__name__)


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
    _memory: dict[str, Memory] = field(default_factory=lambda: defaultdict(Memory))
    _running: dict[str, asyncio.Task[ReconcileOutcome]] = field(default_factory=dict)
    _drift: DriftChecks = field(init=False)
    rollout_options: RolloutOptions = field(init=False)
    """Every rollout's options, built once from :attr:`settings` (:func:`.rollouts.rollout_options`)."""

    def __post_init__(self) -> None:
        self._drift = DriftChecks(self._memory, self.members, self._check_suspects,
                                  debounce=self.settings.reconcile.drift_debounce, settings=self.watch_settings)
        self.rollout_options = rollout_options(self.settings)

    @asynccontextmanager
    async def _turn(self, key: str) -> AsyncIterator[None]:
        self.metrics.queue_depth += 1
        try:
            async with self._locks[key]:
                yield
        finally:
            self.metrics.queue_depth -= 1

    def _registry(self, app: App, fleet: Fleet) -> ClusterRegistry:
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

    # -- drift checks the watches ask for -----------------------------------------------------------

    def _check_suspects(self, key: str) -> None:
        if key not in self._running:  # else the running one reschedules when it ends
            self._start(key, Trigger.WATCH)

    def watch_count(self) -> int:
        """How many watches are open on members' objects, for every app."""
        return self._drift.count()

    # -- the timer ------------------------------------------------------------------------------

    def _remember(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> Memory:
        memory = self._memory[_key(body)]
        memory.keep(body, fleets)
        return memory

    def _needs_refresh(self, key: str, memory: Memory, generation: int | None) -> bool:
        status = memory.status
        if status is None or memory.dirty or key in self._running or self._locks[key].locked():
            return True
        if memory.applied_generation != generation or status.observed_generation != generation:
            return True
        if time.monotonic() - memory.refreshed >= self.settings.reconcile.resync_interval:
            return True
        return memory.parsed is None or self.members.seen(memory.parsed.app.member_clusters()) != memory.members_seen

    async def tick(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> ReconcileOutcome:
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
        due = rollout_due(attempted=memory.attempted_generation, applied=memory.applied_generation,
                          generation=generation, since=since, resync_interval=rc.resync_interval,
                          retry_interval=rc.retry_interval)
        if due and key not in self._running and not self._locks[key].locked():
            memory.last_apply = time.monotonic()
            self._start(key, Trigger.TIMER)
        if self._needs_refresh(key, memory, generation):
            outcome = await self.reconcile(body, fleets, trigger=Trigger.TIMER, apply=False)
        else:
            status = memory.status if memory.status is not None else previous_status(body)
            outcome = ReconcileOutcome(status, write=self.is_leader())
        pending, memory.pending_events = memory.pending_events, []
        return replace(outcome, events=(*pending, *outcome.events))

    def _start(self, key: str, trigger: Trigger) -> None:
        """Reconcile ``key`` in the background with the newest object seen (read once it is our turn)."""
        task = asyncio.create_task(self._background(key, trigger), name=f"reconcile {key} ({trigger.value})")
        self._running[key] = task
        task.add_done_callback(lambda t: self._finished(key, t))

    async def _background(self, key: str, trigger: Trigger) -> ReconcileOutcome:
        return await self._in_turn(key, trigger)

    async def _in_turn(self, key: str, trigger: Trigger, body: Mapping[str, Any] | None = None,
                       fleets: Sequence[Mapping[str, Any]] = ()) -> ReconcileOutcome:
        """The one way a reconcile that may roll out runs, kopf's and the background's alike: one at a time per
        object, with ``body`` (default: the newest object seen, read once it is our turn)."""
        timeline = Timeline()
        async with self._turn(key):
            memory = self._memory[key]
            if body is None:
                body, fleets = memory.body, memory.fleets
            if body is None:
                return ReconcileOutcome(CassandraClusterStatus(), write=False)
            timeline.mark("turn")
            return await self._run(body, fleets, trigger=trigger, apply=True, timeline=timeline)

    def _finished(self, key: str, task: asyncio.Task[ReconcileOutcome]) -> None:
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
                self._drift.schedule(key)

    # -- one reconcile --------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                        trigger: Trigger, apply: bool = True) -> ReconcileOutcome:
        """Apply (one at a time per object) or, with ``apply=False``, only refresh the status (never waits)."""
        self._remember(body, fleets)
        if apply:
            return await self._in_turn(_key(body), trigger, body, fleets)
        return await self._run(body, fleets, trigger=trigger, apply=False, timeline=Timeline())

    async def _run(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                   trigger: Trigger, apply: bool, timeline: Timeline) -> ReconcileOutcome:
        key = _key(body)
        started = time.perf_counter()
        result = "error"
        try:
            if not self.is_leader():
                result = "not-leader"
                return ReconcileOutcome(previous_status(body), write=False)
            outcome = await self._reconcile_once(body, fleets, trigger=trigger, apply=apply, timeline=timeline)
            self._memory[key].status = outcome.status
            result = outcome.status.phase.value.lower()
            return outcome
        finally:
            label = trigger.value if apply else "refresh"
            self.metrics.reconcile_duration.labels(label, result).observe(time.perf_counter() - started)

    async def _reconcile_once(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], *,
                              trigger: Trigger, apply: bool, timeline: Timeline) -> ReconcileOutcome:
        key = _key(body)
        meta = body.get("metadata") or {}
        generation: int | None = meta.get("generation")
        memory = self._memory[key]
        previous = memory.status or previous_status(body)
        now = now_rfc3339()
        parsed: Parsed | None = None
        try:
            parsed = parse_once(body, fleets, memory)
            app, fleet = parsed.app, parsed.fleet
            registry = self._registry(app, fleet)
        except Invalid as exc:
            if parsed is not None:
                self._drift.watch(key, parsed)  # the members still registered keep their watches, the others lose them
            known = parsed.app if parsed is not None else exc.app
            members = self.members.statuses(known.member_clusters(), previous.members, fresh=True) \
                if known is not None else previous.members
            return self._invalid(body, previous.model_copy(update={"members": members}), exc, generation, now)
        if parsed.manifests is None and isinstance(parsed.app, ChartRelease):  # Helm renders it, per member
            try:
                parsed = memory.parsed = parsed.with_manifests(await render_chart(parsed.app, fleet, registry))
            except Invalid as exc:
                if isinstance(exc.__cause__, HelmError):  # the chart or its values: the same spec fails the same way
                    memory.invalid = (parsed.revision, parsed.fleets, exc)
                    memory.parsed = None
                members = self.members.statuses(app.member_clusters(), previous.members, fresh=True)
                return self._invalid(body, previous.model_copy(update={"members": members}), exc, generation, now)
            except IsthmusError as exc:  # a member did not answer its discovery: only the status, for now
                log.info("%s: not rendered (%s); the rollout waits", key, exc)
                apply = False
        self._drift.watch(key, parsed)
        timeline.mark("parsed")

        events: list[OperatorEvent] = []
        applied: dict[str, Applied] | None = None
        settled = memory.applied_generation == generation
        report_only = app.spec.rollout.drift is DriftPolicy.REPORT
        drift_before = memory.drifted
        work = work_for(trigger, apply=apply and parsed.manifests is not None, settled=settled,
                        report_only=report_only, suspects=memory.suspects)
        apply = work.apply
        if work.apply and trigger is not Trigger.WATCH:
            memory.last_apply = time.monotonic()
            memory.attempted_generation = generation
        repair: dict[str, frozenset[ObjectRef]] = {}
        found: dict[str, list[Drift]] = {}
        if work.drift_check:  # one LIST per kind, a dry run only of what someone else wrote
            memory.suspects -= work.only if work.only is not None else set(memory.suspects)
            found = await check_drift(app, parsed.fleet, registry, parsed.rendered, members=self.members,
                                      only=set(work.only) if work.only is not None else None)
            repair = {c: frozenset(d.ref for d in ds if d.kind is DriftKind.EDITED) for c, ds in found.items()}
            memory.drifted = {**(memory.drifted or {}), **{c: [str(d) for d in ds] for c, ds in found.items()}}
        if work.rollout is RolloutNeed.ALWAYS or (work.rollout is RolloutNeed.IF_DRIFTED and any(found.values())):
            try:
                by_member = await roll_out(app, parsed.fleet, registry, parsed.rendered, members=self.members,
                                           options=self.rollout_options, metrics=self.metrics, repair=repair,
                                           timeline=timeline)
            except UserError as exc:  # raised before any write: a render error, the lock held elsewhere...
                members = self.members.statuses(app.member_clusters(), previous.members, fresh=True)
                reason = "InvalidSpec" if isinstance(exc, RenderError) else type(exc).__name__
                return self._invalid(body, previous.model_copy(update={"members": members}),
                                     Invalid(reason, str(exc)), generation, now,
                                     phase=StatusPhase.PENDING if isinstance(exc, LockHeld) else StatusPhase.INVALID)
            applied = by_member.outcomes
            if by_member.rolled_out:
                memory.applied_generation = generation
                if settled:
                    memory.drifted = {c: [] for c in memory.drifted or {}}
                elif any((memory.drifted or {}).values()):  # drift seen before: is it still there?
                    memory.suspects |= set(memory.drifted or {})
                    self._drift.schedule(key)
            events += rollout_events(applied, found, settled=settled, rolled_out=by_member.rolled_out)

        report = await self._status_report(memory, parsed, registry, applied)
        for row in report.datacenters:
            self.members.observe(row.cluster, row.reach, row.error)
        for name, out in (applied or {}).items():
            self.members.observe(name, out.reach, out.error)
        memory.refreshed, memory.members_seen = time.monotonic(), self.members.seen(app.member_clusters())
        if applied is not None:
            timeline.mark("status read")
            log.info("%s: %s reconcile in %.3fs: %s", key, trigger.value, time.monotonic() - timeline.started,
                     timeline)

        all_applied = memory.applied_generation == generation or (
            memory.applied_generation is None and bool(previous.revision) and previous.revision == spec_revision(body))
        counted = apply and trigger is not Trigger.WATCH
        status, more = build_status(
            report, applied, generation, previous, racks=_racks(app),
            revision=spec_revision(body) if all_applied else previous.revision, rolled_out=all_applied,
            drift=DriftSeen(memory.drifted, drift_before) if report_only else None, now=now,
            counted=counted or applied is not None, keep=not counted,
            members=self.members.statuses(app.member_clusters(), previous.members, fresh=apply))
        return ReconcileOutcome(status, (*events, *more))

    async def _status_report(self, memory: Memory, parsed: Parsed, registry: ClusterRegistry,
                             applied: Mapping[str, Applied] | None) -> StatusReport:
        """The datacenters' health: read from the StatefulSets in every member, unless nothing it shows can have
        changed since the last read (no StatefulSet event from the watches, none written by this reconcile, the
        same datacenters and reachable members, and not older than the resync interval)."""
        app = parsed.app
        shape = tuple((c, c) for c in app.member_clusters()) if isinstance(app, ChartRelease) else tuple(
            (dc.name, dc.cluster) for dc in app.spec.datacenters)
        wrote = any(o.ref.kind == "StatefulSet" and o.action is not ApplyAction.UNCHANGED
                    for out in (applied or {}).values() if out.value is not None for o in out.value.outcomes)
        last = memory.report
        if last is not None and not memory.dirty and not wrote and memory.report_shape == shape \
                and all(d.reach is Reach.REACHED for d in last.datacenters) \
                and self.members.seen(app.member_clusters()) == memory.members_seen \
                and time.monotonic() - memory.report_read < self.settings.reconcile.resync_interval:
            return last
        memory.dirty = False  # from here on, a watch event means the status read below may be stale
        report = await app_status(app, registry)
        memory.report, memory.report_shape, memory.report_read = report, shape, time.monotonic()
        return report

    def _invalid(self, body: Mapping[str, Any], previous: CassandraClusterStatus, exc: Invalid,
                 generation: int | None, now: str, *, phase: StatusPhase = StatusPhase.INVALID) -> ReconcileOutcome:
        log.info("%s is invalid (%s): %s", _key(body), exc.reason, exc)
        return invalid_outcome(previous, exc.reason, str(exc), generation, now, phase=phase)

    async def finalize(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> ReconcileOutcome:
        """Remove what the app put in every member, datacenter waves in reverse; volumes stay unless asked."""
        key = _key(body)
        started = time.perf_counter()
        previous = previous_status(body)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        delete_volumes = str(annotations.get(DELETE_VOLUMES_ANNOTATION, "")).lower() == "true"
        events: list[OperatorEvent] = []
        retry: float | None = None
        await self._drift.drop(key)  # the deletions below are ours, not drift
        running = self._running.pop(key, None)
        if running is not None:
            running.cancel()
        try:
            async with self._turn(key):
                try:
                    app = parse_app(body)
                    if isinstance(app, ChartRelease):  # placed by its Fleet: bound to it to know its members
                        app, _ = choose_fleet(app, fleets)
                except Invalid as exc:
                    events.append(OperatorEvent(EventType.WARNING, "CleanupSkipped",
                                                f"the spec does not parse or its Fleet is gone, so its members are "
                                                f"unknown: {exc}"))
                    return ReconcileOutcome(previous, tuple(events))
                found, retry = await delete_in_waves(app, self.members, delete_volumes=delete_volumes)
                events += found
            self._memory.pop(key, None)
            status = previous.model_copy(update={"phase": StatusPhase.DELETING})
            return ReconcileOutcome(status, tuple(events), retry)
        finally:
            self.metrics.reconcile_duration.labels(Trigger.DELETE.value, "retry" if retry else "done").observe(
                time.perf_counter() - started)

    async def close(self) -> None:
        """Stop the watches and pending checks (the process is stopping or no longer leads)."""
        await self._drift.close()


def _racks(app: App) -> dict[str, int]:
    """The racks each row of the status should have: a datacenter's; a ChartRelease member's row lists its
    workloads, judged by their own status (no count to expect)."""
    if isinstance(app, ChartRelease):
        return dict.fromkeys(app.member_clusters(), 0)
    return {dc.name: len(dc.racks) for dc in app.spec.datacenters}


def _key(body: Mapping[str, Any]) -> str:
    """``namespace/name``; a ChartRelease's with its kind first (it may share a name with a CassandraCluster)."""
    meta = body.get("metadata") or {}
    kind = "ChartRelease " if body.get("kind") == "ChartRelease" else ""
    return f"{kind}{meta.get('namespace')}/{meta.get('name')}"
