"""Executing a rollout plan: each step decided, then skipped, recorded, gated, applied or converged.

The engine walks a :class:`~.steps.RolloutPlan` wave by wave (lanes of a wave concurrently, steps of a
lane in order). For each step, a pure decision (:func:`.deciding.decide`, from the step, its
record, what the member holds and the settings) says what to do:

- ``skip`` / ``unchanged``: recorded, nothing written;
- ``apply``: guard, then write (a step that rolls no pods: no gates, no wait);
- ``gate`` / ``converge``: the gates first (:mod:`.gating`), then guard and write, a rack then
  waits for its pods (:mod:`.converging`).

A ``keyspace`` step writes no objects: it is decided after asking the ring whether it has the declared
replication (``settings.keyspaces``, :mod:`.keyspacing`), and once the gates pass it runs there. Nor do the
steps of a datacenter added or removed (``settings.datacenters``, :mod:`.datacenters`). A ``scale``
step (``settings.scaling``, :mod:`.scaling`) runs once the gates pass, and sets replicas node by node itself.

The guard: our lease is still ours (renewed in the background every third of its duration) and
the member's fence accepts our token (:func:`~.locking.fence`); the objects are stamped with the
token. State writes are grouped (:mod:`.recording`): a disruptive step is on record as Running
before it writes and as Done after; a quiet one goes out with the next write.

What a member holds is read as little as possible (:mod:`.memberview`): after the ``prepare``
wave, the app's live StatefulSets of every member (once, concurrently), which is enough to tell
a rack that rolls no pods; a re-apply reads a member only when it may hold a whole step already.
How a step's objects are written, and the two shortcuts that skip reading first (``prepare`` of
only what changed since a :class:`Baseline`; a quiet ``finalize`` with nothing to prune), are
:mod:`.writing`'s.

A member that stops answering mid-step pauses that step, which is re-run when it answers (an
idempotent apply). Failure stops every lane; what happens next (pause or rollback) is decided by
the caller, :mod:`.rolling`. All time comes from the injected :class:`~.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

from ..errors import IsthmusError
from ..kube import (
    ApplyAction,
    ApplyReport,
    ClusterConnection,
    ClusterOutcome,
    ClusterRegistry,
    ClusterUnreachable,
    KubeObject,
    ObjectOutcome,
    ObjectRef,
    across,
)
from .clock import SYSTEM, Clock
from .converging import Convergence
from .deciding import Choice, StepDecision, StepSettings, decide
from .deploying import Progress
from .gates import observe
from .gating import Gatekeeper, unreverted
from .locking import TOKEN_ANNOTATION, Fenced, LeaseLock, LockLost, fence, fence_unchanged_since_us
from .memberrevisions import record_member_revision
from .memberview import MemberView, read_member, read_workloads
from .progress import Outcome, ProgressStore, RolloutPhase, RolloutState, StepRecord
from .recording import StateWriter
from .releasing import run_release
from .results import EngineStats, RolloutResult, StepFailed, Timeline
from .steps import DC_LABEL, Step, StepKind, step_objects
from .target import Baseline, EngineSettings, Target
from .writing import StepWriter

__all__ = ["Baseline", "EarlyFences", "Engine", "EngineSettings", "Target"]


class _Stopped(Exception):
    """Internal: another lane failed or the rollout timed out; leave at the next safe point."""


def _quiet(_cluster: str, _message: str) -> None:
    return None


class EarlyFences:
    """Fences written to members with our token (under our lock) before the run starts, while the revision
    is recorded, so that the first step there need not wait for one.

    ``unchanged``: members whose fence provably still holds what this process last wrote there
    (:func:`~.locking.fence_unchanged_since_us`, judged before the new fences went out). Their
    ``prepare`` writes without waiting for the new fence, which is awaited after the write instead
    (a far member then costs one round trip before its objects are in, not two)."""

    def __init__(self, tasks: Mapping[str, asyncio.Task[bool]] | None = None,
                 unchanged: frozenset[str] = frozenset()) -> None:
        self._tasks = dict(tasks or {})
        self.unchanged = unchanged

    @classmethod
    def start(cls, registry: ClusterRegistry, members: Sequence[str], *, app: str, namespace: str,
              lock: LeaseLock) -> EarlyFences:
        unchanged = frozenset(m for m in members if fence_unchanged_since_us(registry[m], app, namespace, lock))
        return cls({m: asyncio.create_task(fence(registry[m], app, namespace, lock.token, lock.identity))
                    for m in members}, unchanged)

    def take(self, cluster: str) -> asyncio.Task[bool] | None:
        return self._tasks.pop(cluster, None)

    async def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


class Engine:
    """Runs one plan once (until done, failed, paused, or the lock is lost)."""

    def __init__(self, target: Target, state: RolloutState, *, registry: ClusterRegistry, store: ProgressStore,
                 lock: LeaseLock, settings: EngineSettings, progress: Progress = _quiet, clock: Clock = SYSTEM,
                 timeline: Timeline | None = None, fences: EarlyFences | None = None) -> None:
        self.target, self.app, self.namespace = target, target.app, target.namespace
        self.manifests = target.manifests
        self.registry = registry
        self.members = [m for m in target.members if m not in settings.skip_clusters]
        self.state, self.store, self.lock = state, store, lock
        self.settings = settings
        self.progress = progress
        self.clock = clock
        self.stats = EngineStats()
        self.timeline = timeline or Timeline(clock)
        self.reports: dict[str, dict[ObjectRef, ApplyAction]] = {}
        self._writer = StateWriter(store, state, progress, self.stats, settings.poll_interval, clock)
        self._gatekeeper = Gatekeeper(
            app=self.app, namespace=self.namespace, gates=settings.gates, poll_interval=settings.poll_interval,
            progress_deadline=settings.progress_deadline, soak_seconds=settings.soak_seconds,
            force_conflicts=settings.force_conflicts, clock=clock, stats=self.stats, say=self._tell,
            paused=self._paused, check_stop=self._check_stop)
        self._convergence = Convergence(
            app=self.app, namespace=self.namespace, poll_interval=settings.poll_interval,
            progress_deadline=settings.progress_deadline, failure_budget=settings.failure_budget,
            rollback=state.kind == "rollback", clock=clock, stats=self.stats, say=self._tell,
            check_stop=self._check_stop)
        self._decide = StepSettings(skip_clusters=settings.skip_clusters, repair=settings.repair,
                                    reapply=settings.reapply, revision=state.revision)
        self._workloads: asyncio.Task[dict[str, ClusterOutcome[MemberView]]] | None = None
        self._ran: set[str] = set()
        """Steps executed (not merely found Done) by this run."""
        self._fences = fences or EarlyFences()
        self._continuous: set[str] = set()
        """Members whose fence took our token against the version this process last wrote: no other holder
        has written to them since."""
        self._late: dict[str, asyncio.Task[bool]] = {}
        """Early fences of members written before their fence was in (:attr:`EarlyFences.unchanged`): awaited
        right after the write."""
        self._objects = StepWriter(target=target, settings=settings, revision=state.revision,
                                           stats=self.stats, progress=progress)
        self._stop: str | None = None
        self._failure: StepFailed | None = None
        self._fatal: BaseException | None = None
        self._started = clock.monotonic()

    def _conns(self) -> Mapping[str, ClusterConnection]:
        return {m: self.registry[m] for m in self.members}

    def _say(self, cluster: str, message: str, *, log: bool = False) -> None:
        self.progress(cluster, message)
        if log:
            self.state.event(f"{cluster}: {message}")

    def _tell(self, cluster: str, message: str, log: bool) -> None:
        self._say(cluster, message, log=log)

    async def _paused(self, message: str) -> None:
        self.state.message = message
        await self._writer.save()

    def _check_stop(self) -> None:
        if self._writer.error is not None:
            raise self._writer.error
        if self._stop is not None:
            raise _Stopped(self._stop)
        if self.settings.timeout is not None and self.clock.monotonic() - self._started > self.settings.timeout:
            self._stop = f"not finished within {self.settings.timeout:g}s"
            raise _Stopped(self._stop)

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> RolloutResult:
        if self.state.kind == "rollback":
            wanted = {c: self.manifests.for_cluster(c) for c in self.members}
            self._gatekeeper.tolerated = unreverted(await observe(self._conns(), self.app, self.namespace), wanted)
        self.state.phase, self.state.message = RolloutPhase.RUNNING, ""
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
            for late in self._late.values():  # members left unconfirmed by a stop: their fence is not needed now
                late.cancel()
            await asyncio.gather(*self._late.values(), return_exceptions=True)
            self._late.clear()
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
            self.state.phase, self.state.message = RolloutPhase.FAILED, str(self._failure)
        elif self._stop is not None:
            self.state.phase = RolloutPhase.PAUSED
            self.state.message = f"paused at {self.state.current}: {self._stop}; `isthmus rollout resume` continues"
        else:
            self.state.phase, self.state.message = RolloutPhase.SUCCEEDED, f"revision {self.state.revision} rolled out"
        self.state.event(f"{self.state.phase.value}: {self.state.message}")
        await self._writer.save()
        self.timeline.mark("state written")
        self.stats.lock_renewals = self.lock.renewals
        return RolloutResult(self.state, self.reports, self.stats, timeline=self.timeline)

    async def _renew_forever(self) -> None:
        every = self.lock.duration / 3
        while True:
            await self.clock.sleep(every)
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
            rec.outcome, rec.finished, rec.note = Outcome.FAILED, self.clock.wall(), exc.reason
            self.state.event(str(exc))
        except (LockLost, Fenced) as exc:
            self._fatal = self._fatal or exc
            self._stop = self._stop or str(exc)

    # -- what a member holds ---------------------------------------------------------------------

    async def _view(self, step: Step) -> MemberView:
        """The member as read so far in this run: after the ``prepare`` wave (so as not to compete with it),
        its live StatefulSets, read once for every member; an empty view when they could not be read."""
        if self._workloads is None:
            self._workloads = asyncio.create_task(
                across(self._conns(), lambda conn: read_workloads(conn, self.app, self.namespace)))
        try:
            outcome = (await asyncio.shield(self._workloads)).get(step.cluster)
        except Exception:
            return MemberView(step.cluster)
        return outcome.value if outcome is not None and outcome.value is not None else MemberView(step.cluster)

    async def _decision(self, step: Step, rec: StepRecord, objects: list[KubeObject]) -> StepDecision:
        view = MemberView(step.cluster)
        decision = decide(step, rec, view, self._decide, objects)
        if decision.look and step.kind is StepKind.KEYSPACE:  # does the ring have the replication already?
            matches = await self.settings.keyspaces.matches(step) if self.settings.keyspaces is not None else None
            return decide(step, rec, MemberView(step.cluster, keyspace_matches=matches), self._decide, objects)
        if decision.look and step.kind is StepKind.RELEASE:  # does the member hold the release already?
            try:
                view = view.merged(await read_member(self.registry[step.cluster], self.app, self.namespace, objects))
            except ClusterUnreachable:
                return StepDecision(Choice.GATE)
            return decide(step, rec, view, self._decide, objects)
        if decision.look and step.kind is not StepKind.PREPARE:  # does it roll pods? The StatefulSets tell
            view = await self._view(step)
            decision = decide(step, rec, view, self._decide, objects)
        if decision.look and decision.choice is Choice.APPLY:  # a re-apply: does it hold it all already?
            # A member that does not answer is left to the step itself (which pauses).
            try:
                view = view.merged(await read_member(self.registry[step.cluster], self.app, self.namespace, objects,
                                                     record=step.kind is StepKind.FINALIZE))
            except ClusterUnreachable:
                return StepDecision(Choice.APPLY)
            decision = decide(step, rec, view, self._decide, objects)
        return decision

    # -- one step ----------------------------------------------------------------------------------

    async def _step(self, step: Step) -> None:
        rec = self.state.record(step.id)
        objects = self._stamped(step_objects(step, self.manifests.for_cluster(step.cluster)))
        decision = await self._decision(step, rec, objects)
        if decision.choice is Choice.SKIP:
            if decision.note:  # a member skipped by override (else: done already)
                rec.outcome, rec.note, rec.finished = Outcome.SKIPPED, decision.note, self.clock.wall()
                self._say(step.cluster, f"{step.id}: skipped by --skip-cluster", log=True)
                await self._writer.save()
            return
        if decision.choice is Choice.UNCHANGED:
            self._unchanged(step, rec, objects, decision.note)
            return
        quiet = not decision.choice.disruptive
        conn = self.registry[step.cluster]
        if not quiet:
            self._writer.write_pending()  # what is done so far is on record while the gates are asked
        interrupted = rec.outcome is Outcome.RUNNING
        while True:
            self._check_stop()
            try:
                if not quiet:
                    await self._gatekeeper.wait(step, conn, objects, self._conns())
                await self._guard(step, conn)
                if rec.outcome is not Outcome.RUNNING:
                    rec.outcome, rec.started, rec.note = Outcome.RUNNING, self.clock.wall(), ""
                    self._say(step.cluster, f"{step.id}: started", log=not quiet)
                    if not quiet:
                        await self._writer.save()
                if decision.choice is Choice.CONVERGE and step.kind is StepKind.RACK and self.settings.racks:
                    await self._roll_rack(step, conn, objects, rec)  # a rack at once, or a node at a time
                else:
                    await self._execute(step, conn, objects, rec, quiet, interrupted=interrupted)
                    await self._confirm_late_fence(step, conn, objects, rec, quiet)
                    if decision.choice is Choice.CONVERGE:
                        await self._convergence.wait(step, conn)
                if step.kind is StepKind.FINALIZE:
                    await record_member_revision(conn, self.app, self.namespace, revision=self.state.revision)
                break
            except ClusterUnreachable as exc:
                interrupted = interrupted or rec.outcome is Outcome.RUNNING
                self._say(exc.cluster, f"paused in {step.id}: {exc.cluster} does not answer ({exc.reason}); "
                          "continuing when it does", log=True)
                await self.clock.sleep(self.settings.poll_interval)
            except (LockLost, Fenced, StepFailed, _Stopped):
                raise
            except IsthmusError as exc:
                raise StepFailed(step, str(exc)) from exc
        rec.outcome, rec.finished = Outcome.DONE, self.clock.wall()
        self._ran.add(step.id)
        self._say(step.cluster, f"{step.id}: done", log=True)
        if quiet:  # written with the next disruptive step or at the end; a rerun of it would write nothing
            self._writer.changed()
            return
        self._gatekeeper.last_disruptive = self.clock.monotonic()
        await self._writer.save()

    async def _roll_rack(self, step: Step, conn: ClusterConnection, objects: list[KubeObject],
                         rec: StepRecord) -> None:
        assert self.settings.racks is not None

        async def write(these: list[KubeObject]) -> None:
            await self._execute(step, conn, these, rec, False)

        siblings = self._stamped([o for o in self.manifests.for_cluster(step.cluster) if o.get("kind") == "StatefulSet"
                                  and (o["metadata"].get("labels") or {}).get(DC_LABEL) == step.datacenter])
        note = await self.settings.racks.roll(step, conn, objects, write=write,
                                              converge=lambda: self._convergence.wait(step, conn),
                                              say=lambda message: self._say(step.cluster, f"{step.id}: {message}",
                                                                            log=True),
                                              siblings=siblings)
        rec.note = note or rec.note

    def _unchanged(self, step: Step, rec: StepRecord, objects: Sequence[KubeObject], note: str) -> None:
        """Done without a write: every object of the step is reported unchanged; recorded with the next write."""
        rec.outcome, rec.finished, rec.note = Outcome.DONE, self.clock.wall(), note
        self._merge(ApplyReport(step.cluster, tuple(ObjectOutcome(ObjectRef.of(o), ApplyAction.UNCHANGED)
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
        started = self.clock.monotonic()
        if not self.lock.held:
            await self.lock.renew()  # raises LockLost when someone else took it meanwhile
        await self.lock.verify()
        early = self._fences.take(step.cluster) if step.kind is StepKind.PREPARE else None
        if early is not None and step.cluster in self._fences.unchanged:
            self._late[step.cluster] = early  # written first, fenced right after: see _confirm_late_fence
            self._continuous.add(step.cluster)
            self.stats.guard_seconds += self.clock.monotonic() - started
            return
        try:
            continuous = await early if early is not None else None
        except Exception:  # it failed (or the member did not answer): fence again now, which says why
            continuous = None
        if continuous is None:
            continuous = await fence(conn, self.app, self.namespace, self.lock.token, self.lock.identity)
        if continuous and step.kind is StepKind.PREPARE:
            self._continuous.add(step.cluster)
        self.stats.guard_seconds += self.clock.monotonic() - started

    async def _confirm_late_fence(self, step: Step, conn: ClusterConnection, objects: list[KubeObject],
                                  rec: StepRecord, quiet: bool) -> None:
        """Await the fence of a member written before it (see :class:`EarlyFences`). :class:`Fenced` if a newer
        holder is there after all; if the fence was not as this process left it (someone wrote it meanwhile),
        the member is no longer trusted to hold only what we wrote, and the step is written again, reading
        first."""
        late = self._late.pop(step.cluster, None)
        if late is None:
            return
        try:
            continuous = await late
        except Fenced:
            raise
        except Exception:  # it failed (or the member did not answer): fence again now, which says why
            continuous = await fence(conn, self.app, self.namespace, self.lock.token, self.lock.identity)
        if not continuous:
            self._continuous.discard(step.cluster)
            self._say(step.cluster, f"{step.id}: its fence had changed since our last write; writing again, "
                      "reading first", log=True)
            await self._execute(step, conn, objects, rec, quiet)

    # -- writing -----------------------------------------------------------------------------------

    async def _execute(self, step: Step, conn: ClusterConnection, objects: list[KubeObject], rec: StepRecord,
                       quiet: bool, *, interrupted: bool = False) -> None:
        started = self.clock.monotonic()
        if step.kind in (StepKind.KEYSPACE, StepKind.SCALE):  # CQL or nodetool (.keyspacing, .scaling), no objects
            work = self.settings.keyspaces if step.kind is StepKind.KEYSPACE else self.settings.scaling
            if work is None:
                raise StepFailed(step, f"this run has no way to run the ring's {step.kind.value} steps")
            rec.note, wrote = await work.apply(step, interrupted=interrupted)
            rec.writes += 1 if wrote else 0
            self._say(step.cluster, f"{step.id}: {rec.note}", log=True)
            self.stats.apply_seconds += self.clock.monotonic() - started
            return
        if step.kind.datacenter_op:  # nodetool and CQL to the ring (see .datacenters), no objects
            if self.settings.datacenters is None:
                raise StepFailed(step, "this run has no way to reach the ring's datacenters")
            rec.note = await self.settings.datacenters.run(step, token=self.lock.token, interrupted=interrupted)
            self._say(step.cluster, f"{step.id}: {rec.note}", log=True)
            self.stats.apply_seconds += self.clock.monotonic() - started
            return
        mine = [s for s in self.state.plan.steps if s.cluster == step.cluster
                and s.kind not in (StepKind.FINALIZE, StepKind.KEYSPACE, StepKind.SCALE) and not s.kind.datacenter_op]
        ran_all = all(s.id in self._ran or self.state.steps[s.id].note.startswith("unchanged") for s in mine) \
            and any(s.id in self._ran for s in mine)
        if step.kind is StepKind.RELEASE:  # a chart in one member: hooks, objects, wait (see .releasing)
            report = await run_release(self, step, conn, objects)
        else:
            if step.kind is StepKind.RACK and self.settings.scaling is not None \
                    and await self._may_lower(step, objects):  # never drop a ring's nodes here
                await self.settings.scaling.check_rack(step, objects)
            report = await self._objects.write(step, conn, objects, quiet=quiet,
                                               continuous=step.cluster in self._continuous, ran_all=ran_all)
        self.stats.apply_seconds += self.clock.monotonic() - started
        self._merge(report)
        rec.writes += sum(1 for o in report.outcomes if o.action is not ApplyAction.UNCHANGED)

    async def _may_lower(self, step: Step, objects: Sequence[KubeObject]) -> bool:
        """Whether writing ``objects`` may lower a live StatefulSet's replicas, as the member was read in this run
        (not read: it may); only then does the rack step ask the member afresh."""
        view = await self._view(step)
        if view.live is None:
            return True
        for obj in objects:
            if obj.get("kind") == "StatefulSet":
                live = view.live.get(ObjectRef.of(obj))
                if live is not None and int((live.get("spec") or {}).get("replicas", 1)) > \
                        int((obj.get("spec") or {}).get("replicas", 1)):
                    return True
        return False

    def _merge(self, report: ApplyReport) -> None:
        mine = self.reports.setdefault(report.cluster, {})
        for o in report.outcomes:
            if mine.get(o.ref) in (None, ApplyAction.UNCHANGED):
                mine[o.ref] = o.action
