"""A rack's convergence: after its StatefulSet is written, wait until the new generation is observed and
all its pods are updated and Ready.

The wait fails early once more pods of the revision just written have failed (unschedulable,
crash or image errors: :func:`.gates.failed_pods`) than the failure budget allows, and fails at
the progress deadline otherwise. In a rollback, a pod stuck on the revision being undone (not
Ready, never going to be) blocks the StatefulSet controller; it is deleted so the rack can come
back. Time comes from an injected :class:`~.clock.Clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..kube import ClusterConnection, Health, KubeObject, delete_record, get_record, list_objects, statefulset_health
from .clock import SYSTEM, Clock
from .gates import failed_pods, pod_ready
from .results import EngineStats, StepFailed
from .steps import DC_LABEL, RACK_LABEL, Step

__all__ = ["REVISION_HASH_LABEL", "Convergence"]

REVISION_HASH_LABEL = "controller-revision-hash"


def _never_stop() -> None:
    return None


def _say_nothing(_cluster: str, _message: str, _log: bool) -> None:
    return None


@dataclass(kw_only=True)
class Convergence:
    """Waits for the racks of one run."""

    app: str
    namespace: str
    poll_interval: float
    progress_deadline: float
    failure_budget: int = 0
    rollback: bool = False
    """The run rolls a previous revision back: pods stuck on the revision being undone are deleted."""
    clock: Clock = SYSTEM
    stats: EngineStats = field(default_factory=EngineStats)
    say: Callable[[str, str, bool], None] = _say_nothing
    check_stop: Callable[[], None] = _never_stop

    async def wait(self, step: Step, conn: ClusterConnection) -> None:
        name = f"{self.app}-{step.datacenter}-{step.rack}"
        clock = self.clock
        started = clock.monotonic()
        deadline = started + self.progress_deadline
        generation = 0
        labels = {"isthmus.dev/app": self.app, DC_LABEL: step.datacenter, RACK_LABEL: step.rack}
        try:
            while True:
                self.check_stop()
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
                if self.rollback and observed >= generation:
                    gone = await self._unstick(conn, sts, pods)
                    judged = [p for p in judged if p["metadata"]["name"] not in gone]
                bad = failed_pods(judged)
                if len(bad) > self.failure_budget:
                    listed = ", ".join(f"{p} ({r})" for p, r in bad)
                    raise StepFailed(step, f"{len(bad)} pod(s) failed, over the failure budget of "
                                           f"{self.failure_budget}: {listed}")
                if clock.monotonic() > deadline:
                    raise StepFailed(step, f"rack not updated and Ready within the progress deadline of "
                                           f"{self.progress_deadline:g}s: {health.reason}")
                self.say(step.cluster, f"{step.id}: {health.reason or health.health.value}", False)
                await clock.sleep(self.poll_interval)
        finally:
            self.stats.converge_seconds += clock.monotonic() - started

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
                self.say(conn.name, f"deleting pod {pod['metadata']['name']} stuck on a bad revision", True)
                await delete_record(conn, "v1", "Pod", pod["metadata"]["name"], self.namespace)
                gone.add(pod["metadata"]["name"])
        return gone
