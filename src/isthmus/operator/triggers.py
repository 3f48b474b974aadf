"""What a trigger needs done: a drift check, a rollout, a status refresh. Pure, no kopf, no I/O.

- A **refresh** (the timer's inline call, ``apply=False``) only reads health and writes the status.
- **kopf** (create, update, resume) and the **timer's background run** roll out a generation that
  has not reached every member yet. Once it has (the app is *settled*), the same triggers run a
  drift check of every member instead, and roll out again only to correct what the check found
  (never under ``spec.rollout.drift: report``).
- A **watch** saw someone else change a member's object: a drift check of just the members it
  saw, if the app is settled; otherwise nothing (rolling out is kopf's and the timer's job).

Every rollout that follows goes through the same call into the engine
(:meth:`.reconciling.Reconciler` ``_apply``, i.e. :func:`isthmus.rollout.apply_rollout`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["RolloutNeed", "Trigger", "Work", "rollout_due", "work_for"]


class Trigger(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    RESUME = "resume"
    TIMER = "timer"
    WATCH = "watch"
    """A watch saw a member's object changed by someone else: a drift check of those members."""
    DELETE = "delete"


class RolloutNeed(StrEnum):
    NONE = "none"
    ALWAYS = "always"
    """The generation has not reached every member yet."""
    IF_DRIFTED = "if-drifted"
    """Only if the drift check found something (corrected with the same revision)."""


@dataclass(frozen=True)
class Work:
    apply: bool
    """This reconcile may write to members (else it only refreshes the status)."""
    drift_check: bool = False
    only: frozenset[str] | None = None
    """The members to check for drift (None: every member)."""
    rollout: RolloutNeed = RolloutNeed.NONE


def work_for(trigger: Trigger, *, apply: bool, settled: bool, report_only: bool,
             suspects: Iterable[str] = ()) -> Work:
    """What one reconcile does; ``settled``: the current generation already reached every member."""
    if not apply or (trigger is Trigger.WATCH and not settled):
        return Work(apply=False)
    if not settled:
        return Work(apply=True, rollout=RolloutNeed.ALWAYS)
    only = frozenset(suspects) if trigger is Trigger.WATCH else None
    return Work(apply=True, drift_check=True, only=only,
                rollout=RolloutNeed.NONE if report_only else RolloutNeed.IF_DRIFTED)


def rollout_due(*, attempted: int | None, applied: int | None, generation: int | None, since: float,
                resync_interval: float, retry_interval: float) -> bool:
    """Whether the timer starts a background reconcile: a generation not attempted yet, the periodic resync
    (a drift check when settled), or a retry of a generation whose rollout did not reach every member."""
    return attempted != generation or since >= resync_interval or (applied != generation and since >= retry_interval)
