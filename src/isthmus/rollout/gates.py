"""Health gates: what must hold, everywhere, before a disruptive step may start.

A gate is anything with a ``name`` and ``async def check(ctx) -> GateResult`` (:class:`Gate`),
so a database check (schema agreement, no pending hints) can join the defaults. The built-in
gates judge one :class:`Observation` of every member, taken fresh for each evaluation (a
"healthy" read from before the previous step is never reused):

- ``reachable``: every member answered; otherwise the verdict is UNKNOWN and the rollout
  pauses until it answers (a member skipped with ``--skip-cluster`` is not asked).
- ``nodes-ready``: no node NotReady in any member: a sick node in B blocks a step in A.
- ``workloads-settled``: every StatefulSet of the app has its latest generation observed, its
  update revision current, and all replicas updated and Ready.
- ``pods-ready``: every pod of the app Ready in every member (a completed Job's pods aside).
- ``soak``: the previous disruptive step finished at least ``soakSeconds`` ago.

Verdicts: PASS; WAIT (poll again, within the progress deadline); UNKNOWN (pause: a member does
not answer); FAIL (the step must not run).
Only :func:`observe` does I/O (through ``isthmus.kube``); the gates themselves are pure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ..errors import IsthmusError
from ..kube import (
    ClusterConnection,
    ClusterUnreachable,
    Health,
    KubeObject,
    Reach,
    list_objects,
    statefulset_health,
)
from ..kube.inventory import APP_LABEL
from .steps import Step

__all__ = [
    "DEFAULT_GATES",
    "ClusterView",
    "Gate",
    "GateContext",
    "GateResult",
    "GateVerdict",
    "NodesReady",
    "Observation",
    "PodsReady",
    "Reachable",
    "Soak",
    "WorkloadsSettled",
    "evaluate",
    "failed_pods",
    "observe",
    "overall",
    "owner_set",
    "pod_ready",
]


class GateVerdict(StrEnum):
    PASS = "pass"
    WAIT = "wait"
    UNKNOWN = "unknown"
    FAIL = "fail"


_RANK = {GateVerdict.PASS: 0, GateVerdict.WAIT: 1, GateVerdict.UNKNOWN: 2, GateVerdict.FAIL: 3}


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: GateVerdict
    reason: str = ""
    clusters: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.gate}: {self.verdict.value}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class ClusterView:
    """One member as seen at one moment: the app's StatefulSets and pods, and every node."""

    cluster: str
    reach: Reach
    statefulsets: tuple[KubeObject, ...] = ()
    pods: tuple[KubeObject, ...] = ()
    nodes: tuple[KubeObject, ...] = ()
    error: str = ""


Observation = Mapping[str, ClusterView]


@dataclass(frozen=True, kw_only=True)
class GateContext:
    app: str
    namespace: str
    step: Step
    observation: Observation
    now: float
    """Monotonic seconds."""
    last_disruptive_done: float | None = None
    soak_seconds: float = 0.0
    tolerated: frozenset[tuple[str, str]] = frozenset()
    """(cluster, StatefulSet) whose unhealthy pods must not block: a rollback's not-yet-reverted racks."""
    connections: Mapping[str, ClusterConnection] = field(default_factory=dict)
    """For gates that ask more than the observation holds (a database check)."""

    def views(self) -> list[ClusterView]:
        return [self.observation[c] for c in sorted(self.observation)]


@runtime_checkable
class Gate(Protocol):
    name: str

    async def check(self, ctx: GateContext) -> GateResult: ...


def pod_ready(pod: KubeObject) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_ready(node: KubeObject) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


_BAD_WAITING = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                          "CreateContainerConfigError", "CreateContainerError"})


def failed_pods(pods: Sequence[KubeObject]) -> list[tuple[str, str]]:
    """(pod, reason) for pods that will not become Ready by waiting: unschedulable or crash/image errors."""
    out = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                out.append((name, f"unschedulable: {c.get('message', '')}".strip()))
                break
        else:
            for cs in status.get("containerStatuses") or []:
                reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason", "")
                if reason in _BAD_WAITING:
                    out.append((name, reason))
                    break
    return out


def owner_set(pod: KubeObject) -> str:
    """The StatefulSet that owns ``pod`` (empty when none does)."""
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "StatefulSet":
            return str(ref.get("name", ""))
    return ""


class Reachable:
    name = "reachable"

    async def check(self, ctx: GateContext) -> GateResult:
        silent = [v for v in ctx.views() if v.reach is not Reach.REACHED]
        if not silent:
            return GateResult(self.name, GateVerdict.PASS)
        reason = "; ".join(f"{v.cluster} is {v.reach.value}: {v.error}" for v in silent)
        verdict = GateVerdict.UNKNOWN if all(v.reach is Reach.UNREACHABLE for v in silent) else GateVerdict.WAIT
        return GateResult(self.name, verdict, reason, tuple(v.cluster for v in silent))


class NodesReady:
    name = "nodes-ready"

    async def check(self, ctx: GateContext) -> GateResult:
        sick = [(v.cluster, n["metadata"]["name"]) for v in ctx.views() for n in v.nodes if not node_ready(n)]
        if not sick:
            return GateResult(self.name, GateVerdict.PASS)
        return GateResult(self.name, GateVerdict.WAIT, "NotReady: " + ", ".join(f"{c}/{n}" for c, n in sick),
                          tuple(sorted({c for c, _ in sick})))


class WorkloadsSettled:
    name = "workloads-settled"

    async def check(self, ctx: GateContext) -> GateResult:
        busy = []
        for v in ctx.views():
            for sts in v.statefulsets:
                if (v.cluster, sts["metadata"]["name"]) in ctx.tolerated:
                    continue
                h = statefulset_health(sts)
                if h.health is not Health.HEALTHY:
                    busy.append((v.cluster, h.name, h.reason or h.health.value))
        if not busy:
            return GateResult(self.name, GateVerdict.PASS)
        return GateResult(self.name, GateVerdict.WAIT, "; ".join(f"{c}/{n}: {r}" for c, n, r in busy),
                          tuple(sorted({c for c, _, _ in busy})))


class PodsReady:
    name = "pods-ready"

    async def check(self, ctx: GateContext) -> GateResult:
        unready = [(v.cluster, p["metadata"]["name"]) for v in ctx.views() for p in v.pods
                   if not pod_ready(p) and (p.get("status") or {}).get("phase") != "Succeeded"
                   and (v.cluster, owner_set(p)) not in ctx.tolerated]
        if not unready:
            return GateResult(self.name, GateVerdict.PASS)
        return GateResult(self.name, GateVerdict.WAIT, "not Ready: " + ", ".join(f"{c}/{n}" for c, n in unready),
                          tuple(sorted({c for c, _ in unready})))


class Soak:
    name = "soak"

    async def check(self, ctx: GateContext) -> GateResult:
        if ctx.last_disruptive_done is None or ctx.soak_seconds <= 0:
            return GateResult(self.name, GateVerdict.PASS)
        left = ctx.last_disruptive_done + ctx.soak_seconds - ctx.now
        if left <= 0:
            return GateResult(self.name, GateVerdict.PASS)
        return GateResult(self.name, GateVerdict.WAIT, f"soaking {left:.0f}s more")


DEFAULT_GATES: tuple[Gate, ...] = (Reachable(), NodesReady(), WorkloadsSettled(), PodsReady(), Soak())


async def evaluate(gates: Sequence[Gate], ctx: GateContext) -> list[GateResult]:
    return [await g.check(ctx) for g in gates]


def overall(results: Sequence[GateResult]) -> GateVerdict:
    return max((r.verdict for r in results), key=_RANK.__getitem__, default=GateVerdict.PASS)


async def observe_one(conn: ClusterConnection, app: str, namespace: str) -> ClusterView:
    labels = {APP_LABEL: app}
    try:
        sts, pods, nodes = await asyncio.gather(
            list_objects(conn, "apps/v1", "StatefulSet", namespace=namespace, labels=labels),
            list_objects(conn, "v1", "Pod", namespace=namespace, labels=labels),
            list_objects(conn, "v1", "Node"))
    except ClusterUnreachable as exc:
        return ClusterView(conn.name, Reach.UNREACHABLE, error=exc.reason)
    except IsthmusError as exc:  # an answer we cannot use (403, 500): not Unknown, but not judgeable either
        return ClusterView(conn.name, Reach.FAILED, error=str(exc))
    return ClusterView(conn.name, Reach.REACHED, tuple(sts), tuple(pods), tuple(nodes))


async def observe(connections: Mapping[str, ClusterConnection], app: str, namespace: str) -> dict[str, ClusterView]:
    views = await asyncio.gather(*(observe_one(c, app, namespace) for c in connections.values()))
    return {v.cluster: v for v in views}
