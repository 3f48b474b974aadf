"""Executing a rollout plan: gates before every disruptive step, lock renewal, fencing, state writes.

The engine walks a :class:`~.steps.Plan` wave by wave (lanes of a wave concurrently, steps of a
lane in order). For each step not already Done in the persisted state:

1. gates (disruptive steps): every member observed afresh and judged by the gates; a member
   that does not answer pauses the step (the rollout says so and polls) for as long as it takes;
   gates that merely WAIT fail the step after the progress deadline;
2. guard: our lease is still ours (renewed in the background every third of its duration) and
   the member's fence accepts our token (:func:`~.locking.fence`);
3. the step is marked Running in the state, its objects are applied (stamped with our fencing
   token), a rack step then waits until its StatefulSet's new generation is observed and all its
   pods are updated and Ready, failing early once more pods failed than the failure budget;
4. the step is marked Done.

A change that rolls no pods is not held up by any of that. After the ``prepare`` wave, the app's
live StatefulSets are listed in every member (once, concurrently). A rack step whose
StatefulSet already holds the desired content (equal content hash) is Done at once: no gates,
no write, no wait. A ``finalize`` step whose member's StatefulSets all match (none to change,
none to prune) is not disruptive, so it is not gated either. So a change to config, Services,
budgets or labels lands in every member concurrently in the ``prepare`` wave, and the rest of
the plan takes no more than its bookkeeping. ``repair`` (drift correction) names objects to
write again even though their hash matches; a StatefulSet among them makes its rack step a
real, gated one.

State writes are grouped (:class:`_StateWriter`). A step that rolls no pods is recorded with
the next write (before the next disruptive step's gates, or at the end): re-running it after a
crash writes nothing. A disruptive step waits until its Running and then its Done mark are
written, so a killed rollout always leaves behind exactly which disruptive steps are done.
Writes asked for while one is in flight go out as one.

``prepare`` of a new revision can skip reading the member (see :meth:`Engine._prepare_changed`):
with a :class:`Baseline`, when the member provably still runs it, only the objects whose
content hash changed are written.

A member that stops answering mid-step pauses that step, which is re-run when it answers (an
idempotent apply). A member named in ``skip_clusters`` is skipped, and the skip is logged in
the state. Failure stops every lane; what happens next (pause or rollback) is decided by the
caller, :mod:`.rolling`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import IsthmusError
from ..kube import (
    Action,
    ApplyReport,
    ClusterConnection,
    ClusterOutcome,
    ClusterRegistry,
    ClusterUnreachable,
    Conflict,
    Health,
    KubeObject,
    ObjectOutcome,
    ObjectRef,
    across,
    apply_exactly,
    apply_objects,
    delete_record,
    diff_objects,
    fetch_owned,
    get_record,
    list_objects,
    reapply_objects,
    remembered_config_map,
    statefulset_health,
    unapplied,
)
from ..kube.inventory import read_inventory
from ..kube.objects import content_hash
from ..render import Manifests
from .deploying import Progress
from .gates import DEFAULT_GATES, Gate, GateContext, Verdict, evaluate, failed_pods, observe, overall, pod_ready
from .locking import TOKEN_ANNOTATION, Fenced, LeaseLock, LockLost, fence
from .progress import Outcome, Phase, ProgressStore, RolloutState
from .revisions import member_record_name, record_member_revision
from .settled import member_runs
from .steps import DC_LABEL, RACK_LABEL, Step, StepKind, step_objects

__all__ = ["Baseline", "Engine", "EngineSettings", "EngineStats", "RolloutResult", "StepFailed", "Timeline"]

REVISION_HASH_LABEL = "controller-revision-hash"


class StepFailed(IsthmusError):
    def __init__(self, step: Step, reason: str) -> None:
        self.step, self.reason = step, reason
        super().__init__(f"step {step.id} in {step.cluster} failed: {reason}")


class _Stopped(Exception):
    """Internal: another lane failed or the rollout timed out; leave at the next safe point."""


def _quiet(_cluster: str, _message: str) -> None:
    return None


class Timeline:
    """When each phase of a rollout ended, in seconds since it started: where the time went."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, label: str) -> None:
        self.marks.setdefault(label, round(time.monotonic() - self.started, 4))

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.3f}s" for k, v in self.marks.items())


@dataclass(frozen=True)
class Baseline:
    """The revision the members ran before this rollout, as rendered: what a member provably still holds
    (see :meth:`Engine._prepare_changed`) need not be read back to find what changed."""

    revision: int
    manifests: Mapping[str, Sequence[KubeObject]]


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    poll_interval: float = 1.0
    force_conflicts: bool = False
    prune: bool = True
    skip_clusters: frozenset[str] = frozenset()
    gates: tuple[Gate, ...] = DEFAULT_GATES
    soak_seconds: float = 0.0
    progress_deadline: float = 600.0
    failure_budget: int = 0
    timeout: float | None = None
    """Seconds the whole run may take; then it pauses (resumable)."""
    repair: Mapping[str, frozenset[ObjectRef]] = field(default_factory=dict)
    """Per member, objects to write again (taking conflicting fields over) although their hash matches."""


@dataclass
class EngineStats:
    """The orchestration's own work, for the benchmark: time in gates, lock and state bookkeeping."""

    gate_seconds: float = 0.0
    gate_evaluations: int = 0
    converge_seconds: float = 0.0
    guard_seconds: float = 0.0
    state_seconds: float = 0.0
    state_writes: int = 0
    apply_seconds: float = 0.0
    lock_renewals: int = 0
    changed_only: int = 0
    """Members whose ``prepare`` wrote only what changed since the baseline, without reading first."""

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in vars(self).items()}


@dataclass
class RolloutResult:
    state: RolloutState
    reports: dict[str, dict[ObjectRef, Action]] = field(default_factory=dict)
    stats: EngineStats = field(default_factory=EngineStats)
    notes: list[str] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def ok(self) -> bool:
        return self.state.phase is Phase.SUCCEEDED

    def counts(self, cluster: str) -> dict[Action, int]:
        out = dict.fromkeys(Action, 0)
        for action in self.reports.get(cluster, {}).values():
            out[action] += 1
        return out


class _StateWriter:
    """Writes the rollout state, grouping the writes asked for while one is in flight.

    ``save(wait=False)`` records that the state changed and makes sure a write will cover it;
    ``save()`` also waits until one has. Every change made before a write starts is in it, so
    ten lanes finishing at once cost one or two writes. A write the control plane does not answer
    is retried (the rollout says so); a refusal (a newer holder's token) is kept in ``error`` and
    raised by the next waiting save.
    """

    def __init__(self, store: ProgressStore, state: RolloutState, progress: Progress, stats: EngineStats,
                 poll: float) -> None:
        self.store, self.state, self.progress, self.stats, self.poll = store, state, progress, stats, poll
        self.error: BaseException | None = None
        self._changes = 0
        self._written = 0
        self._lock = asyncio.Lock()
        self._drainer: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """The state changed, but need not be written until the next save."""
        self._changes += 1

    def write_pending(self) -> None:
        """Start writing, in the background, whatever changed since the last write (nothing if nothing did)."""
        if self._written < self._changes and self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())

    async def save(self, *, wait: bool = True) -> None:
        self._changes += 1
        if wait:
            await self._write_until(self._changes)
        elif self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._written < self._changes and self.error is None:
                await self._write_until(self._changes)
        except Exception:  # kept in self.error, raised by the next waiting save
            pass
        finally:
            self._drainer = None  # no await since the last check: a later change starts a new drainer

    async def _write_until(self, target: int) -> None:
        async with self._lock:
            if self.error is not None:
                raise self.error
            if self._written >= target:
                return
            upto = self._changes  # every change made so far goes into this write
            started = time.monotonic()
            try:
                while True:
                    try:
                        await self.store.save(self.state)
                        break
                    except ClusterUnreachable as exc:
                        self.progress(self.store.conn.name, f"paused: cannot write rollout state ({exc.reason}); "
                                                            "retrying")
                        await asyncio.sleep(self.poll)
            except Exception as exc:
                self.error = exc
                raise
            self._written = max(self._written, upto)
            self.stats.state_writes += 1
            self.stats.state_seconds += time.monotonic() - started

    async def flush(self) -> None:
        """Wait until every change so far is written (raising a refusal)."""
        if self._written < self._changes or self.error is not None:
            await self._write_until(self._changes)

    async def close(self) -> None:
        if self._drainer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer


class Engine:
    """Runs one plan once (until done, failed, paused, or the lock is lost)."""

    def __init__(self, *, app: str, namespace: str, registry: ClusterRegistry, members: Sequence[str],
                 manifests: Manifests, state: RolloutState, store: ProgressStore, lock: LeaseLock,
                 settings: EngineSettings, progress: Progress = _quiet, timeline: Timeline | None = None,
                 baseline: Baseline | None = None, fences: Mapping[str, asyncio.Task[bool]] | None = None,
                 reapply: bool = False) -> None:
        self.app, self.namespace = app, namespace
        self.registry = registry
        self.members = [m for m in members if m not in settings.skip_clusters]
        self.manifests = manifests
        self.state, self.store, self.lock = state, store, lock
        self.settings = settings
        self.progress = progress
        self.stats = EngineStats()
        self.timeline = timeline or Timeline()
        self.reports: dict[str, dict[ObjectRef, Action]] = {}
        self.tolerated: frozenset[tuple[str, str]] = frozenset()
        self._writer = _StateWriter(store, state, progress, self.stats, settings.poll_interval)
        self._workloads: asyncio.Task[dict[str, ClusterOutcome[dict[str, str | None]]]] | None = None
        self._ran: set[str] = set()
        """Steps executed (not merely found Done) by this run."""
        self.baseline = baseline
        self.reapply = reapply
        """The revision was rolled out before (this is a re-apply): a member may well hold all of it already."""
        self._fences = dict(fences or {})
        """Fences already being written (with our token, under our lock) when the run started, per member."""
        self._continuous: set[str] = set()
        """Members whose fence took our token against the version this process last wrote: no other holder
        has written to them since."""
        self._changed_only: set[str] = set()
        """Members whose ``prepare`` applied only what changed since the baseline (and nothing was added or removed)."""
        self._last_disruptive: float | None = None
        self._stop: str | None = None
        self._failure: StepFailed | None = None
        self._fatal: BaseException | None = None
        self._started = time.monotonic()

    def _conns(self) -> Mapping[str, ClusterConnection]:
        return {m: self.registry[m] for m in self.members}

    def _say(self, cluster: str, message: str, *, log: bool = False) -> None:
        self.progress(cluster, message)
        if log:
            self.state.event(f"{cluster}: {message}")

    async def _save(self, *, wait: bool = True) -> None:
        await self._writer.save(wait=wait)

    def _check_stop(self) -> None:
        if self._writer.error is not None:
            raise self._writer.error
        if self._stop is not None:
            raise _Stopped(self._stop)
        if self.settings.timeout is not None and time.monotonic() - self._started > self.settings.timeout:
            self._stop = f"not finished within {self.settings.timeout:g}s"
            raise _Stopped(self._stop)

    async def _sleep(self) -> None:
        await asyncio.sleep(self.settings.poll_interval)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> RolloutResult:
        if self.state.kind == "rollback":
            self.tolerated = await self._unreverted()
        self.state.phase, self.state.message = Phase.RUNNING, ""
        self.state.holder, self.state.token = self.lock.identity, self.lock.token
        for name in sorted(self.settings.skip_clusters):
            if name not in self.state.skipped:
                self.state.skipped.append(name)
            self.state.event(f"override: cluster {name} skipped by --skip-cluster (requested by {self.lock.identity})")
        self._writer.changed()  # written when a disruptive step is about to start, or at the end
        renewer = asyncio.create_task(self._renew_forever())
        try:
            for wave in self.state.plan.waves:
                if self._stop is not None:
                    break
                await asyncio.gather(*(self._lane(lane.steps) for lane in wave.lanes))
                self.timeline.mark(wave.name.split(":")[0])
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if self._workloads is not None:
                if not self._workloads.done():
                    self._workloads.cancel()
                with contextlib.suppress(BaseException):
                    await self._workloads
            await self._writer.close()
        if self._fatal is None and self._writer.error is not None:
            self._fatal = self._writer.error
        if self._fatal is not None:
            raise self._fatal
        if self._failure is not None:
            self.state.phase, self.state.message = Phase.FAILED, str(self._failure)
        elif self._stop is not None:
            self.state.phase = Phase.PAUSED
            self.state.message = f"paused at {self.state.current}: {self._stop}; `isthmus rollout resume` continues"
        else:
            self.state.phase, self.state.message = Phase.SUCCEEDED, f"revision {self.state.revision} rolled out"
        self.state.event(f"{self.state.phase.value}: {self.state.message}")
        await self._save()
        self.timeline.mark("state written")
        self.stats.lock_renewals = self.lock.renewals
        return RolloutResult(self.state, self.reports, self.stats, timeline=self.timeline)

    async def _renew_forever(self) -> None:
        every = self.lock.duration / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.lock.renew()
            except ClusterUnreachable as exc:
                self.progress(self.lock.conn.name, f"cannot renew the lock ({exc.reason}); retrying")
            except LockLost as exc:
                self._fatal = exc
                self._stop = str(exc)
                return

    async def _lane(self, steps: Sequence[Step]) -> None:
        try:
            for step in steps:
                self._check_stop()
                await self._step(step)
        except _Stopped:
            return
        except StepFailed as exc:
            self._failure = self._failure or exc
            self._stop = self._stop or str(exc)
            rec = self.state.record(exc.step.id)
            rec.outcome, rec.finished, rec.note = Outcome.FAILED, time.time(), exc.reason
            self.state.event(str(exc))
        except (LockLost, Fenced) as exc:
            self._fatal = self._fatal or exc
            self._stop = self._stop or str(exc)

    # -- which steps roll pods -------------------------------------------------------------------

    async def _observe_workloads(self) -> dict[str, ClusterOutcome[dict[str, str | None]]]:
        """Per member, the app's live StatefulSets by name, with their content hash."""

        async def one(conn: ClusterConnection) -> dict[str, str | None]:
            live = await fetch_owned(conn, self.app, {("apps/v1", "StatefulSet", self.namespace)})
            return {ref.name: content_hash(obj) for ref, obj in live.items()}

        return await across(self._conns(), one)

    async def _live_workloads(self, cluster: str) -> dict[str, str | None] | None:
        """The StatefulSets of ``cluster`` as first asked for in this run (after the ``prepare`` wave, so
        as not to compete with it), or None when they could not be read."""
        if self._workloads is None:
            self._workloads = asyncio.create_task(self._observe_workloads())
        try:
            outcome = (await asyncio.shield(self._workloads)).get(cluster)
        except Exception:
            return None
        return outcome.value if outcome is not None else None

    async def _rolls_no_pods(self, step: Step, rec: Any) -> bool:
        """True when ``step`` changes no StatefulSet (so it needs no gates and no wait), see the module doc."""
        if step.kind is StepKind.PREPARE:
            return True
        if step.kind is StepKind.RACK and rec.outcome is Outcome.RUNNING:
            return False  # interrupted after its write: let it converge as before
        live = await self._live_workloads(step.cluster)
        if live is None:
            return False
        repair = self.settings.repair.get(step.cluster, frozenset())
        wanted = [o for o in step_objects(step, self.manifests.for_cluster(step.cluster))
                  if o.get("kind") == "StatefulSet"]
        if any(ObjectRef.of(o) in repair or o["metadata"]["name"] not in live
               or live[o["metadata"]["name"]] != content_hash(o) for o in wanted):
            return False
        if step.kind is StepKind.FINALIZE:  # pruning would delete a StatefulSet that left the spec
            return set(live) <= {o["metadata"]["name"] for o in wanted}
        return True

    # -- one step ----------------------------------------------------------------------------------

    async def _step(self, step: Step) -> None:
        rec = self.state.record(step.id)
        if rec.outcome in (Outcome.DONE, Outcome.SKIPPED):
            return
        if step.cluster in self.settings.skip_clusters:
            rec.outcome, rec.note, rec.finished = Outcome.SKIPPED, "skipped by --skip-cluster (logged override)", \
                time.time()
            self._say(step.cluster, f"{step.id}: skipped by --skip-cluster", log=True)
            await self._save()
            return
        quiet = await self._rolls_no_pods(step, rec)
        conn = self.registry[step.cluster]
        objects = self._stamped(step_objects(step, self.manifests.for_cluster(step.cluster)))
        if quiet and step.kind is StepKind.RACK:
            self._unchanged(step, rec, objects, "unchanged: nothing to roll")
            return
        if quiet and self.reapply and await self._holds_already(step, conn, objects):
            self._unchanged(step, rec, objects, "unchanged: the member holds all of it")
            return
        if not quiet:
            self._writer.write_pending()  # what is done so far is on record while the gates are asked
        while True:
            self._check_stop()
            try:
                if not quiet:
                    await self._gates(step, conn, objects)
                await self._guard(step, conn)
                if rec.outcome is not Outcome.RUNNING:
                    rec.outcome, rec.started, rec.note = Outcome.RUNNING, time.time(), ""
                    self._say(step.cluster, f"{step.id}: started", log=not quiet)
                    if not quiet:
                        await self._save()
                await self._execute(step, conn, objects, rec, quiet)
                break
            except ClusterUnreachable as exc:
                self._say(exc.cluster, f"paused in {step.id}: {exc.cluster} does not answer ({exc.reason}); "
                          "continuing when it does", log=True)
                await self._sleep()
            except (LockLost, Fenced, StepFailed, _Stopped):
                raise
            except IsthmusError as exc:
                raise StepFailed(step, str(exc)) from exc
        rec.outcome, rec.finished = Outcome.DONE, time.time()
        self._ran.add(step.id)
        self._say(step.cluster, f"{step.id}: done", log=True)
        if quiet:  # written with the next disruptive step or at the end; a rerun of it would write nothing
            self._writer.changed()
            return
        self._last_disruptive = time.monotonic()
        await self._save()

    def _unchanged(self, step: Step, rec: Any, objects: Sequence[KubeObject], note: str) -> None:
        """Done without a write: every object of the step is reported unchanged; recorded with the next write."""
        rec.outcome, rec.finished, rec.note = Outcome.DONE, time.time(), note
        self._merge(ApplyReport(step.cluster, tuple(ObjectOutcome(ObjectRef.of(o), Action.UNCHANGED)
                                                    for o in objects)))
        self._say(step.cluster, f"{step.id}: unchanged, done")
        self._writer.changed()

    def _stamped(self, objects: Sequence[KubeObject]) -> list[KubeObject]:
        out = []
        for obj in objects:
            meta = dict(obj["metadata"])
            meta["annotations"] = {**(meta.get("annotations") or {}), TOKEN_ANNOTATION: str(self.lock.token)}
            out.append({**obj, "metadata": meta})
        return out

    async def _guard(self, step: Step, conn: ClusterConnection) -> None:
        started = time.monotonic()
        if not self.lock.held:
            await self.lock.renew()  # raises LockLost when someone else took it meanwhile
        await self.lock.verify()
        early = self._fences.pop(step.cluster, None) if step.kind is StepKind.PREPARE else None
        try:
            continuous = await early if early is not None else None
        except Exception:  # it failed (or the member did not answer): fence again now, which says why
            continuous = None
        if continuous is None:
            continuous = await fence(conn, self.app, self.namespace, self.lock.token, self.lock.identity)
        if continuous and step.kind is StepKind.PREPARE:
            self._continuous.add(step.cluster)
        self.stats.guard_seconds += time.monotonic() - started

    async def _holds_already(self, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> bool:
        """A re-apply: does the member hold all of the step's objects already, so that there is nothing to write
        (not even its fence)? Found by reading: the objects' content hashes, the inventory (a ``prepare``
        adding to it, or a ``finalize`` pruning from it, writes), and for ``finalize`` the member's record of
        the revision it runs. A member that does not answer is left to the step itself (which pauses)."""
        if step.kind not in (StepKind.PREPARE, StepKind.FINALIZE) or self.settings.repair.get(step.cluster):
            return False
        try:
            if step.kind is StepKind.FINALIZE:
                return await member_runs(conn, self.app, self.namespace, objects, self.state.revision)
            found = await unapplied(conn, self.app, self.namespace, objects)
        except ClusterUnreachable:
            return False
        return not found.changed and {ObjectRef.of(o) for o in objects} <= found.inventory

    async def _applied_already(self, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> bool:
        """A quiet ``finalize`` after this run applied everything of its member (``prepare`` and every rack here
        ran, with nothing to roll): with an inventory that lists exactly the desired objects there is nothing to
        prune, so applying it all again would only re-read it. After a ``prepare`` of only what changed, the
        inventory is the baseline's, which lists the same objects."""
        mine = [s for s in self.state.plan.steps if s.cluster == step.cluster and s.kind is not StepKind.FINALIZE]
        if not all(s.id in self._ran or self.state.steps[s.id].note.startswith("unchanged") for s in mine) \
                or not any(s.id in self._ran for s in mine):
            return False
        if step.cluster in self._changed_only:
            return True
        return await read_inventory(conn, self.app, self.namespace) == {ObjectRef.of(o) for o in objects}

    async def _prepare_changed(self, step: Step, conn: ClusterConnection,
                               objects: list[KubeObject]) -> ApplyReport | None:
        """``prepare`` writing only the objects that differ from the baseline, without reading the member first;
        None when that is not provably enough (then the step applies as usual: reads, compares, writes).

        It is enough when all of these hold: the rollout carries a new revision (a re-apply of the same one
        is how drift gets corrected, and must look); this process knows the baseline's manifests; the
        member's own record says it fully runs the baseline (as this process last wrote or read it); the
        member's fence took our token against the version this process last wrote, so no other holder
        has written anything there since; and no object is added or removed (the inventory stays).
        A change by hand since then is drift, which the operator's watches report.
        """
        base = self.baseline
        cluster = step.cluster
        if base is None or base.revision == self.state.revision or cluster not in self._continuous \
                or self.settings.repair.get(cluster):
            return None
        known, record = remembered_config_map(conn, member_record_name(self.app), self.namespace)
        if not known or record is None or record.get("revision") != str(base.revision) or "target" in record:
            return None
        before = {ObjectRef.of(o): content_hash(o) for o in base.manifests.get(cluster, [])}
        if set(before) != {ObjectRef.of(o) for o in self.manifests.for_cluster(cluster)}:
            return None
        changed = [o for o in objects if before[ObjectRef.of(o)] != content_hash(o)]
        if any(o.get("kind") in ("Namespace", "CustomResourceDefinition") for o in changed):
            return None
        written = set(await apply_exactly(conn, changed, force=self.settings.force_conflicts))
        self._changed_only.add(cluster)
        self.stats.changed_only += 1
        return ApplyReport(conn.name, tuple(ObjectOutcome(ObjectRef.of(o), Action.CONFIGURED if ObjectRef.of(o)
                                                          in written else Action.UNCHANGED) for o in objects))

    async def _execute(self, step: Step, conn: ClusterConnection, objects: list[KubeObject],
                       rec: Any, quiet: bool = False) -> None:
        started = time.monotonic()

        async def apply() -> ApplyReport:
            return await apply_objects(conn, objects, app=self.app, namespace=self.namespace,
                                       force_conflicts=self.settings.force_conflicts,
                                       prune=self.settings.prune and step.kind is StepKind.FINALIZE,
                                       progress=lambda msg: self.progress(step.cluster, f"{step.id}: {msg}"))

        if step.kind is StepKind.PREPARE:  # the objects first, then the member's record of what it is getting
            report = await self._prepare_changed(step, conn, objects) or await apply()
            await record_member_revision(conn, self.app, self.namespace, target=self.state.revision)
        elif quiet and await self._applied_already(step, conn, objects):
            report = ApplyReport(conn.name, tuple(ObjectOutcome(ObjectRef.of(o), Action.UNCHANGED) for o in objects))
        else:
            report = await apply()
        report = await self._repair(conn, objects, report)
        self.stats.apply_seconds += time.monotonic() - started
        self._merge(report)
        rec.writes += sum(1 for o in report.outcomes if o.action is not Action.UNCHANGED)
        if step.kind is StepKind.RACK:
            await self._converge(step, conn)
        if step.kind is StepKind.FINALIZE:
            await record_member_revision(conn, self.app, self.namespace, revision=self.state.revision)

    async def _repair(self, conn: ClusterConnection, objects: list[KubeObject], report: ApplyReport) -> ApplyReport:
        """Write again the objects named for repair that the apply left alone (their hash matched)."""
        wanted = self.settings.repair.get(conn.name, frozenset())
        untouched = {o.ref for o in report.outcomes if o.action is Action.UNCHANGED}
        again = [o for o in objects if ObjectRef.of(o) in wanted and ObjectRef.of(o) in untouched]
        if not again:
            return report
        fixed = set(await reapply_objects(conn, again))
        return ApplyReport(report.cluster, tuple(ObjectOutcome(o.ref, Action.CONFIGURED) if o.ref in fixed else o
                                                 for o in report.outcomes))

    def _merge(self, report: ApplyReport) -> None:
        mine = self.reports.setdefault(report.cluster, {})
        for o in report.outcomes:
            if mine.get(o.ref) in (None, Action.UNCHANGED):
                mine[o.ref] = o.action

    # -- gates -----------------------------------------------------------------------------------

    async def _preflight(self, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> None:
        """While the gates wait: would the step's own write be refused (a field conflict)? Then say so now."""
        try:
            await diff_objects(conn, objects, force_conflicts=self.settings.force_conflicts)
        except Conflict as exc:
            raise StepFailed(step, f"{exc.what}: {exc.server_message}; re-run with --force-conflicts to take "
                                   "the fields over") from exc

    async def _gates(self, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> None:
        started = time.monotonic()
        unknown_for = 0.0
        shown = ""
        checked = False
        # The rack this step rewrites may itself be unhealthy (hand-scaled, broken): rewriting it is no worse.
        own = frozenset({(step.cluster, f"{self.app}-{step.datacenter}-{step.rack}")}) \
            if step.kind is StepKind.RACK else frozenset()
        try:
            while True:
                self._check_stop()
                t0 = time.monotonic()
                observation = await observe(self._conns(), self.app, self.namespace)
                ctx = GateContext(app=self.app, namespace=self.namespace, step=step, observation=observation,
                                  now=time.monotonic(), last_disruptive_done=self._last_disruptive,
                                  soak_seconds=self.settings.soak_seconds, tolerated=self.tolerated | own,
                                  connections=self._conns())
                results = await evaluate(self.settings.gates, ctx)
                self.stats.gate_evaluations += 1
                verdict = overall(results)
                if verdict is Verdict.PASS:
                    if shown:
                        self._say(step.cluster, f"{step.id}: gates pass, continuing", log=True)
                    return
                why = "; ".join(str(r) for r in results if r.verdict is not Verdict.PASS)
                if verdict is Verdict.FAIL:
                    raise StepFailed(step, f"gate refused: {why}")
                if verdict is Verdict.UNKNOWN:
                    message = f"paused before {step.id}: {why}; continuing when it answers"
                    unknown_for += time.monotonic() - t0 + self.settings.poll_interval
                else:
                    message = f"waiting before {step.id}: {why}"
                    if not checked:
                        checked = True
                        await self._preflight(step, conn, objects)
                    waited = time.monotonic() - started - unknown_for
                    if waited > self.settings.progress_deadline:
                        raise StepFailed(step, f"gates not satisfied within {self.settings.progress_deadline:g}s: "
                                               f"{why}")
                if message != shown:
                    self._say(step.cluster, message, log=verdict is Verdict.UNKNOWN or not shown)
                    shown = message
                    if verdict is Verdict.UNKNOWN:
                        self.state.message = message
                        await self._save()
                await self._sleep()
        finally:
            self.stats.gate_seconds += time.monotonic() - started

    async def _unreverted(self) -> frozenset[tuple[str, str]]:
        """Rollback: StatefulSets whose live content differs from the target (their pods may be broken)."""
        out = set()
        observation = await observe(self._conns(), self.app, self.namespace)
        for cluster, view in observation.items():
            wanted = {o["metadata"]["name"]: content_hash(o) for o in self.manifests.for_cluster(cluster)
                      if o.get("kind") == "StatefulSet"}
            for sts in view.statefulsets:
                name = sts["metadata"]["name"]
                if content_hash(sts) != wanted.get(name):
                    out.add((cluster, name))
        return frozenset(out)

    # -- a rack's convergence ----------------------------------------------------------------------

    async def _converge(self, step: Step, conn: ClusterConnection) -> None:
        name = f"{self.app}-{step.datacenter}-{step.rack}"
        started = time.monotonic()
        deadline = started + self.settings.progress_deadline
        generation = 0
        labels = {"isthmus.dev/app": self.app, DC_LABEL: step.datacenter, RACK_LABEL: step.rack}
        try:
            while True:
                self._check_stop()
                sts = await get_record(conn, "apps/v1", "StatefulSet", name, self.namespace)
                if sts is None:
                    raise StepFailed(step, f"StatefulSet {self.namespace}/{name} vanished")
                generation = generation or int(sts["metadata"].get("generation", 1))
                pods = await self._pods(conn, labels)
                health = statefulset_health(sts)
                observed = int((sts.get("status") or {}).get("observedGeneration", 0))
                if observed >= generation and health.health is Health.HEALTHY:
                    return
                # Only pods of the revision just written count against the budget, once the controller has
                # seen it; a rollback first clears pods stuck on the revision being undone.
                current = (sts.get("status") or {}).get("updateRevision")
                judged = [p for p in pods if observed >= generation
                          and (p["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL) == current]
                if self.state.kind == "rollback" and observed >= generation:
                    gone = await self._unstick(conn, sts, pods)
                    judged = [p for p in judged if p["metadata"]["name"] not in gone]
                bad = failed_pods(judged)
                if len(bad) > self.settings.failure_budget:
                    listed = ", ".join(f"{p} ({r})" for p, r in bad)
                    raise StepFailed(step, f"{len(bad)} pod(s) failed, over the failure budget of "
                                           f"{self.settings.failure_budget}: {listed}")
                if time.monotonic() > deadline:
                    raise StepFailed(step, f"rack not updated and Ready within the progress deadline of "
                                           f"{self.settings.progress_deadline:g}s: {health.reason}")
                self.progress(step.cluster, f"{step.id}: {health.reason or health.health.value}")
                await self._sleep()
        finally:
            self.stats.converge_seconds += time.monotonic() - started

    async def _pods(self, conn: ClusterConnection, labels: dict[str, str]) -> list[KubeObject]:
        return await list_objects(conn, "v1", "Pod", namespace=self.namespace, labels=labels)

    async def _unstick(self, conn: ClusterConnection, sts: KubeObject, pods: list[KubeObject]) -> set[str]:
        """A pod of a bad revision that never became Ready blocks the controller; delete it (forced rollback)."""
        target = (sts.get("status") or {}).get("updateRevision")
        gone: set[str] = set()
        if not target:
            return gone
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(REVISION_HASH_LABEL) not in (None, target) and not pod_ready(pod) \
                    and not pod["metadata"].get("deletionTimestamp"):
                self._say(conn.name, f"deleting pod {pod['metadata']['name']} stuck on a bad revision", log=True)
                await delete_record(conn, "v1", "Pod", pod["metadata"]["name"], self.namespace)
                gone.add(pod["metadata"]["name"])
        return gone

