"""Running a primary-range repair across the ring: under the app's lock, gated, node by node, resumable.

Owns: :func:`run_repair`, which ``isthmus repair`` calls. The plan is :mod:`.repairplan`'s (pure). Before
anything runs, a ``--dc`` the spec lacks and a ``--keyspace`` the ring lacks are refused
(:class:`~.repairplan.BadRepair`, exit code 2). Then the app's lock is taken (the :class:`~.locking.LeaseLock`
of ``isthmus apply``, renewed in the background and verified before each node), and node after node:

1. the database gate (:class:`~.dbgate.DatabaseGate`): every node UN in every node's view, one schema,
   nothing streaming or repairing anywhere, polled until it passes or ``gate_timeout`` ends (the repair
   then pauses, saying why);
2. ``nodetool repair -pr -full [keyspace]`` through ``pods/exec`` on the node's member API server, with a
   timeout; a failure stops the repair and names the node, the command and Cassandra's message.

A member that does not answer is Unknown: its datacenter's nodes are left not done, with the reason, and
the repair goes on elsewhere and ends Paused (not Succeeded). The progress (which nodes finished) is the
ConfigMap ``isthmus-repair-<app>`` in the control plane, written through the rollout state's fenced
compare-and-swap (:class:`~.progress.FencedDocument`) before and after every node. Running the same repair
(same keyspaces, same datacenters) again continues an unfinished one without repeating finished nodes; a
different one starts anew. Finished and superseded repairs are kept in the same document, newest last;
``isthmus history`` lists them (:func:`repair_history`).

Must not: write to members (a repair changes no object), or parse nodetool (that is :mod:`.repairplan`'s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import ClusterConnection, ClusterRegistry, ClusterUnreachable, KubeError, Reach, pod_exec
from ..spec import CassandraCluster, Fleet
from .clock import SYSTEM, Clock
from .dbgate import CASSANDRA_CONTAINER, DatabaseGate, database_pods
from .gates import GateContext, GateVerdict, observe, pod_ready
from .locking import DEFAULT_DURATION, LeaseLock, LockLost
from .progress import FencedDocument, Outcome, RolloutPhase, StepRecord
from .repairplan import (
    RepairNode,
    RepairPlan,
    check_keyspaces,
    check_selection,
    nodetool_failure,
    parse_keyspaces,
    plan_repair,
)
from .steps import Step, StepKind

__all__ = ["RepairOptions", "RepairResult", "RepairState", "RepairStore", "RepairSummary", "RepairUnavailable",
           "repair_history", "repair_state_name", "run_repair"]

PAST_KEEP = 50
LOG_KEEP = 200
Say = Callable[[str, str], None]


class RepairUnavailable(UserError):
    """The ring could not be asked what it holds (no node answered); nothing ran."""

    exit_code = 1


def repair_state_name(app: str) -> str:
    return f"isthmus-repair-{app}"


@dataclass(frozen=True)
class RepairSummary:
    """One repair as ``isthmus history`` lists it."""

    number: int
    phase: RolloutPhase
    keyspaces: tuple[str, ...]
    datacenters: tuple[str, ...]
    done: int
    total: int
    holder: str
    created: float
    updated: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "phase": self.phase.value, "keyspaces": list(self.keyspaces),
                "datacenters": list(self.datacenters), "done": self.done, "total": self.total,
                "holder": self.holder, "created": self.created, "updated": self.updated, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairSummary:
        return cls(int(d["number"]), RolloutPhase(d["phase"]), tuple(d.get("keyspaces", ())),
                   tuple(d.get("datacenters", ())), int(d.get("done", 0)), int(d.get("total", 0)),
                   str(d.get("holder", "")), float(d.get("created", 0)), float(d.get("updated", 0)),
                   str(d.get("message", "")))


@dataclass
class RepairState:
    """The current (or last) repair and its nodes' records; mutable, saved at every node boundary."""

    app: str
    number: int
    plan: RepairPlan
    nodes: dict[str, StepRecord]
    phase: RolloutPhase = RolloutPhase.RUNNING
    message: str = ""
    holder: str = ""
    token: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    log: list[str] = field(default_factory=list)
    past: list[RepairSummary] = field(default_factory=list)

    @classmethod
    def new(cls, plan: RepairPlan, *, number: int, past: Sequence[RepairSummary] = (),
            now: float | None = None) -> RepairState:
        stamp = time.time() if now is None else now
        return cls(plan.app, number, plan, {n.id: StepRecord() for n in plan.nodes}, created=stamp, updated=stamp,
                   past=list(past)[-PAST_KEEP:])

    @property
    def done(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.plan.nodes if self.nodes[n.id].outcome is Outcome.DONE)

    def event(self, message: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {message}")
        del self.log[:-LOG_KEEP]

    def summary(self) -> RepairSummary:
        return RepairSummary(self.number, self.phase, self.plan.keyspaces, self.plan.datacenters, len(self.done),
                             len(self.plan.nodes), self.holder, self.created, self.updated, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "number": self.number, "phase": self.phase.value, "message": self.message,
                "holder": self.holder, "token": self.token, "created": self.created, "updated": self.updated,
                "plan": self.plan.to_dict(), "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
                "done": list(self.done), "log": self.log, "past": [p.to_dict() for p in self.past]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairState:
        return cls(str(d["app"]), int(d["number"]), RepairPlan.from_dict(d["plan"]),
                   {k: StepRecord.from_dict(v) for k, v in d["nodes"].items()}, RolloutPhase(d["phase"]),
                   str(d.get("message", "")), str(d.get("holder", "")), int(d.get("token", 0)),
                   float(d.get("created", 0)), float(d.get("updated", 0)), list(d.get("log", [])),
                   [RepairSummary.from_dict(p) for p in d.get("past", [])])


class RepairStore(FencedDocument):
    """The app's repair progress in the control plane, fenced like the rollout state (:mod:`.progress`)."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        super().__init__(conn, app, repair_state_name(app), "repair-state")

    async def load(self) -> RepairState | None:
        doc = await self.load_document()
        return RepairState.from_dict(doc) if doc else None

    async def save(self, state: RepairState) -> None:
        state.updated = time.time()
        await self.save_document(state.to_dict(), state.token)


async def repair_history(conn: ClusterConnection, app: str) -> tuple[RepairSummary, ...]:
    """Every repair kept, oldest first, the current (or last) one at the end."""
    state = await RepairStore(conn, app).load()
    return () if state is None else (*state.past, state.summary())


@dataclass(frozen=True)
class RepairOptions:
    identity: str | None = None
    lock_wait: float = 0.0
    lock_duration: float = DEFAULT_DURATION
    poll_interval: float = 5.0
    gate_timeout: float = 600.0
    """Seconds a node may wait for the database gate; then the repair pauses (resumable)."""
    node_timeout: float = 3600.0
    """Seconds one ``nodetool repair`` may run."""
    ask_timeout: float = 60.0
    """Seconds one question to a node (the gate's nodetool, the keyspace list) may take."""
    clock: Clock = SYSTEM


@dataclass
class RepairResult:
    state: RepairState
    repaired: tuple[str, ...] = ()
    """Nodes repaired by this run (the ids of :class:`~.repairplan.RepairNode`)."""
    skipped: tuple[str, ...] = ()
    """Nodes found repaired already by an earlier, unfinished run of the same repair."""

    @property
    def ok(self) -> bool:
        return self.state.phase is RolloutPhase.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.state.app, "repair": self.state.number, "phase": self.state.phase.value,
                "message": self.state.message, "repaired": list(self.repaired), "skipped": list(self.skipped),
                "nodes": {n.id: {**n.to_dict(), **self.state.nodes[n.id].to_dict()} for n in self.state.plan.nodes},
                "keyspaces": list(self.state.plan.keyspaces), "datacenters": list(self.state.plan.datacenters)}


def _quiet(_where: str, _message: str) -> None:
    return None


async def _ring_keyspaces(registry: ClusterRegistry, app: CassandraCluster, within: float) -> tuple[str, str]:
    """``(describecluster output, who said it)`` from the first Ready node that answers, any datacenter."""
    tried: list[str] = []
    conns = {dc.cluster: registry[dc.cluster] for dc in app.spec.datacenters}
    observation = await observe(conns, app.metadata.name, app.namespace)
    for cluster, pods in database_pods(observation).items():
        for pod in sorted(p["metadata"]["name"] for p in pods):
            try:
                result = await pod_exec(conns[cluster], app.namespace, pod, CASSANDRA_CONTAINER,
                                        ("nodetool", "describecluster"), within=within)
            except (KubeError, TimeoutError) as exc:
                tried.append(f"{cluster}/{pod}: {exc or 'timed out'}")
                continue
            if result.ok and "Keyspaces:" in result.stdout:
                return result.stdout, f"nodetool describecluster on {cluster}/{pod}"
            tried.append(f"{cluster}/{pod}: {nodetool_failure(result.stdout, result.stderr)}")
    tried += [f"{c}: {v.error or 'no answer'}" for c, v in observation.items() if v.reach is not Reach.REACHED]
    raise RepairUnavailable(f"app {app.metadata.name}: no node said which keyspaces the ring holds, so --keyspace "
                            f"cannot be checked; nothing was repaired ({'; '.join(tried) or 'no Ready node'})")


class _Run:
    """One run of a repair: the lock held, the state loaded; walks the plan's remaining nodes."""

    def __init__(self, app: CassandraCluster, registry: ClusterRegistry, state: RepairState, store: RepairStore,
                 lock: LeaseLock, options: RepairOptions, say: Say) -> None:
        self.app, self.registry, self.state, self.store, self.lock = app, registry, state, store, lock
        self.options, self.say, self.clock = options, say, options.clock
        self.gate = DatabaseGate({dc.name: dc.cluster for dc in app.spec.datacenters}, within=options.ask_timeout)
        self.conns = {dc.cluster: registry[dc.cluster] for dc in app.spec.datacenters}
        self.unknown: dict[str, str] = {}
        """Member cluster -> why it is Unknown in this run."""
        self.repaired: list[str] = []

    def _log(self, node: RepairNode, message: str) -> None:
        self.say(node.datacenter, f"{node.pod}: {message}")
        self.state.event(f"{node.id}: {message}")

    async def _gated(self, node: RepairNode) -> str | None:
        """Wait until the database gate passes for ``node``; None, or why it may not start (Unknown, a timeout)."""
        deadline = self.clock.monotonic() + self.options.gate_timeout
        step = Step(StepKind.RACK, node.cluster, node.datacenter, node.rack)
        while True:
            await self.lock.verify()
            observation = await observe(self.conns, self.app.metadata.name, self.app.namespace)
            view = observation[node.cluster]
            if view.reach is not Reach.REACHED:
                self.unknown[node.cluster] = view.error or "it does not answer"
                return None
            pod = next((p for p in view.pods if p["metadata"]["name"] == node.pod), None)
            ready = pod is not None and pod_ready(pod)
            result = await self.gate.check(GateContext(app=self.app.metadata.name, namespace=self.app.namespace,
                                                       step=step, observation=observation,
                                                       now=self.clock.monotonic(), connections=self.conns))
            if ready and result.verdict is GateVerdict.PASS:
                return None
            why = result.reason if result.verdict is not GateVerdict.PASS else \
                f"pod {node.pod} is {'not Ready' if pod is not None else 'missing'}"
            if self.clock.monotonic() >= deadline:
                return f"the database gate did not pass within {self.options.gate_timeout:g}s: {why}"
            self.say(node.datacenter, f"{node.pod}: database: wait: {why}")
            await self.clock.sleep(self.options.poll_interval)

    async def _repair(self, node: RepairNode) -> str | None:
        """Run the plan's commands on ``node``; None, or what failed (node, command, Cassandra's words)."""
        for command in self.state.plan.commands():
            said = " ".join(command)
            self.say(node.datacenter, f"{node.pod}: {said}")
            try:
                result = await pod_exec(self.conns[node.cluster], self.app.namespace, node.pod, CASSANDRA_CONTAINER,
                                        command, within=self.options.node_timeout)
            except ClusterUnreachable as exc:
                self.unknown[node.cluster] = exc.reason
                return ""
            except TimeoutError:
                return f"{node.cluster}/{node.pod}: {said}: not finished within {self.options.node_timeout:g}s"
            except KubeError as exc:
                return f"{node.cluster}/{node.pod}: {said}: {exc}"
            if not result.ok:
                return (f"{node.cluster}/{node.pod}: {said} exited {result.exit_code}: "
                        f"{nodetool_failure(result.stdout, result.stderr)}")
        return None

    async def node(self, node: RepairNode) -> bool:
        """Repair one node; False when the whole repair must stop (a failure, a gate that never passed)."""
        rec = self.state.nodes[node.id]
        if node.cluster not in self.unknown:
            stop = await self._gated(node)
            if stop is not None:
                rec.note = stop
                self.state.phase, self.state.message = RolloutPhase.PAUSED, f"paused at {node.id}: {stop}"
                self._log(node, stop)
                return False
        if node.cluster in self.unknown:
            rec.outcome, rec.note = Outcome.PENDING, f"Unknown: cluster {node.cluster}: {self.unknown[node.cluster]}"
            self._log(node, f"not repaired: {rec.note}")
            return True
        rec.outcome, rec.started, rec.finished, rec.note = Outcome.RUNNING, self.clock.wall(), None, ""
        self._log(node, "repair started")
        await self.store.save(self.state)
        failed = await self._repair(node)
        if failed == "":  # the member stopped answering mid-way: Unknown
            rec.outcome, rec.note = Outcome.PENDING, f"Unknown: cluster {node.cluster}: {self.unknown[node.cluster]}"
            self._log(node, f"not repaired: {rec.note}")
            await self.store.save(self.state)
            return True
        if failed is not None:
            rec.outcome, rec.finished, rec.note = Outcome.FAILED, self.clock.wall(), failed
            self.state.phase, self.state.message = RolloutPhase.FAILED, failed
            self._log(node, f"failed: {failed}")
            return False
        rec.outcome, rec.finished = Outcome.DONE, self.clock.wall()
        rec.note = f"{(rec.finished - (rec.started or rec.finished)):.1f}s"
        self.repaired.append(node.id)
        self._log(node, f"repaired ({rec.note})")
        await self.store.save(self.state)
        return True

    async def run(self) -> None:
        for node in self.state.plan.remaining(self.state.done):
            if not await self.node(node):
                return
        left = self.state.plan.remaining(self.state.done)
        if not left:
            self.state.phase = RolloutPhase.SUCCEEDED
            self.state.message = f"repair {self.state.number}: every node of the plan repaired"
            return
        self.state.phase = RolloutPhase.PAUSED
        unknown = "; ".join(f"{c}: {why}" for c, why in sorted(self.unknown.items()))
        self.state.message = (f"{len(left)} of {len(self.state.plan.nodes)} nodes not repaired "
                              f"({', '.join(n.id for n in left)}): Unknown ({unknown}); "
                              "run the same repair again when they answer")


async def _renew(lock: LeaseLock, clock: Clock, stop: asyncio.Event, lost: list[LockLost]) -> None:
    while not stop.is_set():
        await clock.sleep(lock.duration / 3)
        try:
            await lock.renew()
        except ClusterUnreachable:
            continue
        except LockLost as exc:
            lost.append(exc)
            return


async def run_repair(app: CassandraCluster, fleet: Fleet, registry: ClusterRegistry, *,
                     keyspaces: Sequence[str] = (), datacenters: Sequence[str] = (),
                     options: RepairOptions | None = None, progress: Say = _quiet) -> RepairResult:
    """Repair ``app``'s ring (or the named datacenters' nodes), continuing an unfinished run of the same repair."""
    opts = options or RepairOptions()
    check_selection(app, datacenters)
    plan = plan_repair(app, keyspaces=keyspaces, datacenters=datacenters)
    if plan.keyspaces:
        described, asked = await _ring_keyspaces(registry, app, opts.ask_timeout)
        check_keyspaces(app.metadata.name, plan.keyspaces, parse_keyspaces(described), asked)
    control = registry[fleet.spec.control_plane]
    lock = LeaseLock(control, app.metadata.name, opts.identity, duration=opts.lock_duration, clock=opts.clock)
    store = RepairStore(control, app.metadata.name)
    await lock.acquire(wait=opts.lock_wait)
    stop, lost = asyncio.Event(), list[LockLost]()
    renewer = asyncio.create_task(_renew(lock, opts.clock, stop, lost))
    try:
        stored = await store.load()
        if stored is not None and not stored.phase.finished and stored.plan == plan:
            state, skipped = stored, stored.done
            state.event(f"resumed by {lock.identity}: {len(skipped)} of {len(plan.nodes)} nodes repaired already")
        else:
            past = [*stored.past, stored.summary()] if stored is not None else []
            state, skipped = RepairState.new(plan, number=stored.number + 1 if stored else 1, past=past,
                                             now=opts.clock.wall()), ()
            state.event(f"repair {state.number} by {lock.identity}: keyspaces "
                        f"{', '.join(plan.keyspaces) or 'all'}; datacenters {', '.join(plan.datacenters) or 'all'}")
        state.phase, state.message, state.holder, state.token = RolloutPhase.RUNNING, "", lock.identity, lock.token
        await store.save(state)
        for node_id in skipped:
            node = next(n for n in plan.nodes if n.id == node_id)
            progress(node.datacenter, f"{node.pod}: repaired already (an earlier run of repair {state.number})")
        run = _Run(app, registry, state, store, lock, opts, progress)
        try:
            await run.run()
        except LockLost as exc:
            state.phase, state.message = RolloutPhase.PAUSED, str(exc)
            raise
        finally:
            if lost:
                state.phase, state.message = RolloutPhase.PAUSED, str(lost[0])
            state.event(f"{state.phase.value}: {state.message}")
            with contextlib.suppress(IsthmusError):  # the last good save stands
                await store.save(state)
        return RepairResult(state, tuple(run.repaired), tuple(skipped))
    finally:
        stop.set()
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await lock.release()
