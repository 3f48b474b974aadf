"""The persisted state of an app's current (or last) rollout, in the control-plane cluster.

ConfigMap ``isthmus-rollout-<app>`` in ``isthmus-system`` holds one JSON document: which
revision is being rolled out (and from which), the plan, each step's outcome, the phase, the
holder and its fencing token, the clusters skipped by override, and a short event log. It is
written at every step boundary, so a killed process leaves behind exactly which steps are
done; ``rollout resume`` re-runs the rest (a step caught mid-way is re-run, which writes
nothing it already wrote: applying unchanged objects is a no-op).

Writes are guarded by the fencing token: a save reads the stored state and refuses
(:class:`~.locking.Fenced`) when a newer holder's token is there, then writes by
compare-and-swap on the ``resourceVersion`` it read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..kube import ClusterConnection, KubeObject
from ._objects import (
    CONTROL_NAMESPACE,
    StaleWrite,
    bookkeeping_labels,
    create_object,
    ensure_namespace,
    get_object,
    replace_object,
)
from .locking import Fenced
from .steps import Plan

__all__ = ["Outcome", "Phase", "ProgressStore", "RolloutState", "StepRecord", "state_name"]

LOG_KEEP = 200


class Phase(StrEnum):
    RUNNING = "Running"
    PAUSED = "Paused"
    FAILED = "Failed"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"

    @property
    def finished(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.ROLLED_BACK)


class Outcome(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DONE = "Done"
    FAILED = "Failed"
    SKIPPED = "Skipped"


@dataclass
class StepRecord:
    outcome: Outcome = Outcome.PENDING
    started: float | None = None
    finished: float | None = None
    note: str = ""
    writes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "started": self.started, "finished": self.finished,
                "note": self.note, "writes": self.writes}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepRecord:
        return cls(Outcome(d["outcome"]), d.get("started"), d.get("finished"), str(d.get("note", "")),
                   int(d.get("writes", 0)))


@dataclass
class RolloutState:
    """Mutable on purpose: the engine updates it and saves it at every step boundary."""

    app: str
    kind: str
    """``apply`` or ``rollback``."""
    revision: int
    previous: int | None
    plan: Plan
    steps: dict[str, StepRecord]
    phase: Phase = Phase.RUNNING
    message: str = ""
    holder: str = ""
    token: int = 0
    skipped: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    log: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, *, app: str, kind: str, revision: int, previous: int | None, plan: Plan) -> RolloutState:
        return cls(app, kind, revision, previous, plan, {s.id: StepRecord() for s in plan.steps})

    def record(self, step_id: str) -> StepRecord:
        return self.steps.setdefault(step_id, StepRecord())

    def event(self, message: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {message}")
        del self.log[:-LOG_KEEP]

    @property
    def done_steps(self) -> int:
        return sum(1 for r in self.steps.values() if r.outcome in (Outcome.DONE, Outcome.SKIPPED))

    @property
    def current(self) -> str | None:
        for s in self.plan.steps:
            if self.steps[s.id].outcome not in (Outcome.DONE, Outcome.SKIPPED):
                return s.id
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "kind": self.kind, "revision": self.revision, "previous": self.previous,
                "phase": self.phase.value, "message": self.message, "holder": self.holder, "token": self.token,
                "skipped": self.skipped, "created": self.created, "updated": self.updated,
                "current": self.current, "plan": self.plan.to_dict(),
                "steps": {k: v.to_dict() for k, v in self.steps.items()}, "log": self.log}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutState:
        return cls(str(d["app"]), str(d["kind"]), int(d["revision"]), d.get("previous"), Plan.from_dict(d["plan"]),
                   {k: StepRecord.from_dict(v) for k, v in d["steps"].items()}, Phase(d["phase"]),
                   str(d.get("message", "")), str(d.get("holder", "")), int(d.get("token", 0)),
                   list(d.get("skipped", [])), float(d.get("created", 0)), float(d.get("updated", 0)),
                   list(d.get("log", [])))


def state_name(app: str) -> str:
    return f"isthmus-rollout-{app}"


class ProgressStore:
    """Loads and saves the rollout state of one app in the control-plane cluster ``conn``."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        self.conn, self.app = conn, app
        self.saves = 0
        self._lock = asyncio.Lock()

    async def _live(self) -> KubeObject | None:
        return await get_object(self.conn, "v1", "ConfigMap", state_name(self.app), CONTROL_NAMESPACE)

    async def load(self) -> RolloutState | None:
        live = await self._live()
        raw = ((live or {}).get("data") or {}).get("state")
        return RolloutState.from_dict(json.loads(raw)) if raw else None

    async def save(self, state: RolloutState) -> None:
        """Write ``state`` unless a holder with a newer fencing token has written since (:class:`Fenced`)."""
        async with self._lock:
            state.updated = time.time()
            while True:
                live = await self._live()
                if live is None:
                    await ensure_namespace(self.conn, CONTROL_NAMESPACE)
                else:
                    raw = (live.get("data") or {}).get("state")
                    stored = int(json.loads(raw).get("token", 0)) if raw else 0
                    if stored > state.token:
                        raise Fenced(self.conn.name, self.app, state.token, stored)
                obj: KubeObject = {
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": state_name(self.app), "namespace": CONTROL_NAMESPACE,
                                 "labels": bookkeeping_labels(self.app, "rollout-state")},
                    "data": {"state": json.dumps(state.to_dict(), indent=1)},
                }
                try:
                    if live is None:
                        await create_object(self.conn, obj)
                    else:
                        obj["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                        await replace_object(self.conn, obj)
                except StaleWrite:
                    continue
                self.saves += 1
                return
