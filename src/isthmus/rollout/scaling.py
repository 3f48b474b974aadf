"""Scaling a datacenter of a running ring: the ``scale`` step of a rollout (issue 13 item 6).

Owns: :func:`read_scaling` (before anything is written: the live StatefulSets' replicas of every member, the
datacenters whose size changes, and for a scale-down the ring's own answer, ``nodetool status`` and
``describecluster`` through ``pods/exec``, checked by :func:`.scaleplan.check_scale_down`; a refusal is a
:class:`~.scaleplan.BadScale`, exit code 2) and :class:`RingScaling`, what the engine runs for a ``scale``
step (``settings.scaling``):

- **up**: for each new node in :meth:`~.scaleplan.ScalePlan.adds` order: wait until the database gate passes
  (every node UN in every view, nothing joining, leaving or streaming; :class:`~.dbgate.DatabaseGate`), set its
  StatefulSet's replicas to one more (never relying on the StatefulSet's pod management policy to hold the
  others back), and wait until its pod is Ready and the gate passes again (it is UN everywhere); then
  ``nodetool cleanup`` on each node that was there before, one at a time;
- **down**: for each node in :meth:`~.scaleplan.ScalePlan.removes` order: the gate, ``nodetool decommission``
  on it (through ``pods/exec``, with a timeout), its StatefulSet's replicas one fewer, wait until the pod is
  gone, then delete its volume claim (``data-<pod>``). The claim goes because a later scale-up would
  otherwise start that ordinal on the old node's data: a node that was decommissioned refuses to start on
  it, and its host ID is gone from the ring. (The identities ConfigMap drops the pod after the rollout, see
  :mod:`.identities`, so the new node is not taken for a replacement either.)

A ring whose pods no container runtime runs (kwok's simulated pods: no database process to ask or to
decommission) gets no ``scale`` step: its rack steps set the replicas, as they always did.

Resumable: each node's work is decided from the ring as it is when the step runs again (a rollout killed
mid-step resumes it, as a Running step): a node already present is not added again (the replicas say so), a
node already decommissioned (``nodetool netstats`` mode ``DECOMMISSIONED``, or its pod gone) is not
decommissioned again, and ``nodetool cleanup`` runs again on every old node (it skips SSTables with nothing
to remove, so a repeat is cheap). A refusal by Cassandra names the node, the command and Cassandra's words.

Must not: decide the order or the refusals (:mod:`.scaleplan`'s, pure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import IsthmusError
from ..kube import (
    ClusterConnection,
    ClusterRegistry,
    ClusterUnreachable,
    KubeError,
    KubeObject,
    Reach,
    across,
    delete_claim,
    list_objects,
    pod_exec,
    set_replicas,
)
from ..kube.inventory import APP_LABEL
from ..spec import CassandraCluster
from .clock import SYSTEM, Clock
from .dbgate import CASSANDRA_CONTAINER, DatabaseGate, database_pods, has_runtime, ring_reports
from .gates import GateContext, GateVerdict, Observation, observe, pod_ready
from .repairplan import nodetool_failure
from .ringview import parse_netstats
from .scaleplan import RingFacts, ScaleNode, ScalePlan, check_scale_down, loads_of, scale_plans
from .steps import Step, StepKind

__all__ = ["RingScaling", "ScaleError", "live_replicas", "read_scaling"]

Say = Callable[[str, str], None]
CLAIM_TEMPLATE = "data"
"""The StatefulSets' volume claim template (:mod:`isthmus.render.cassandra`): a pod's claim is ``data-<pod>``."""


class ScaleError(IsthmusError):
    """Cassandra refused a scaling command, or a node did not join or leave in time; the message names the node,
    the command and Cassandra's own words."""


def _quiet(_where: str, _message: str) -> None:
    return None


def live_replicas(app: CassandraCluster,
                  statefulsets: Mapping[str, Sequence[KubeObject]]) -> dict[str, dict[str, int]]:
    """Datacenter -> rack -> its StatefulSet's ``spec.replicas``, from each member's StatefulSets (those read)."""
    out: dict[str, dict[str, int]] = {}
    for dc in app.spec.datacenters:
        for rack in dc.racks:
            name = f"{app.metadata.name}-{dc.name}-{rack.name}"
            for sts in statefulsets.get(dc.cluster, ()):
                if sts["metadata"]["name"] == name:
                    out.setdefault(dc.name, {})[rack.name] = int((sts.get("spec") or {}).get("replicas", 1))
    return out


async def _statefulsets(conns: Mapping[str, ClusterConnection], app: str,
                        namespace: str) -> dict[str, Sequence[KubeObject]]:
    """Each member's StatefulSets of the app (one LIST each, concurrently); a member that does not answer is left
    out (its datacenters get no ``scale`` step in this rollout)."""
    async def one(conn: ClusterConnection) -> Sequence[KubeObject]:
        return await list_objects(conn, "apps/v1", "StatefulSet", namespace=namespace, labels={APP_LABEL: app})

    outcomes = await across(conns, one)
    return {c: o.value for c, o in outcomes.items() if o.value is not None}


async def read_scaling(registry: ClusterRegistry, app: CassandraCluster, *,
                       within: float = 60.0) -> dict[str, ScalePlan]:
    """The datacenters whose size the spec changes, each checked when it shrinks (raises BadScale).

    One LIST of StatefulSets per member when no size changes; the pods and the ring are asked only when one does.
    """
    conns = {c: registry[c] for c in app.member_clusters()}
    plans = scale_plans(app, live_replicas(app, await _statefulsets(conns, app.metadata.name, app.namespace)))
    if not plans:
        return plans
    observation = await observe(conns, app.metadata.name, app.namespace)
    if not any(has_runtime(p) for view in observation.values() for p in view.pods):
        return {}  # no database process (kwok's simulated pods): the rack steps set the replicas, as before
    shrinking = [p for p in plans.values() if p.size_after < p.size_before]
    if not shrinking:
        return plans
    pods = {c: ps for c, ps in database_pods(observation).items() if ps}
    reports = [r for r in await ring_reports(conns, app.namespace, pods, within=within) if r.answered]
    for plan in shrinking:
        # The datacenter's own nodes first: their view of it is the freshest.
        mine = sorted(reports, key=lambda r: r.datacenter != plan.datacenter)
        facts = None
        if mine:
            first = mine[0]
            facts = RingFacts(first.keyspaces, loads_of(plan.datacenter, first.ring), len(first.ring),
                              f"nodetool status and describecluster on {first.cluster}/{first.pod}")
        check_scale_down(app, plan, facts)
    return plans


@dataclass
class RingScaling:
    """The ``scale`` steps of one app's rollout (see the module docstring)."""

    registry: ClusterRegistry
    app: CassandraCluster
    progress: Say = _quiet
    clock: Clock = SYSTEM
    poll_interval: float = 5.0
    within: float = 60.0
    """Seconds for one question to a node (the gate's nodetool, netstats) and one API call."""
    join_timeout: float = 1800.0
    """Seconds a new node may take to be Ready and UN everywhere (bootstrap streams its ranges)."""
    command_timeout: float = 3600.0
    """Seconds one ``nodetool decommission`` or ``nodetool cleanup`` may run."""

    def __post_init__(self) -> None:
        self.gate = DatabaseGate({dc.name: dc.cluster for dc in self.app.spec.datacenters}, within=self.within)
        self.conns: Mapping[str, ClusterConnection] = {c: self.registry[c] for c in self.app.member_clusters()}

    def plan_of(self, step: Step) -> ScalePlan:
        dc = next((d for d in self.app.spec.datacenters if d.name == step.datacenter), None)
        if dc is None:
            raise ScaleError(f"{step.id}: datacenter {step.datacenter} is not in the spec of {self.app.metadata.name}")
        before = dict(step.before)
        racks = tuple(r.name for r in dc.racks)
        return ScalePlan(self.app.metadata.name, dc.name, dc.cluster, racks,
                         {r: before.get(r, 0) for r in racks}, dc.rack_sizes())

    def _say(self, node: ScaleNode, message: str) -> None:
        self.progress(node.cluster, f"scale/{node.datacenter}: {node.pod}: {message}")

    async def _observe(self) -> Observation:
        return await observe(self.conns, self.app.metadata.name, self.app.namespace)

    async def _gate(self, step: Step, observation: Observation) -> str | None:
        """None when the database gate passes; else why it waits."""
        result = await self.gate.check(GateContext(app=self.app.metadata.name, namespace=self.app.namespace,
                                                   step=Step(StepKind.RACK, step.cluster, step.datacenter),
                                                   observation=observation, now=0.0, connections=self.conns))
        return None if result.verdict is GateVerdict.PASS else f"{result.gate}: {result.reason}"

    async def _until(self, step: Step, node: ScaleNode, what: str, seconds: float,
                     ready: Callable[[Observation], str | None]) -> Observation:
        """Poll until ``ready(observation)`` (None: ready; else why not) and the database gate both pass."""
        deadline = self.clock.monotonic() + seconds
        shown = ""
        while True:
            observation = await self._observe()
            view = observation.get(node.cluster)
            if view is None or view.reach is not Reach.REACHED:
                raise ClusterUnreachable(node.cluster, view.error if view is not None else "it does not answer")
            why = ready(observation)
            if why is None:
                why = await self._gate(step, observation)
            if why is None:
                return observation
            if self.clock.monotonic() >= deadline:
                raise ScaleError(f"{node.cluster}/{node.pod}: {what} not reached within {seconds:g}s: {why}")
            if why != shown:
                self._say(node, f"waiting ({what}): {why}")
                shown = why
            await self.clock.sleep(self.poll_interval)

    def _replicas(self, observation: Observation, node: ScaleNode) -> int | None:
        for sts in observation[node.cluster].statefulsets:
            if sts["metadata"]["name"] == node.statefulset:
                return int((sts.get("spec") or {}).get("replicas", 1))
        return None

    def _pod(self, observation: Observation, node: ScaleNode) -> dict[str, object] | None:
        return next((p for p in observation[node.cluster].pods if p["metadata"]["name"] == node.pod), None)

    async def _nodetool(self, node: ScaleNode, *args: str, within: float) -> str:
        command = ("nodetool", *args)
        said = " ".join(command)
        try:
            result = await pod_exec(self.conns[node.cluster], self.app.namespace, node.pod, CASSANDRA_CONTAINER,
                                    command, within=within)
        except TimeoutError:
            raise ScaleError(f"{node.cluster}/{node.pod}: {said}: not finished within {within:g}s") from None
        except ClusterUnreachable:
            raise
        except KubeError as exc:
            raise ScaleError(f"{node.cluster}/{node.pod}: {said}: {exc}") from None
        if not result.ok:
            raise ScaleError(f"{node.cluster}/{node.pod}: {said} exited {result.exit_code}: "
                             f"{nodetool_failure(result.stdout, result.stderr)}")
        return result.stdout

    async def _add(self, step: Step, node: ScaleNode) -> bool:
        """Bootstrap ``node``; False when it was there already."""
        observation = await self._observe()
        if (self._replicas(observation, node) or 0) <= node.ordinal:
            await self._until(step, node, "the ring quiet before the node joins", self.join_timeout,
                              lambda _o: None)
            self._say(node, "joins (bootstrap)")
            await set_replicas(self.conns[node.cluster], self.app.namespace, node.statefulset, node.ordinal + 1)
            added = True
        else:
            added = False

        def joined(observation: Observation) -> str | None:
            pod = self._pod(observation, node)
            if pod is None:
                return f"pod {node.pod} not created yet"
            return None if pod_ready(pod) else f"pod {node.pod} not Ready (bootstrapping)"

        await self._until(step, node, "joined: Ready and UN in every view", self.join_timeout, joined)
        self._say(node, "UN in every view")
        return added

    async def _remove(self, step: Step, node: ScaleNode) -> bool:
        """Decommission ``node`` and lower its StatefulSet; False when that was done already."""
        observation = await self._observe()
        replicas = self._replicas(observation, node)
        did = False
        if replicas is not None and replicas > node.ordinal:
            mode = ""
            if self._pod(observation, node) is not None:
                try:
                    mode, _ = parse_netstats(await self._nodetool(node, "netstats", within=self.within))
                except ScaleError:
                    mode = ""
            if mode.upper() != "DECOMMISSIONED":
                await self._until(step, node, "the ring quiet before the node leaves", self.join_timeout,
                                  lambda _o: None)
                self._say(node, "nodetool decommission")
                await self._nodetool(node, "decommission", within=self.command_timeout)
                self._say(node, "decommissioned")
            await set_replicas(self.conns[node.cluster], self.app.namespace, node.statefulset, node.ordinal)
            did = True

        def gone(observation: Observation) -> str | None:
            return None if self._pod(observation, node) is None else f"pod {node.pod} still there"

        deadline = self.clock.monotonic() + self.join_timeout
        while (why := gone(await self._observe())) is not None:
            if self.clock.monotonic() >= deadline:
                raise ScaleError(f"{node.cluster}/{node.pod}: not removed within {self.join_timeout:g}s: {why}")
            await self.clock.sleep(self.poll_interval)
        claim = f"{CLAIM_TEMPLATE}-{node.pod}"
        if await delete_claim(self.conns[node.cluster], self.app.namespace, claim):
            self._say(node, f"volume claim {claim} deleted")
            did = True
        return did

    async def check_rack(self, step: Step, objects: Sequence[KubeObject]) -> None:
        """Refuse (:class:`ScaleError`) a rack step that would lower a StatefulSet whose pods run Cassandra: nodes
        leave a ring only through its ``scale`` step, decommissioned first, never by a write that drops their
        pods (a member that did not answer when the sizes were read, or a StatefulSet scaled up by hand)."""
        wanted = {o["metadata"]["name"]: int((o.get("spec") or {}).get("replicas", 1))
                  for o in objects if o.get("kind") == "StatefulSet"}
        if not wanted:
            return
        conn = self.conns[step.cluster]
        view = (await observe({step.cluster: conn}, self.app.metadata.name, self.app.namespace)).get(step.cluster)
        if view is None or view.reach is not Reach.REACHED:
            raise ClusterUnreachable(step.cluster, view.error if view is not None else "it does not answer")
        for sts in view.statefulsets:
            name = sts["metadata"]["name"]
            live = int((sts.get("spec") or {}).get("replicas", 1))
            if name in wanted and live > wanted[name] and any(has_runtime(p) for p in view.pods):
                raise ScaleError(
                    f"{step.cluster}: StatefulSet {self.app.namespace}/{name} runs {live} nodes and this revision "
                    f"asks for {wanted[name]}; writing it would remove nodes without decommissioning them. A "
                    f"datacenter shrinks through its scale step, planned when the rollout reads the running sizes: "
                    f"run `isthmus apply` again while every member answers")

    async def apply(self, step: Step, *, interrupted: bool = False) -> tuple[str, bool]:
        """Run the step's scaling; returns what was done (the step's note) and whether anything was written."""
        plan = self.plan_of(step)
        notes: list[str] = []
        wrote = False
        adds, removes = plan.adds(), plan.removes()
        joined = [n.pod for n in adds if await self._add(step, n)]
        wrote = wrote or bool(joined)
        if adds:
            notes.append(f"bootstrapped {', '.join(joined) or 'nothing (present already)'}")
            cleaned = await self._cleanup(step, plan.kept())
            notes.append(f"nodetool cleanup on {', '.join(cleaned) or 'no node'}")
        left = [n.pod for n in removes if await self._remove(step, n)]
        wrote = wrote or bool(left)
        if removes:
            notes.append(f"decommissioned {', '.join(left) or 'nothing (gone already)'}")
        if not adds and not removes:
            notes.append("nothing to scale")
        return f"{plan.datacenter} {plan.size_before} -> {plan.size_after}: " + "; ".join(notes), wrote

    async def _cleanup(self, step: Step, nodes: Sequence[ScaleNode]) -> list[str]:
        done = []
        for node in nodes:
            await self._until(step, node, "the ring quiet before cleanup", self.join_timeout, lambda _o: None)
            self._say(node, "nodetool cleanup")
            await self._nodetool(node, "cleanup", within=self.command_timeout)
            done.append(node.pod)
        return done


__all__ += ["CLAIM_TEMPLATE"]
