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

from lightkube.resources.core_v1 import Pod

from ..errors import IsthmusError
from ..kube import (
    Action,
    ApiFailure,
    ApplyReport,
    ClusterConnection,
    ClusterRegistry,
    ClusterUnreachable,
    Health,
    KubeObject,
    ObjectRef,
    apply_objects,
    diff_objects,
    statefulset_health,
)
from ..kube.objects import content_hash
from ..render import Manifests
from ._objects import delete_object, get_object
from .deploying import Progress
from .gates import DEFAULT_GATES, Gate, GateContext, Verdict, evaluate, failed_pods, observe, overall, pod_ready
from .locking import TOKEN_ANNOTATION, Fenced, LeaseLock, LockLost, fence
from .progress import Outcome, Phase, ProgressStore, RolloutState
from .revisions import record_member_revision
from .steps import DC_LABEL, RACK_LABEL, Step, StepKind, step_objects

__all__ = ["Engine", "EngineSettings", "EngineStats", "RolloutResult", "StepFailed"]

REVISION_HASH_LABEL = "controller-revision-hash"


class StepFailed(IsthmusError):
    def __init__(self, step: Step, reason: str) -> None:
        self.step, self.reason = step, reason
        super().__init__(f"step {step.id} in {step.cluster} failed: {reason}")


class _Stopped(Exception):
    """Internal: another lane failed or the rollout timed out; leave at the next safe point."""


def _quiet(_cluster: str, _message: str) -> None:
    return None


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

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in vars(self).items()}


@dataclass
class RolloutResult:
    state: RolloutState
    reports: dict[str, dict[ObjectRef, Action]] = field(default_factory=dict)
    stats: EngineStats = field(default_factory=EngineStats)
    notes: list[str] = field(default_factory=list)

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


class Engine:
    """Runs one plan once (until done, failed, paused, or the lock is lost)."""

    def __init__(self, *, app: str, namespace: str, registry: ClusterRegistry, members: Sequence[str],
                 manifests: Manifests, state: RolloutState, store: ProgressStore, lock: LeaseLock,
                 settings: EngineSettings, progress: Progress = _quiet) -> None:
        self.app, self.namespace = app, namespace
        self.registry = registry
        self.members = [m for m in members if m not in settings.skip_clusters]
        self.manifests = manifests
        self.state, self.store, self.lock = state, store, lock
        self.settings = settings
        self.progress = progress
        self.stats = EngineStats()
        self.reports: dict[str, dict[ObjectRef, Action]] = {}
        self.tolerated: frozenset[tuple[str, str]] = frozenset()
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

    async def _save(self) -> None:
        started = time.monotonic()
        while True:
            try:
                await self.store.save(self.state)
                break
            except ClusterUnreachable as exc:
                self.progress(self.store.conn.name, f"paused: cannot write rollout state ({exc.reason}); retrying")
                await self._sleep()
        self.stats.state_writes += 1
        self.stats.state_seconds += time.monotonic() - started

    def _check_stop(self) -> None:
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
        await self._save()
        renewer = asyncio.create_task(self._renew_forever())
        try:
            for wave in self.state.plan.waves:
                if self._stop is not None:
                    break
                await asyncio.gather(*(self._lane(lane.steps) for lane in wave.lanes))
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
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
        self.stats.lock_renewals = self.lock.renewals
        return RolloutResult(self.state, self.reports, self.stats)

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
        conn = self.registry[step.cluster]
        objects = self._stamped(step_objects(step, self.manifests.for_cluster(step.cluster)))
        while True:
            self._check_stop()
            try:
                if step.disruptive:
                    await self._gates(step, conn, objects)
                await self._guard(step, conn)
                if rec.outcome is not Outcome.RUNNING:
                    rec.outcome, rec.started, rec.note = Outcome.RUNNING, time.time(), ""
                    self._say(step.cluster, f"{step.id}: started", log=True)
                    await self._save()
                await self._execute(step, conn, objects, rec)
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
        if step.disruptive:
            self._last_disruptive = time.monotonic()
        self._say(step.cluster, f"{step.id}: done", log=True)
        await self._save()

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
        await fence(conn, self.app, self.namespace, self.lock.token, self.lock.identity)
        self.stats.guard_seconds += time.monotonic() - started

    async def _execute(self, step: Step, conn: ClusterConnection, objects: list[KubeObject],
                       rec: Any) -> None:
        if step.kind is StepKind.PREPARE:
            await record_member_revision(conn, self.app, self.namespace, target=self.state.revision)
        started = time.monotonic()
        report = await apply_objects(conn, objects, app=self.app, namespace=self.namespace,
                                     force_conflicts=self.settings.force_conflicts,
                                     prune=self.settings.prune and step.kind is StepKind.FINALIZE,
                                     progress=lambda msg: self.progress(step.cluster, f"{step.id}: {msg}"))
        self.stats.apply_seconds += time.monotonic() - started
        self._merge(report)
        rec.writes += sum(1 for o in report.outcomes if o.action is not Action.UNCHANGED)
        if step.kind is StepKind.RACK:
            await self._converge(step, conn)
        if step.kind is StepKind.FINALIZE:
            await record_member_revision(conn, self.app, self.namespace, revision=self.state.revision)

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
        except ApiFailure as exc:
            if exc.status != 409:
                raise
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
                sts = await get_object(conn, "apps/v1", "StatefulSet", name, self.namespace)
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
        async def do(client: Any) -> list[KubeObject]:
            return [dict(p.to_dict()) async for p in client.list(Pod, namespace=self.namespace, labels=labels)]

        return await conn.call("list", f"list Pod in {self.namespace}", do)

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
                await delete_object(conn, "v1", "Pod", pod["metadata"]["name"], self.namespace)
                gone.add(pod["metadata"]["name"])
        return gone
