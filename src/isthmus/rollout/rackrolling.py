"""Rolling one rack's pods: a node at a time, or the whole rack at once when the ring's replication proves it
safe (:mod:`.restartplan`); and the StatefulSet settings that allow the latter.

A rack's StatefulSet manages its pods in parallel (``podManagementPolicy: Parallel``), so pods deleted
together start together. That has three consequences, each handled here, in a rack step that rolls pods
(after the gates passed, under the app's lock):

1. **A live StatefulSet still ``OrderedReady``** (made before this version) cannot change the field: it is
   recreated (:func:`isthmus.kube.recreate_orphaning`: deleted with ``propagationPolicy: Orphan``, created
   anew with the same selector and template, so its pods and claims are adopted and none restarts). A crash
   between the delete and the create is resumed by the step's re-run, which finds no StatefulSet and creates
   it with as many replicas as the rack has pods (never fewer: the controller would delete the others).
2. **Nodes still join one at a time.** A new StatefulSet, or one asked for more replicas, would start every
   new pod at once, and Cassandra refuses concurrent bootstraps. So the replicas are raised one at a time,
   each step waited on until the rack is Ready (:func:`joining_steps`), before the desired count is written.
   **The first node of every rack first.** Cassandra allocates a joining node's tokens for a replication
   factor of 3 (``allocate_tokens_for_local_replication_factor``, :mod:`isthmus.render.cassandra_config`) and
   refuses when its datacenter then counts 2 racks: "the first 3 nodes to start [must be] from different
   racks". So in a datacenter of 3 racks or more that will have a rack of more than one node, a rack step first
   creates every rack StatefulSet of the datacenter that does not exist yet with one replica, in the spec's
   order, each waited on until its pod is Ready (:func:`first_nodes`); the racks then grow in their own steps.
3. **A restart.** Once the new template is written, the StatefulSet controller replaces the pods itself, one
   at a time (``RollingUpdate`` never takes more than one pod down). That is the "one node at a time" mode.
   When the datacenter may restart a rack at once, every pod of the rack not on the new revision is deleted
   together (:func:`restart_rack_at_once`) and the controller starts them again, in parallel, on the new
   revision. Either way the rack is then waited on until updated and Ready, and the next rack waits for the
   gates (the database's included) first.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from ..kube import (
    HASH_ANNOTATION,
    ClusterConnection,
    KubeObject,
    delete_record,
    get_record,
    list_objects,
    recreate_orphaning,
)
from ..spec import CassandraCluster
from .clock import SYSTEM, Clock
from .dbgate import DatabaseGate
from .restartplan import RestartChoice, choose_restarts
from .steps import DC_LABEL, RACK_LABEL, Step

__all__ = ["ORDERED", "PARALLEL", "RackRolling", "first_nodes", "joining_steps", "needs_recreate", "outdated_pods",
           "restart_rack_at_once"]

PARALLEL = "Parallel"
ORDERED = "OrderedReady"
REVISION_HASH_LABEL = "controller-revision-hash"

Say = Callable[[str], None]


def _policy(sts: KubeObject) -> str:
    return str((sts.get("spec") or {}).get("podManagementPolicy") or ORDERED)


def needs_recreate(live: KubeObject | None, desired: KubeObject) -> bool:
    """The live StatefulSet manages its pods otherwise than desired (a field it cannot change). Pure."""
    return live is not None and _policy(live) != _policy(desired)


def joining_steps(live: KubeObject | None, desired: KubeObject, pods: int) -> list[int]:
    """The replica counts to write, each waited on until Ready, before the desired one, so that new nodes join
    one at a time (empty: write the desired count at once). ``pods``: the rack's pods now (orphans of a
    StatefulSet being recreated count: they are adopted, not started). Pure."""
    if _policy(desired) != PARALLEL:
        return []  # OrderedReady starts them one at a time itself
    want = int(desired["spec"].get("replicas", 1))
    have = int((live.get("spec") or {}).get("replicas", 0)) if live is not None else pods
    return list(range(max(have + 1, 1), want))


def first_nodes(siblings: Sequence[KubeObject], live: Sequence[str]) -> list[str]:
    """The rack StatefulSets (of one datacenter, ``siblings`` in the spec's order) to create with one replica
    before any rack grows past one node, by name; ``live``: the datacenter's StatefulSets that exist. Empty when
    the datacenter has fewer than 3 racks or no rack of more than one node. Pure."""
    sets = [s for s in siblings if s.get("kind") == "StatefulSet"]
    if len(sets) < 3 or all(int(s["spec"].get("replicas", 1)) <= 1 for s in sets):
        return []
    return [s["metadata"]["name"] for s in sets
            if s["metadata"]["name"] not in live and int(s["spec"].get("replicas", 1)) >= 1]


def outdated_pods(sts: KubeObject, pods: Sequence[KubeObject]) -> list[str]:
    """The pods of ``sts`` not on its update revision and not already going, by name. Pure."""
    target = (sts.get("status") or {}).get("updateRevision")
    if not target:
        return []
    return sorted(p["metadata"]["name"] for p in pods
                  if (p["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL) != target
                  and not p["metadata"].get("deletionTimestamp"))


def _with_replicas(objects: Sequence[KubeObject], replicas: int) -> list[KubeObject]:
    out = []
    for obj in objects:
        if obj.get("kind") == "StatefulSet":
            obj = copy.deepcopy(obj)
            obj["spec"]["replicas"] = replicas
            # Not the desired content: another hash, so that the desired count's write is not taken as held.
            notes = obj["metadata"].setdefault("annotations", {})
            notes[HASH_ANNOTATION] = f"{notes.get(HASH_ANNOTATION, '')}-joining-{replicas}"
        out.append(obj)
    return out


async def _observed(conn: ClusterConnection, name: str, namespace: str, *, clock: Clock, within: float,
                    poll: float) -> KubeObject:
    """The StatefulSet once its controller has seen its latest generation (so its update revision is current)."""
    deadline = clock.monotonic() + within
    while True:
        sts = await get_record(conn, "apps/v1", "StatefulSet", name, namespace)
        if sts is None:
            raise LookupError(f"StatefulSet {namespace}/{name} vanished")
        status = sts.get("status") or {}
        if int(status.get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 1)):
            return sts
        if clock.monotonic() > deadline:
            raise TimeoutError(f"the controller did not observe StatefulSet {namespace}/{name} within {within:g}s")
        await clock.sleep(poll)


async def _ready_one(conn: ClusterConnection, name: str, namespace: str, *, clock: Clock, within: float,
                     poll: float) -> None:
    """Until StatefulSet ``name`` has a Ready pod (or TimeoutError)."""
    deadline = clock.monotonic() + within
    while True:
        sts = await get_record(conn, "apps/v1", "StatefulSet", name, namespace)
        if sts is not None and int((sts.get("status") or {}).get("readyReplicas", 0)) >= 1:
            return
        if clock.monotonic() > deadline:
            raise TimeoutError(f"StatefulSet {namespace}/{name}: no Ready pod within {within:g}s")
        await clock.sleep(poll)


async def restart_rack_at_once(conn: ClusterConnection, name: str, namespace: str, labels: Mapping[str, str], *,
                               clock: Clock = SYSTEM, within: float = 60.0, poll: float = 0.5) -> list[str]:
    """Delete every pod of StatefulSet ``name`` not on its update revision, together; their names."""
    sts = await _observed(conn, name, namespace, clock=clock, within=within, poll=poll)
    pods = await list_objects(conn, "v1", "Pod", namespace=namespace, labels=labels)
    going = outdated_pods(sts, pods)
    for pod in going:
        await delete_record(conn, "v1", "Pod", pod, namespace)
    return going


@dataclass
class RackRolling:
    """How the racks of one Cassandra rollout roll (see the module docstring); the engine's ``racks``."""

    app: CassandraCluster
    gate: DatabaseGate
    clock: Clock = SYSTEM
    poll: float = 0.5
    first_within: float = 900.0
    """Seconds a rack's first node may take to be Ready when the rack is created ahead of its step."""

    def choice(self, datacenter: str) -> RestartChoice:
        """The datacenter's restart mode, from the ring as the database gate last saw it (just before the step)."""
        for choice in choose_restarts(self.app, self.gate.last_reports):
            if choice.datacenter == datacenter:
                return choice
        return RestartChoice(datacenter, False, "the datacenter is not in the spec")

    def _labels(self, step: Step) -> dict[str, str]:
        return {"isthmus.dev/app": self.app.metadata.name, DC_LABEL: step.datacenter, RACK_LABEL: step.rack}

    async def roll(self, step: Step, conn: ClusterConnection, objects: list[KubeObject], *,
                   write: Callable[[list[KubeObject]], Awaitable[None]], converge: Callable[[], Awaitable[None]],
                   say: Say, siblings: Sequence[KubeObject] = ()) -> str:
        """Write the rack's StatefulSet and wait for it, as the module docstring says; what was done (a note)."""
        namespace = self.app.namespace
        desired = next((o for o in objects if o.get("kind") == "StatefulSet"), None)
        if desired is None:
            await write(objects)
            await converge()
            return ""
        name = desired["metadata"]["name"]
        notes: list[str] = []
        live = await get_record(conn, "apps/v1", "StatefulSet", name, namespace)
        if needs_recreate(live, desired):
            assert live is not None
            say(f"recreating StatefulSet {name} to manage its pods {_policy(desired)} (its pods stay)")
            kept = copy.deepcopy(desired)
            kept["spec"]["replicas"] = int(live["spec"].get("replicas", 1))
            # The pods are adopted as they are; the write below brings the new template, if any (so the recreated
            # object carries the live one's content hash, not the desired one's, or that write would be skipped).
            kept["spec"]["template"] = live["spec"]["template"]
            hashed = (live["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
            kept["metadata"]["annotations"] = {k: v for k, v in (kept["metadata"].get("annotations") or {}).items()
                                               if k != HASH_ANNOTATION} | ({HASH_ANNOTATION: hashed} if hashed else {})
            await recreate_orphaning(conn, kept)
            notes.append(f"recreated ({_policy(live)} -> {_policy(desired)}, pods adopted)")
            live = await get_record(conn, "apps/v1", "StatefulSet", name, namespace)
        if siblings:
            created = await self._first_nodes(step, conn, siblings, write=write, say=say)
            if created:
                notes.append(f"first node of {', '.join(created)} first (token allocation)")
                live = await get_record(conn, "apps/v1", "StatefulSet", name, namespace)
        pods = await list_objects(conn, "v1", "Pod", namespace=namespace, labels=self._labels(step)) \
            if live is None else []
        for replicas in joining_steps(live, desired, len(pods)):
            say(f"{replicas} of {desired['spec']['replicas']} node(s): one joins at a time")
            await write(_with_replicas(objects, replicas))
            await converge()
        await write(objects)
        choice = self.choice(step.datacenter)
        if choice.rack_at_once and live is not None:
            going = await restart_rack_at_once(conn, name, namespace, self._labels(step), clock=self.clock,
                                               poll=self.poll)
            if going:
                say(f"restarting the rack at once ({', '.join(going)}): {choice.reason}")
                notes.append(f"a rack at once: {', '.join(going)}")
        elif live is not None:
            notes.append(f"one node at a time ({choice.reason})")
        await converge()
        return "; ".join(notes)

    async def _first_nodes(self, step: Step, conn: ClusterConnection, siblings: Sequence[KubeObject], *,
                           write: Callable[[list[KubeObject]], Awaitable[None]], say: Say) -> list[str]:
        if not first_nodes(siblings, []):
            return []  # fewer than 3 racks, or one node per rack: nothing to ask the member
        namespace = self.app.namespace
        labels = {"isthmus.dev/app": self.app.metadata.name, DC_LABEL: step.datacenter}
        live = [o["metadata"]["name"] for o in await list_objects(conn, "apps/v1", "StatefulSet",
                                                                   namespace=namespace, labels=labels)]
        wanted = first_nodes(siblings, live)
        by_name = {s["metadata"]["name"]: s for s in siblings}
        for name in wanted:
            say(f"{name}: its first node before any rack of {step.datacenter} grows (the first 3 nodes of a "
                "datacenter come from 3 racks)")
            await write(_with_replicas([by_name[name]], 1))
            await _ready_one(conn, name, namespace, clock=self.clock, within=self.first_within, poll=self.poll)
        return wanted
