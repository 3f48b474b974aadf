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
the repair goes on elsewhere and ends Paused (not Succeeded). The progress (which nodes finished) is
:mod:`.repairstate`'s, written before and after every node. Running the same repair
(same keyspaces, same datacenters) again continues an unfinished one without repeating finished nodes; a
different one starts anew. The ring is reached through :class:`RingAccess` (:class:`KubeRing`: the member
API servers), so that the walk, its waits (on the injected clock) and its resume are tested without one.

Must not: write to members (a repair changes no object), or parse nodetool (that is :mod:`.repairplan`'s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import IsthmusError, UserError
from ..kube import ClusterRegistry, ClusterUnreachable, ExecResult, KubeError, Reach, pod_exec
from ..spec import CassandraCluster, Fleet
from .clock import SYSTEM, Clock
from .dbgate import CASSANDRA_CONTAINER, DatabaseGate, database_pods
from .gates import GateContext, GateVerdict, observe, pod_ready
from .locking import DEFAULT_DURATION, LeaseLock, LockLost
from .progress import Outcome, RolloutPhase, StepRecord
from .repairplan import (
    RepairNode,
    check_keyspaces,
    check_selection,
    nodetool_failure,
    parse_keyspaces,
    plan_repair,
)
from .repairstate import RepairState, RepairStore
from .steps import Step, StepKind

__all__ = ["KubeRing", "Look", "RepairOptions", "RepairResult", "RepairRun", "RepairUnavailable", "RingAccess",
           "run_repair"]

Say = Callable[[str, str], None]


class RepairUnavailable(UserError):
    """The ring could not be asked what it holds (no node answered); nothing ran."""

    exit_code = 1


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


@dataclass(frozen=True)
class Look:
    """What the ring looks like before a node's repair: its member Unknown (why), or the gate waiting (why)."""

    unknown: str | None = None
    wait: str | None = None


class RingAccess(Protocol):
    """How a repair reaches the ring (:class:`KubeRing` in production; tests script it)."""

    async def look(self, node: RepairNode) -> Look: ...

    async def run(self, node: RepairNode, command: Sequence[str], *, within: float) -> ExecResult:
        """Raises ClusterUnreachable (Unknown), KubeError, TimeoutError."""
        ...


class HeldLock(Protocol):
    """The app's lock as a repair needs it: still ours? (:meth:`~.locking.LeaseLock.verify`)"""

    async def verify(self) -> None: ...


class Saver(Protocol):
    async def save(self, state: RepairState) -> None: ...


class KubeRing:
    """The ring through every member's API server: the pods observed, the database gate, ``pods/exec``."""

    def __init__(self, app: CassandraCluster, registry: ClusterRegistry, *, within: float) -> None:
        self.app = app
        self.gate = DatabaseGate({dc.name: dc.cluster for dc in app.spec.datacenters}, within=within)
        self.conns = {dc.cluster: registry[dc.cluster] for dc in app.spec.datacenters}

    async def look(self, node: RepairNode) -> Look:
        observation = await observe(self.conns, self.app.metadata.name, self.app.namespace)
        view = observation[node.cluster]
        if view.reach is not Reach.REACHED:
            return Look(unknown=view.error or "it does not answer")
        pod = next((p for p in view.pods if p["metadata"]["name"] == node.pod), None)
        step = Step(StepKind.RACK, node.cluster, node.datacenter, node.rack)
        result = await self.gate.check(GateContext(app=self.app.metadata.name, namespace=self.app.namespace,
                                                   step=step, observation=observation, now=0.0,
                                                   connections=self.conns))
        if result.verdict is not GateVerdict.PASS:
            return Look(wait=f"{result.gate}: {result.reason}")
        if pod is None or not pod_ready(pod):
            return Look(wait=f"pod {node.pod} is {'not Ready' if pod is not None else 'missing'}")
        return Look()

    async def run(self, node: RepairNode, command: Sequence[str], *, within: float) -> ExecResult:
        return await pod_exec(self.conns[node.cluster], self.app.namespace, node.pod, CASSANDRA_CONTAINER, command,
                              within=within)


class RepairRun:
    """One run of a repair, the lock held and the state loaded: walks the plan's remaining nodes in order.

    Each node waits for ``ring.look`` to pass (at most ``gate_timeout``, on ``options.clock``), then runs the
    plan's commands; the state is saved before and after. Stops at a failure or a gate that never passed.
    """

    def __init__(self, state: RepairState, *, ring: RingAccess, store: Saver, lock: HeldLock, options: RepairOptions,
                 say: Say) -> None:
        self.state, self.ring, self.store, self.lock = state, ring, store, lock
        self.options, self.say, self.clock = options, say, options.clock
        self.unknown: dict[str, str] = {}
        """Member cluster -> why it is Unknown in this run."""
        self.repaired: list[str] = []

    def _log(self, node: RepairNode, message: str) -> None:
        self.say(node.datacenter, f"{node.pod}: {message}")
        self.state.event(f"{node.id}: {message}")

    async def _gated(self, node: RepairNode) -> str | None:
        """Wait until the gate passes for ``node``; None, or why it may not start (a timeout)."""
        deadline = self.clock.monotonic() + self.options.gate_timeout
        while True:
            await self.lock.verify()
            look = await self.ring.look(node)
            if look.unknown is not None:
                self.unknown[node.cluster] = look.unknown
                return None
            if look.wait is None:
                return None
            if self.clock.monotonic() >= deadline:
                return f"the database gate did not pass within {self.options.gate_timeout:g}s: {look.wait}"
            self.say(node.datacenter, f"{node.pod}: wait: {look.wait}")
            await self.clock.sleep(self.options.poll_interval)

    async def _repair(self, node: RepairNode) -> str | None:
        """The plan's commands on ``node``: None, "" (Unknown), or what failed (node, command, Cassandra's words)."""
        for command in self.state.plan.commands():
            said = " ".join(command)
            self.say(node.datacenter, f"{node.pod}: {said}")
            try:
                await self.lock.verify()
                result = await self.ring.run(node, command, within=self.options.node_timeout)
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

    def _not_done(self, node: RepairNode, rec: StepRecord) -> None:
        rec.outcome, rec.note = Outcome.PENDING, f"Unknown: cluster {node.cluster}: {self.unknown[node.cluster]}"
        self._log(node, f"not repaired: {rec.note}")

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
            self._not_done(node, rec)
            return True
        rec.outcome, rec.started, rec.finished, rec.note = Outcome.RUNNING, self.clock.wall(), None, ""
        self._log(node, "repair started")
        await self.store.save(self.state)
        failed = await self._repair(node)
        if failed == "":  # the member stopped answering mid-way: Unknown
            self._not_done(node, rec)
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
            if stored is not None and not stored.phase.finished:  # kept in the history as what it was
                stored.message = f"superseded by repair {stored.number + 1}; " + (stored.message or stored.phase.value)
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
        run = RepairRun(state, ring=KubeRing(app, registry, within=opts.ask_timeout), store=store, lock=lock,
                        options=opts, say=progress)
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
