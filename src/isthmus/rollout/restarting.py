"""A rolling restart with no change of spec: ``isthmus restart``. Under the app's lock, gated, resumable.

Owns: :func:`run_restart`. The nodes are :func:`.repairplan.plan_repair`'s (the spec's datacenter order,
each datacenter's racks in order, each rack's pods by ordinal; only the ``--dc`` ones when given, a ``--dc``
the spec lacks refused first, exit code 2). Rack after rack, in rounds:

1. the database gate (:class:`~.dbgate.DatabaseGate`: every node UN in every node's view, one schema,
   nothing streaming) and every pod of the rack Ready, polled until it passes or ``gate_timeout`` ends (the
   restart then pauses, saying why);
2. how the rack restarts, from the ring as the gate just saw it (:func:`.restartplan.choose_restarts`): the
   whole rack at once (its pods not restarted yet are deleted together; the rack's StatefulSet, which
   manages its pods in parallel, starts them together) when the replication proves it safe, else one pod;
3. wait until every deleted pod is back (a new pod of the same name) and Ready.

Deleting pods is what ``kubectl rollout restart`` amounts to without touching the pod template, so nothing
the rollout owns changes: the next ``isthmus apply`` finds the StatefulSets as it left them. Progress is a
record per node in ConfigMap ``isthmus-restart-<app>`` of the control plane's ``isthmus-system`` (fenced by
the lock's token), written before and after every round; the same restart (the same ``--dc``) run again
after a crash or a pause goes on without restarting the nodes that finished; a node caught mid-way is
restarted again. ``isthmus history`` lists the restarts. All waits are on the injected clock.

Must not: change any object but pods (it deletes them; their controller makes them again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import ClusterRegistry, ClusterUnreachable, KubeObject, Reach, delete_record
from ..spec import CassandraCluster, Fleet
from .clock import SYSTEM, Clock
from .dbgate import DatabaseGate
from .gates import GateContext, GateVerdict, observe, pod_ready
from .locking import DEFAULT_DURATION, LeaseLock, LockLost
from .progress import Outcome, RolloutPhase
from .repairing import _renew
from .repairplan import RepairNode, plan_repair
from .repairstate import RepairState
from .restartplan import RestartChoice, choose_restarts
from .restartstate import RestartStore, restart_history
from .steps import Step, StepKind

__all__ = ["BadRestart", "RestartOptions", "RestartResult", "RestartStore", "check_datacenters", "restart_history",
           "run_restart"]

Say = Callable[[str, str], None]


class BadRestart(UserError):
    """A restart asked for something the spec does not have; nothing ran."""


def check_datacenters(app: CassandraCluster, datacenters: Sequence[str]) -> None:
    """A ``--dc`` the spec does not have is refused, naming the ones it has (before any cluster is asked)."""
    known = [d.name for d in app.spec.datacenters]
    for name in datacenters:
        if name not in known:
            raise BadRestart(f"--dc {name}: app {app.metadata.name} has no datacenter {name!r} "
                             f"(its datacenters: {', '.join(known)}); nothing was restarted")


@dataclass(frozen=True)
class RestartOptions:
    identity: str | None = None
    lock_wait: float = 0.0
    lock_duration: float = DEFAULT_DURATION
    poll_interval: float = 5.0
    gate_timeout: float = 600.0
    """Seconds a round may wait for the database gate; then the restart pauses (resumable)."""
    round_timeout: float = 1800.0
    """Seconds the pods of one round may take to come back Ready."""
    ask_timeout: float = 60.0
    rack_at_once: bool = True
    """False: one node at a time even where the ring's replication proves a rack at once safe."""
    clock: Clock = SYSTEM


@dataclass
class RestartResult:
    state: RepairState
    rounds: tuple[tuple[str, ...], ...] = ()
    """The rounds this run made: the nodes (ids) restarted together in each."""
    skipped: tuple[str, ...] = ()
    """Nodes restarted already by an earlier, unfinished run of the same restart."""
    choices: tuple[RestartChoice, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state.phase is RolloutPhase.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.state.app, "restart": self.state.number, "phase": self.state.phase.value,
                "message": self.state.message, "rounds": [list(r) for r in self.rounds],
                "skipped": list(self.skipped), "choices": [c.line() for c in self.choices],
                "nodes": {n.id: {**n.to_dict(), **self.state.nodes[n.id].to_dict()} for n in self.state.plan.nodes},
                "datacenters": list(self.state.plan.datacenters)}


def _quiet(_where: str, _message: str) -> None:
    return None


class _Run:
    def __init__(self, app: CassandraCluster, registry: ClusterRegistry, state: RepairState, store: RestartStore,
                 lock: LeaseLock, options: RestartOptions, say: Say) -> None:
        self.app, self.state, self.store, self.lock, self.options, self.say = app, state, store, lock, options, say
        self.clock = options.clock
        self.conns = {dc.cluster: registry[dc.cluster] for dc in app.spec.datacenters}
        self.gate = DatabaseGate({dc.name: dc.cluster for dc in app.spec.datacenters}, within=options.ask_timeout)
        self.rounds: list[tuple[str, ...]] = []
        self.choices: dict[str, RestartChoice] = {}

    def _log(self, where: str, message: str) -> None:
        self.say(where, message)
        self.state.event(f"{where}: {message}")

    async def _pods(self, cluster: str) -> dict[str, KubeObject]:
        view = (await observe({cluster: self.conns[cluster]}, self.app.metadata.name, self.app.namespace))[cluster]
        if view.reach is not Reach.REACHED:
            raise ClusterUnreachable(cluster, view.error or "it does not answer")
        return {p["metadata"]["name"]: p for p in view.pods}

    async def _gated(self, rack: Sequence[RepairNode]) -> str | None:
        """Wait until the gate passes and the rack's pods are Ready; None, or why the restart pauses."""
        first = rack[0]
        deadline = self.clock.monotonic() + self.options.gate_timeout
        while True:
            await self.lock.verify()
            observation = await observe(self.conns, self.app.metadata.name, self.app.namespace)
            view = observation[first.cluster]
            wait: str | None
            if view.reach is not Reach.REACHED:
                wait = f"cluster {first.cluster} does not answer ({view.error})"
            else:
                result = await self.gate.check(GateContext(
                    app=self.app.metadata.name, namespace=self.app.namespace,
                    step=Step(StepKind.RACK, first.cluster, first.datacenter, first.rack), observation=observation,
                    now=0.0, connections=self.conns))
                pods = {p["metadata"]["name"]: p for p in view.pods}
                missing = [n.pod for n in rack if n.pod not in pods or not pod_ready(pods[n.pod])]
                wait = f"{result.gate}: {result.reason}" if result.verdict is not GateVerdict.PASS else \
                    f"pod(s) {', '.join(missing)} not Ready" if missing else None
            if wait is None:
                return None
            if self.clock.monotonic() >= deadline:
                return f"the gates did not pass within {self.options.gate_timeout:g}s: {wait}"
            self.say(first.datacenter, f"rack {first.rack}: wait: {wait}")
            await self.clock.sleep(self.options.poll_interval)

    async def _round(self, nodes: Sequence[RepairNode]) -> str | None:
        """Delete ``nodes``' pods together and wait until each is back and Ready; None, or what failed."""
        cluster = nodes[0].cluster
        before = await self._pods(cluster)
        for node in nodes:
            rec = self.state.nodes[node.id]
            rec.outcome, rec.started, rec.finished, rec.note = Outcome.RUNNING, self.clock.wall(), None, ""
        self._log(nodes[0].datacenter, f"restarting {', '.join(n.pod for n in nodes)}")
        await self.store.save(self.state)
        old = {n.pod: before[n.pod]["metadata"]["uid"] for n in nodes if n.pod in before}
        await self.lock.verify()
        for node in nodes:
            await delete_record(self.conns[cluster], "v1", "Pod", node.pod, self.app.namespace)
        self.rounds.append(tuple(n.id for n in nodes))
        deadline = self.clock.monotonic() + self.options.round_timeout
        while True:
            await self.clock.sleep(self.options.poll_interval)
            pods = await self._pods(cluster)
            back = [n for n in nodes if n.pod in pods and pods[n.pod]["metadata"]["uid"] != old.get(n.pod)
                    and pod_ready(pods[n.pod])]
            if len(back) == len(nodes):
                break
            if self.clock.monotonic() >= deadline:
                late = ", ".join(n.pod for n in nodes if n not in back)
                return f"{late} not back and Ready within {self.options.round_timeout:g}s"
            self.say(nodes[0].datacenter, f"{len(back)}/{len(nodes)} back and Ready")
        for node in nodes:
            rec = self.state.nodes[node.id]
            rec.outcome, rec.finished = Outcome.DONE, self.clock.wall()
            rec.note = f"{rec.finished - (rec.started or rec.finished):.1f}s" + (" (with its rack)" if len(nodes) > 1
                                                                                  else "")
        self._log(nodes[0].datacenter, f"restarted {', '.join(n.pod for n in nodes)}")
        await self.store.save(self.state)
        return None

    def _choice(self, datacenter: str) -> RestartChoice:
        choice = next(c for c in choose_restarts(self.app, self.gate.last_reports) if c.datacenter == datacenter)
        if choice.rack_at_once and not self.options.rack_at_once:
            choice = RestartChoice(datacenter, False, f"asked for (--one-node-at-a-time; {choice.reason})")
        if self.choices.get(datacenter) != choice:
            self._log(datacenter, choice.line())
        self.choices[datacenter] = choice
        return choice

    async def rack(self, nodes: Sequence[RepairNode]) -> bool:
        """Restart one rack's nodes not done yet; False when the restart must stop."""
        while nodes:
            stop = await self._gated(nodes)
            if stop is None:
                choice = self._choice(nodes[0].datacenter)
                together = list(nodes) if choice.rack_at_once else [nodes[0]]
                stop = await self._round(together)
                nodes = [n for n in nodes if n not in together]
                if stop is None:
                    continue
                for node in together:
                    rec = self.state.nodes[node.id]
                    rec.outcome, rec.note = Outcome.FAILED, stop
                self.state.phase, self.state.message = RolloutPhase.FAILED, stop
            else:
                self.state.phase, self.state.message = RolloutPhase.PAUSED, f"paused at {nodes[0].id}: {stop}"
            self._log(nodes[0].datacenter if nodes else "restart", self.state.message)
            return False
        return True

    async def run(self) -> None:
        left = self.state.plan.remaining(self.state.done)
        racks: dict[tuple[str, str], list[RepairNode]] = {}
        for node in left:
            racks.setdefault((node.datacenter, node.rack), []).append(node)
        for nodes in racks.values():
            try:
                if not await self.rack(nodes):
                    return
            except ClusterUnreachable as exc:
                self.state.phase = RolloutPhase.PAUSED
                self.state.message = (f"paused at {nodes[0].id}: cluster {exc.cluster} does not answer "
                                      f"({exc.reason}); run the same restart again when it does")
                return
        self.state.phase = RolloutPhase.SUCCEEDED
        self.state.message = (f"restart {self.state.number}: every node restarted, in {len(self.rounds)} "
                              f"round(s) by this run")


async def run_restart(app: CassandraCluster, fleet: Fleet, registry: ClusterRegistry, *,
                      datacenters: Sequence[str] = (), options: RestartOptions | None = None,
                      progress: Say = _quiet) -> RestartResult:
    """Restart ``app``'s nodes (or the named datacenters'), continuing an unfinished run of the same restart."""
    opts = options or RestartOptions()
    check_datacenters(app, datacenters)
    plan = plan_repair(app, datacenters=datacenters)
    control = registry[fleet.spec.control_plane]
    lock = LeaseLock(control, app.metadata.name, opts.identity, duration=opts.lock_duration, clock=opts.clock)
    store = RestartStore(control, app.metadata.name)
    await lock.acquire(wait=opts.lock_wait)
    stop, lost = asyncio.Event(), list[LockLost]()
    renewer = asyncio.create_task(_renew(lock, opts.clock, stop, lost))
    try:
        stored = await store.load()
        if stored is not None and not stored.phase.finished and stored.plan == plan:
            state, skipped = stored, stored.done
            state.event(f"resumed by {lock.identity}: {len(skipped)} of {len(plan.nodes)} nodes restarted already")
        else:
            if stored is not None and not stored.phase.finished:
                stored.message = f"superseded by restart {stored.number + 1}; " + (stored.message or stored.phase.value)
            past = [*stored.past, stored.summary()] if stored is not None else []
            state, skipped = RepairState.new(plan, number=stored.number + 1 if stored else 1, past=past,
                                             now=opts.clock.wall()), ()
            state.event(f"restart {state.number} by {lock.identity}: datacenters "
                        f"{', '.join(plan.datacenters) or 'all'}")
        state.phase, state.message, state.holder, state.token = RolloutPhase.RUNNING, "", lock.identity, lock.token
        await store.save(state)
        for node_id in skipped:
            node = next(n for n in plan.nodes if n.id == node_id)
            progress(node.datacenter, f"{node.pod}: restarted already (an earlier run of restart {state.number})")
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
        return RestartResult(state, tuple(run.rounds), tuple(skipped), tuple(run.choices.values()))
    finally:
        stop.set()
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await lock.release()
