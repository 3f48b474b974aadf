"""What one run of the engine reports: the state it left, what it did to each object and each member,
where the time went, and its own bookkeeping figures. Pure values.

A member's outcome (:class:`MemberOutcome`) is judged from its own steps alone, so one member whose
step failed is reported failed and the others as they are: rolled out, not reached yet, paused on
because it did not answer, or skipped by override.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..errors import IsthmusError
from ..kube import ApplyAction, ObjectRef
from .clock import SYSTEM, Clock
from .progress import Outcome, RolloutPhase, RolloutState
from .steps import Step

__all__ = ["EngineStats", "MemberOutcome", "MemberResult", "RolloutResult", "StepFailed", "Timeline",
           "member_results"]


class StepFailed(IsthmusError):
    def __init__(self, step: Step, reason: str) -> None:
        self.step, self.reason = step, reason
        super().__init__(f"step {step.id} in {step.cluster} failed: {reason}")


class Timeline:
    """When each phase of a rollout ended, in seconds since it started: where the time went."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self.started = clock.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, label: str) -> None:
        self.marks.setdefault(label, round(self.clock.monotonic() - self.started, 4))

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.3f}s" for k, v in self.marks.items())


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
    changed_only: int = 0
    """Members whose ``prepare`` wrote only what changed since the baseline, without reading first."""

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in vars(self).items()}


class MemberOutcome(StrEnum):
    ROLLED_OUT = "RolledOut"
    """Every step of the member is done (or it held everything already)."""
    FAILED = "Failed"
    """A step of the member failed."""
    PAUSED = "Paused"
    """The run stopped at a step of the member (it did not answer, or the run ran out of time)."""
    PENDING = "Pending"
    """The run stopped before it got to the member's remaining steps (nothing wrong with it)."""
    SKIPPED = "Skipped"
    """Skipped by override (``--skip-cluster``)."""


@dataclass(frozen=True)
class MemberResult:
    cluster: str
    outcome: MemberOutcome
    reason: str = ""
    """Why it is not rolled out (the failed step's note, where the run stopped); empty when it is."""
    step: str = ""
    """The step it failed or stopped at, or its next one."""


def member_results(state: RolloutState, members: Sequence[str]) -> dict[str, MemberResult]:
    """Each member's outcome, judged from its own steps in ``state`` (pure)."""
    out = {}
    for member in members:
        mine = [s for s in state.plan.steps if s.cluster == member]
        records = [(s, state.steps[s.id]) for s in mine if s.id in state.steps]
        failed = next(((s, r) for s, r in records if r.outcome is Outcome.FAILED), None)
        open_ = [(s, r) for s, r in records if r.outcome not in (Outcome.DONE, Outcome.SKIPPED)]
        if failed is not None:
            out[member] = MemberResult(member, MemberOutcome.FAILED, failed[1].note, failed[0].id)
        elif records and all(r.outcome is Outcome.SKIPPED for _, r in records):
            out[member] = MemberResult(member, MemberOutcome.SKIPPED, "skipped by --skip-cluster")
        elif not open_:
            out[member] = MemberResult(member, MemberOutcome.ROLLED_OUT)
        elif state.current in {s.id for s, _ in open_} or any(r.outcome is Outcome.RUNNING for _, r in open_):
            out[member] = MemberResult(member, MemberOutcome.PAUSED, state.message, open_[0][0].id)
        else:
            out[member] = MemberResult(member, MemberOutcome.PENDING, "not reached yet", open_[0][0].id)
    return out


@dataclass
class RolloutResult:
    state: RolloutState
    reports: dict[str, dict[ObjectRef, ApplyAction]] = field(default_factory=dict)
    stats: EngineStats = field(default_factory=EngineStats)
    notes: list[str] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)

    @property
    def phase(self) -> RolloutPhase:
        return self.state.phase

    @property
    def ok(self) -> bool:
        return self.state.phase is RolloutPhase.SUCCEEDED

    def members(self) -> dict[str, MemberResult]:
        """Per member of the plan, how far the run got there (see :func:`member_results`)."""
        return member_results(self.state, sorted({s.cluster for s in self.state.plan.steps}))

    def counts(self, cluster: str) -> dict[ApplyAction, int]:
        out = dict.fromkeys(ApplyAction, 0)
        for action in self.reports.get(cluster, {}).values():
            out[action] += 1
        return out
