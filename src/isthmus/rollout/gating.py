"""The gate loop: before a disruptive step, ask the gates (:mod:`.gates`) until they pass.

Every evaluation observes every member afresh. PASS lets the step start. WAIT polls again, and
fails the step once the gates have waited longer than the progress deadline; the first WAIT
also dry-runs the step's own write, so a field conflict is said at once rather than after the
wait. UNKNOWN (a member does not answer) pauses: the pause is recorded in the rollout state and
does not count against the deadline, for as long as it lasts. FAIL fails the step.

Time comes from an injected :class:`~.clock.Clock`; the observation and the dry run are injected
too (defaults: :func:`.gates.observe` and :func:`isthmus.kube.diff_objects`), so the loop is
tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..kube import ClusterConnection, Conflict, KubeObject, NotFound, diff_objects
from ..kube.objects import content_hash
from .clock import SYSTEM, Clock
from .gates import Gate, GateContext, GateVerdict, Observation, evaluate, observe, overall
from .results import EngineStats, StepFailed
from .steps import Step, StepKind

__all__ = ["Gatekeeper", "unreverted"]

Observe = Callable[[Mapping[str, ClusterConnection], str, str], Awaitable[Observation]]
Preflight = Callable[[Step, ClusterConnection, Sequence[KubeObject]], Awaitable[None]]


def _say_nothing(_cluster: str, _message: str, _log: bool) -> None:
    return None


async def _no_pause(_message: str) -> None:
    return None


def _never_stop() -> None:
    return None


@dataclass(kw_only=True)
class Gatekeeper:
    """Asks the gates before the disruptive steps of one run."""

    app: str
    namespace: str
    gates: tuple[Gate, ...]
    poll_interval: float
    progress_deadline: float
    soak_seconds: float = 0.0
    force_conflicts: bool = False
    clock: Clock = SYSTEM
    stats: EngineStats = field(default_factory=EngineStats)
    say: Callable[[str, str, bool], None] = _say_nothing
    """(cluster, message, log): show a message, and with ``log`` keep it in the state's event log."""
    paused: Callable[[str], Awaitable[None]] = _no_pause
    """A member does not answer: record the message in the state (and write it)."""
    check_stop: Callable[[], None] = _never_stop
    """Raises when the run must stop (another lane failed, the run's timeout)."""
    observe: Observe = observe
    preflight: Preflight | None = None
    tolerated: frozenset[tuple[str, str]] = frozenset()
    """(cluster, StatefulSet) whose unhealthy pods do not block (a rollback's racks not yet reverted)."""
    last_disruptive: float | None = None
    """When (monotonic) the last disruptive step finished, for the soak gate."""

    async def wait(self, step: Step, conn: ClusterConnection, objects: Sequence[KubeObject],
                   connections: Mapping[str, ClusterConnection]) -> None:
        """Return once the gates pass for ``step``; raise :class:`StepFailed` when they refuse or time out."""
        clock = self.clock
        started = clock.monotonic()
        unknown_for = 0.0
        shown = ""
        checked = False
        # The rack this step rewrites may itself be unhealthy (hand-scaled, broken): rewriting it is no worse.
        own = frozenset({(step.cluster, f"{self.app}-{step.datacenter}-{step.rack}")}) \
            if step.kind is StepKind.RACK else frozenset(
                (step.cluster, o["metadata"]["name"]) for o in objects if o.get("kind") == "StatefulSet") \
            if step.kind is StepKind.RELEASE else frozenset()
        try:
            while True:
                self.check_stop()
                t0 = clock.monotonic()
                observation = await self.observe(connections, self.app, self.namespace)
                ctx = GateContext(app=self.app, namespace=self.namespace, step=step, observation=observation,
                                  now=clock.monotonic(), last_disruptive_done=self.last_disruptive,
                                  soak_seconds=self.soak_seconds, tolerated=self.tolerated | own,
                                  connections=connections)
                results = await evaluate(self.gates, ctx)
                self.stats.gate_evaluations += 1
                verdict = overall(results)
                if verdict is GateVerdict.PASS:
                    if shown:
                        self.say(step.cluster, f"{step.id}: gates pass, continuing", True)
                    return
                why = "; ".join(str(r) for r in results if r.verdict is not GateVerdict.PASS)
                if verdict is GateVerdict.FAIL:
                    raise StepFailed(step, f"gate refused: {why}")
                if verdict is GateVerdict.UNKNOWN:
                    message = f"paused before {step.id}: {why}; continuing when it answers"
                    unknown_for += clock.monotonic() - t0 + self.poll_interval
                else:
                    message = f"waiting before {step.id}: {why}"
                    if not checked:
                        checked = True
                        await (self.preflight or self._dry_run)(step, conn, objects)
                    waited = clock.monotonic() - started - unknown_for
                    if waited > self.progress_deadline:
                        raise StepFailed(step, f"gates not satisfied within {self.progress_deadline:g}s: {why}")
                if message != shown:
                    self.say(step.cluster, message, verdict is GateVerdict.UNKNOWN or not shown)
                    shown = message
                    if verdict is GateVerdict.UNKNOWN:
                        await self.paused(message)
                await clock.sleep(self.poll_interval)
        finally:
            self.stats.gate_seconds += clock.monotonic() - started

    async def _dry_run(self, step: Step, conn: ClusterConnection, objects: Sequence[KubeObject]) -> None:
        """While the gates wait: would the step's own write be refused (a field conflict)? Then say so now."""
        try:
            await diff_objects(conn, objects, force_conflicts=self.force_conflicts)
        except NotFound:  # its namespace is not there yet (a chart's first release): nothing to conflict with
            return
        except Conflict as exc:
            raise StepFailed(step, f"{exc.what}: {exc.server_message}; re-run with --force-conflicts to take "
                                   "the fields over") from exc


def unreverted(observation: Observation, wanted: Mapping[str, Sequence[KubeObject]]) -> frozenset[tuple[str, str]]:
    """Rollback: (cluster, StatefulSet) whose live content differs from the target (their pods may be broken)."""
    out = set()
    for cluster, view in observation.items():
        hashes = {o["metadata"]["name"]: content_hash(o) for o in wanted.get(cluster, ())
                  if o.get("kind") == "StatefulSet"}
        for sts in view.statefulsets:
            name = sts["metadata"]["name"]
            if content_hash(sts) != hashes.get(name):
                out.add((cluster, name))
    return frozenset(out)
