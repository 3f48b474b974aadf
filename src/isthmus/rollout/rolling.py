"""The rollout flows the CLI and the operator call: apply a spec, resume, and roll back on failure.

Every flow takes the app's lock first (see :mod:`.locking`), works only while it holds it, and
releases it at the end. ``apply``: check the strategy and that every member serves the custom
kinds of its objects (:mod:`.requirements`; both before any write), record the revision,
plan, run the engine; when a step fails and the strategy says ``onFailure: rollback``, roll the
previous revision forward through the same gates, in reverse wave order. ``resume``: continue
the persisted rollout from where it stopped, from the stored revision's manifests.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..kube import ClusterRegistry, KubeObject, Reach
from ..render import SUPERUSER_PASSWORD_PLACEHOLDER, Manifests, render
from ..render.charts import mask_secrets
from ..spec import CassandraCluster, ChartRelease, Fleet
from .datacenterplan import BadDatacenterChange, DatacenterChange, choose_source, datacenter_change, removal_problems
from .datacenters import RingDatacenters
from .datacenterstate import NodeProgressStore
from .dbgate import DatabaseGate, database_pods, has_runtime, ring_reports
from .deploying import Progress
from .engine import Baseline, EarlyFences, Engine
from .gates import observe
from .identities import record_identities
from .keyspacing import RingKeyspaces
from .locking import LeaseLock
from .progress import ProgressStore, RolloutPhase, RolloutState
from .rackrolling import RackRolling
from .releasing import restore_secrets
from .requirements import require_custom_kinds
from .results import RolloutResult, Timeline
from .revisions import Revision, RevisionStore, stage
from .scaleplan import ScalePlan
from .scaling import RingScaling, read_scaling
from .secrets import superuser_password
from .settled import settled_state, unchanged_reports
from .steps import StepKind, check_strategy, datacenter_waves, plan_rollout
from .superuser import SuperuserError, ensure_superuser
from .target import EngineSettings, RolloutOptions, Target

__all__ = ["NothingToResume", "RolloutOptions", "apply_rollout", "fill_password", "resume_rollout"]


class NothingToResume(UserError):
    pass


class UnknownCluster(UserError):
    pass


def _quiet(_cluster: str, _message: str) -> None:
    return None


def fill_password(manifests: Manifests, password: str) -> Manifests:
    """The stored (placeholder) manifests with the real superuser password put back into Secrets."""

    def fill(obj: KubeObject) -> KubeObject:
        if obj.get("kind") != "Secret" or not obj.get("stringData"):
            return obj
        out = copy.deepcopy(obj)
        out["stringData"] = {k: (password if v == SUPERUSER_PASSWORD_PLACEHOLDER else v)
                             for k, v in out["stringData"].items()}
        return out

    return Manifests({c: tuple(fill(o) for o in manifests.for_cluster(c)) for c in manifests.clusters})


AnyApp = CassandraCluster | ChartRelease
"""The kinds a rollout carries: a Cassandra ring, or a Helm chart released across clusters."""


def app_of(revision: Revision) -> AnyApp:
    if revision.spec.get("kind") == "ChartRelease":
        return ChartRelease.model_validate(revision.spec)
    return CassandraCluster.model_validate(revision.spec)


async def _password(registry: ClusterRegistry, fleet: Fleet, app: AnyApp) -> str:
    """The Cassandra superuser password; a ChartRelease has none (its Secrets are the chart's)."""
    return "" if isinstance(app, ChartRelease) else await superuser_password(registry, fleet, app)


async def _stored(registry: ClusterRegistry, app: AnyApp, revision: Revision, password: str) -> Manifests:
    """A stored revision's manifests with its secrets put back: the password, or a chart's Secrets from the members."""
    if isinstance(app, ChartRelease):
        return await restore_secrets(revision.to_manifests(), registry, app)
    return fill_password(revision.to_manifests(), password)


def _spec_doc(app: AnyApp) -> dict[str, Any]:
    return app.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_skips(app: AnyApp, skips: frozenset[str]) -> None:
    unknown = sorted(skips - set(app.member_clusters()))
    if unknown:
        raise UnknownCluster(f"--skip-cluster {unknown[0]}: not a member of app {app.metadata.name} "
                             f"(members: {', '.join(app.member_clusters())})")


@dataclass
class _Session:
    app: AnyApp
    fleet: Fleet
    registry: ClusterRegistry
    options: RolloutOptions
    progress: Progress
    lock: LeaseLock
    revisions: RevisionStore
    states: ProgressStore

    @classmethod
    def open(cls, app: AnyApp, fleet: Fleet, registry: ClusterRegistry, options: RolloutOptions,
             progress: Progress) -> _Session:
        control = registry[fleet.spec.control_plane]
        name = app.metadata.name
        return cls(app, fleet, registry, options, progress,
                   LeaseLock(control, name, options.identity, duration=options.lock_duration),
                   RevisionStore(control, name), ProgressStore(control, name))

    async def run(self, app: AnyApp, manifests: Manifests, state: RolloutState,
                  timeline: Timeline | None = None, baseline: Baseline | None = None,
                  fences: EarlyFences | None = None, *, reapply: bool = False, password: str = "") -> RolloutResult:
        gate = _database_gate(app) if isinstance(app, CassandraCluster) else None
        database = (gate,) if gate is not None else ()
        keyspaces = datacenters = None
        if isinstance(app, CassandraCluster):
            rebuilt = frozenset(s.datacenter for s in state.plan.steps if s.kind is StepKind.REBUILD)
            cql = RingKeyspaces(self.registry, app, password, rebuilt=rebuilt)
            keyspaces = cql if app.spec.keyspaces else None
            if any(s.kind.datacenter_op for s in state.plan.steps):
                store = NodeProgressStore(self.lock.conn, app.metadata.name)
                datacenters = RingDatacenters(self.registry, app, cql, store, state.revision, say=self.progress,
                                              clock=self.options.clock)
        scaling = RingScaling(self.registry, app, self.progress, self.options.clock,
                              poll_interval=max(self.options.poll_interval, 2.0)) \
            if isinstance(app, CassandraCluster) else None
        racks = RackRolling(app, gate, self.options.clock, self.options.poll_interval) \
            if isinstance(app, CassandraCluster) and gate is not None else None
        settings = EngineSettings(options=self.options, strategy=app.spec.rollout, app_gates=database,
                                  reapply=reapply, keyspaces=keyspaces, scaling=scaling, racks=racks,
                                  datacenters=datacenters)
        target = Target(app=app.metadata.name, namespace=app.namespace, members=app.member_clusters(),
                        manifests=manifests, baseline=baseline)
        engine = Engine(target, state, registry=self.registry, store=self.states, lock=self.lock,
                        settings=settings, progress=self.progress, clock=self.options.clock, timeline=timeline,
                        fences=fences)
        return await engine.run()

    async def roll_back(self, target: int, *, password: str, reason: str) -> RolloutResult:
        """Carry revision ``target`` forward (recorded as a new revision) in reverse wave order."""
        revision = await self.revisions.get(target)
        old_app = app_of(revision)
        info, _ = await self.revisions.record(spec=revision.spec, manifests=revision.to_manifests(),
                                              author=self.lock.identity, origin=f"rollback to {target}")
        scaling = await _scaling(self.registry, old_app)
        state = RolloutState.new(app=old_app.metadata.name, kind="rollback", revision=info.number,
                                 previous=None, plan=plan_rollout(old_app, reverse=True, scaling=scaling))
        state.event(f"rollback to revision {target} (as revision {info.number}) by {self.lock.identity}: {reason}")
        return await self.run(old_app, await _stored(self.registry, old_app, revision, password), state,
                              password=password)


async def _scaling(registry: ClusterRegistry, app: AnyApp) -> dict[str, ScalePlan]:
    """The datacenters whose size changes (a scale-down the ring cannot take is refused: BadScale, exit 2)."""
    return await read_scaling(registry, app) if isinstance(app, CassandraCluster) else {}


async def _no_scaling() -> dict[str, ScalePlan]:
    return {}


def _sizes(spec: Mapping[str, Any]) -> dict[str, int]:
    return {dc.get("name", ""): dc.get("size", 0) for dc in (spec.get("spec") or {}).get("datacenters") or []}


def _sizes_as_last_rolled_out(revisions: RevisionStore, states: ProgressStore, app: AnyApp) -> bool:
    """Whether this process last saw the app's latest revision rolled out to the end, with the same datacenter
    sizes as ``app``: then no datacenter changes size and the members need not be asked (the operator's case:
    one round trip to the farthest member saved per change). A hint: a StatefulSet scaled by hand meanwhile is
    caught when its rack is written, which never lowers a ring's replicas (see :mod:`.deciding`)."""
    if not isinstance(app, CassandraCluster):
        return True
    latest, state = revisions.remembered_latest(), states.remembered()
    if latest is None or state is None or state.phase is not RolloutPhase.SUCCEEDED or state.revision != latest[0]:
        return False
    return _sizes(latest[1]) == _sizes(_spec_doc(app))


def _database_gate(app: CassandraCluster) -> DatabaseGate:
    """The database's own view joins the Kubernetes gates (:mod:`.dbgate`), knowing where each datacenter runs."""
    return DatabaseGate({dc.name: dc.cluster for dc in app.spec.datacenters})


async def _superuser(registry: ClusterRegistry, app: AnyApp, password: str, result: RolloutResult,
                     states: ProgressStore) -> None:
    """Once the ring answers, the Secret's role is its superuser and the default login is gone (:mod:`.superuser`).

    Runs under the lock, after a rollout that succeeded; a failure is a note on the result, never the
    password, and is kept in the rollout's state, so the next apply tries again even when nothing changed.
    """
    if not result.ok or isinstance(app, ChartRelease):
        return
    pending = result.state.superuser_pending
    try:
        outcome = await ensure_superuser(registry, app, password)
    except SuperuserError as exc:
        result.notes.append(f"the superuser is not set up yet (the next apply tries again): {exc}")
        result.state.superuser_pending = True
    else:
        result.state.superuser_pending = False
        if outcome is not None and (outcome.created or outcome.default_disabled):
            result.notes.append(outcome.note())
    if result.state.superuser_pending != pending:
        await states.save(result.state)


async def _identities(registry: ClusterRegistry, app: AnyApp, result: RolloutResult, skipped: frozenset[str]) -> None:
    """After a rollout that succeeded: each node's address as the ring sees it, for a replacement of the node
    (:mod:`.identities`). Members skipped by this rollout are not asked; a failure is a note."""
    if not result.ok or isinstance(app, ChartRelease):
        return
    members = {c: registry[c] for c in app.member_clusters() if c not in skipped}
    result.notes.extend(await record_identities(members, app))


async def running_spec(revisions: RevisionStore, digest: str) -> CassandraCluster | None:
    """The spec of the newest recorded revision other than the one of ``digest``: what the ring runs (or last
    tried to run) before this change; None for a first deploy. Reads only."""
    for info in reversed(await revisions.entries()):
        if info.digest != digest:
            before = app_of(await revisions.fetch(info))
            return before if isinstance(before, CassandraCluster) else None
    return None


async def check_datacenter_change(app: CassandraCluster, fleet: Fleet, registry: ClusterRegistry,
                                  before: CassandraCluster | None) -> DatacenterChange:
    """The datacenters ``app`` adds to and removes from the ring running ``before``, with each added one's rebuild
    source; refused (:class:`~.datacenterplan.BadDatacenterChange`, exit code 2) before anything is written when a
    source is Unknown or missing, or a removed datacenter still holds replicas of a keyspace the change does not
    declare without it (the ring is asked: ``nodetool describecluster`` through ``pods/exec``)."""
    change = datacenter_change(before, app)
    if not change:
        return change
    missing = sorted({r.cluster for r in change.removed if r.cluster not in registry})
    if missing:
        raise BadDatacenterChange(f"datacenter(s) {', '.join(r.name for r in change.removed)} are removed, but cluster "
                                  f"{', '.join(missing)} is not among the connections (its kubeconfig context): its "
                                  "nodes must be reachable to be decommissioned; nothing was written")
    members = {c: registry[c] for c in {*app.member_clusters(), *(r.cluster for r in change.removed)}}
    observation = await observe(members, app.metadata.name, app.namespace)
    if not any(has_runtime(p) for view in observation.values() for p in view.pods):
        # No database process (kwok's simulated pods): no data to rebuild or hand over. The racks deploy an added
        # datacenter and the finalize steps prune a removed one, as for any other change.
        return DatacenterChange()
    clusters = {dc.name: dc.cluster for dc in app.spec.datacenters}
    unknown = [dc for dc, c in clusters.items() if observation[c].reach is not Reach.REACHED]
    regions = {c.name: c.region for c in fleet.spec.clusters}
    order = [n for wave in datacenter_waves(app) for n in wave]
    sources = {dc: choose_source(app, dc, added=change.added, regions=regions, order=order, unknown=unknown)
               for dc in change.added}
    if change.removed:
        pods = {c: ps for c, ps in database_pods(observation).items() if ps}
        reports = [r for r in await ring_reports(members, app.namespace, pods) if r.answered and r.keyspaces] \
            if pods else []
        if not reports:
            raise BadDatacenterChange(f"app {app.metadata.name}: no node said which keyspaces replicate to "
                                      f"{', '.join(r.name for r in change.removed)}, so its removal cannot be "
                                      "checked; nothing was written")
        if reports:
            problems = [p for gone in change.removed for p in removal_problems(app, gone, reports[0].keyspaces)]
            if problems:
                raise BadDatacenterChange("\n".join(problems))
    return change.with_sources(sources)


async def apply_rollout(app: AnyApp, fleet: Fleet, registry: ClusterRegistry,
                        options: RolloutOptions | None = None, progress: Progress = _quiet, *,
                        rendered: Manifests | None = None, timeline: Timeline | None = None) -> RolloutResult:
    """Record a revision of ``app`` and roll it out; see the module docstring.

    ``rendered``: ``app`` already rendered for ``fleet`` with the password placeholder (a caller that
    keeps it, the operator, saves rendering twice). ``timeline`` collects when each phase ended.
    Calls that do not depend on each other go out together: the password with the lock, and once
    the lock is held, the revision record with the stored state.
    """
    opts = options or RolloutOptions()
    timeline = timeline or Timeline(opts.clock)
    check_strategy(app)
    _check_skips(app, opts.skip_clusters)
    session = _Session.open(app, fleet, registry, opts, progress)
    if isinstance(app, ChartRelease):  # Helm renders it (I/O): the caller did, with render_release
        if rendered is None:
            raise TypeError("a ChartRelease is rolled out from its rendered manifests (render_release)")
        real: Manifests | None = rendered
        masked = mask_secrets(rendered)
    else:
        real = None
        masked = rendered if rendered is not None else render(app, fleet)
    content = stage(_spec_doc(app), masked)
    timeline.mark("rendered")
    if opts.unless_settled and not opts.skip_clusters and not opts.repair:
        settled = await settled_state(registry, app.member_clusters(), masked, app=app.metadata.name,
                                      namespace=app.namespace, digest=content.digest, revisions=session.revisions,
                                      states=session.states)
        timeline.mark("checked")
        if settled is not None and not settled.superuser_pending:
            return RolloutResult(settled, unchanged_reports(masked, app.member_clusters()), timeline=timeline,
                                 notes=[f"nothing to change: every member already runs revision {settled.revision}"])
    # A datacenter added or removed: its checks (a rebuild source that answers, no replicas left behind) come
    # before the first write too.
    change = await check_datacenter_change(app, fleet, registry, await running_spec(session.revisions,
                                                                                    content.digest)) \
        if isinstance(app, CassandraCluster) else None
    # Every member written to must serve the custom kinds of its objects, and a datacenter whose size changes is
    # scaled node by node (a scale-down the ring cannot take is refused): both checked before the first write (the
    # lock), together.
    reading = asyncio.ensure_future(_scaling(registry, app)
                                    if not _sizes_as_last_rolled_out(session.revisions, session.states, app)
                                    else _no_scaling())
    try:
        await require_custom_kinds(registry, [m for m in app.member_clusters() if m not in opts.skip_clusters],
                                   masked, app=app.metadata.name, fresh_for=opts.kinds_fresh_for)
    except BaseException:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        raise
    scaling = await reading
    timeline.mark("kinds checked")
    # Is this a new revision? As the index was last seen here (else it is read while the lock is taken). A new
    # revision's content is stored (under names made of its hash) while the lock is taken.
    known = session.revisions.knows_index()
    new = known and not session.revisions.probably_latest(content.digest)
    storing = asyncio.create_task(session.revisions.store(content)) if new else None
    try:
        password, *_ = await asyncio.gather(
            _password(registry, fleet, app),
            session.lock.acquire(wait=opts.lock_wait, waiting=opts.lock_waiting),
            *(() if known else (session.revisions.refresh(),)))
    except BaseException:
        if storing is not None:
            await asyncio.gather(storing, return_exceptions=True)
        raise
    timeline.mark("locked")
    if not known and not session.revisions.probably_latest(content.digest):
        new, storing = True, asyncio.create_task(session.revisions.store(content))
    # A new revision: every member's fence takes our token while it is recorded, so the first step there need
    # not wait. (A re-apply fences a member only if it has something to write there.)
    fences = EarlyFences.start(registry, [m for m in app.member_clusters() if m not in opts.skip_clusters],
                               app=app.metadata.name, namespace=app.namespace, lock=session.lock) \
        if new else EarlyFences()
    try:
        if storing is not None:
            await storing
        (info, created, previous), stored = await asyncio.gather(
            session.revisions.record_next(spec=content.spec, manifests=masked, author=session.lock.identity,
                                          staged=content if storing is not None else None),
            session.states.load())
        timeline.mark("recorded")
        if stored is not None and stored.revision == info.number and not stored.phase.finished \
                and stored.kind == "apply":
            state = stored  # the same revision, unfinished: carry on from where it stopped
            state.event(f"apply of the same revision by {session.lock.identity}: continuing")
        else:
            state = RolloutState.new(app=app.metadata.name, kind="apply", revision=info.number,
                                     previous=previous.number if previous and created else
                                     (stored.previous if stored and stored.revision == info.number else None),
                                     plan=plan_rollout(app, scaling=scaling, datacenters=change))
            state.event(f"revision {info.number} by {session.lock.identity}: " + "; ".join(info.summary))
            if stored is not None and not stored.phase.finished:
                state.event(f"supersedes the unfinished rollout of revision {stored.revision} ({stored.phase.value})")
        baseline = None
        if created and previous is not None and state is not stored:  # what the members ran until now
            baseline = Baseline(previous.number, (await session.revisions.fetch(previous)).manifests)
        result = await session.run(app, real if real is not None else fill_password(masked, password), state,
                                   timeline, baseline, fences,
                                   reapply=not created, password=password)
        await _superuser(registry, app, password, result, session.states)
        await _identities(registry, app, result, opts.skip_clusters)
        if result.phase is RolloutPhase.FAILED and app.spec.rollout.on_failure == "rollback":
            if state.previous is None:
                result.notes.append("onFailure is rollback, but there is no previous revision to roll back to")
            else:
                failed = result
                result = await session.roll_back(state.previous, password=password, reason=result.state.message)
                result.notes.append(f"revision {failed.state.revision} failed ({failed.state.message}); "
                                    f"rolled back to revision {state.previous}")
                if result.ok:
                    result.state.phase = RolloutPhase.ROLLED_BACK
                    await session.states.save(result.state)
        return result
    finally:
        await fences.cancel()
        await session.lock.release()
        timeline.mark("released")


async def resume_rollout(app: AnyApp, fleet: Fleet, registry: ClusterRegistry,
                         options: RolloutOptions | None = None, progress: Progress = _quiet) -> RolloutResult:
    """Continue the persisted rollout of ``app`` (any spec of it will do: the stored revision is used)."""
    opts = options or RolloutOptions()
    _check_skips(app, opts.skip_clusters)
    session = _Session.open(app, fleet, registry, opts, progress)
    stored = await session.states.load()
    if stored is None:
        raise NothingToResume(f"app {app.metadata.name} has no rollout to resume; `isthmus apply` starts one")
    if stored.phase.finished:
        raise NothingToResume(f"the rollout of revision {stored.revision} of {app.metadata.name} already "
                              f"{stored.phase.value}; nothing to resume")
    password = await _password(registry, fleet, app)
    await session.lock.acquire(wait=opts.lock_wait, waiting=opts.lock_waiting)
    try:
        state = await session.states.load()
        assert state is not None
        revision = await session.revisions.get(state.revision)
        state.event(f"resumed by {session.lock.identity} at {state.current} ({time.strftime('%H:%M:%S')})")
        resumed = app_of(revision)
        result = await session.run(resumed, await _stored(registry, resumed, revision, password), state,
                                   password=password)
        await _superuser(registry, resumed, password, result, session.states)
        await _identities(registry, resumed, result, opts.skip_clusters)
        return result
    finally:
        await session.lock.release()


__all__ += ["AnyApp", "UnknownCluster", "app_of"]
