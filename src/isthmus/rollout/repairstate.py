"""The progress of an app's repairs, in the control plane: which nodes finished, and the repairs before.

Owns: :class:`RepairState` (the current or last repair: its plan, a :class:`~.progress.StepRecord` per
node, phase, holder and fencing token, a short log, and the summaries of the repairs before it, newest
last) and :class:`RepairStore`, which keeps it in ConfigMap ``isthmus-repair-<app>`` of ``isthmus-system``
through the rollout state's fenced compare-and-swap (:class:`~.progress.FencedDocument`): a holder whose
token is older than the stored one cannot write. :func:`repair_history` is what ``isthmus history`` lists.

Must not: run anything (that is :mod:`.repairing`'s).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..kube import ClusterConnection
from .progress import FencedDocument, Outcome, RolloutPhase, StepRecord
from .repairplan import RepairPlan

__all__ = ["RepairState", "RepairStore", "RepairSummary", "repair_history", "repair_state_name"]

PAST_KEEP = 50
LOG_KEEP = 200


def repair_state_name(app: str) -> str:
    return f"isthmus-repair-{app}"


@dataclass(frozen=True)
class RepairSummary:
    """One repair as ``isthmus history`` lists it."""

    number: int
    phase: RolloutPhase
    keyspaces: tuple[str, ...]
    datacenters: tuple[str, ...]
    done: int
    total: int
    holder: str
    created: float
    updated: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "phase": self.phase.value, "keyspaces": list(self.keyspaces),
                "datacenters": list(self.datacenters), "done": self.done, "total": self.total,
                "holder": self.holder, "created": self.created, "updated": self.updated, "message": self.message}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairSummary:
        return cls(int(d["number"]), RolloutPhase(d["phase"]), tuple(d.get("keyspaces", ())),
                   tuple(d.get("datacenters", ())), int(d.get("done", 0)), int(d.get("total", 0)),
                   str(d.get("holder", "")), float(d.get("created", 0)), float(d.get("updated", 0)),
                   str(d.get("message", "")))


@dataclass
class RepairState:
    """The current (or last) repair and its nodes' records; mutable, saved at every node boundary."""

    app: str
    number: int
    plan: RepairPlan
    nodes: dict[str, StepRecord]
    phase: RolloutPhase = RolloutPhase.RUNNING
    message: str = ""
    holder: str = ""
    token: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    log: list[str] = field(default_factory=list)
    past: list[RepairSummary] = field(default_factory=list)

    @classmethod
    def new(cls, plan: RepairPlan, *, number: int, past: Sequence[RepairSummary] = (),
            now: float | None = None) -> RepairState:
        stamp = time.time() if now is None else now
        return cls(plan.app, number, plan, {n.id: StepRecord() for n in plan.nodes}, created=stamp, updated=stamp,
                   past=list(past)[-PAST_KEEP:])

    @property
    def done(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.plan.nodes if self.nodes[n.id].outcome is Outcome.DONE)

    def event(self, message: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {message}")
        del self.log[:-LOG_KEEP]

    def summary(self) -> RepairSummary:
        return RepairSummary(self.number, self.phase, self.plan.keyspaces, self.plan.datacenters, len(self.done),
                             len(self.plan.nodes), self.holder, self.created, self.updated, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "number": self.number, "phase": self.phase.value, "message": self.message,
                "holder": self.holder, "token": self.token, "created": self.created, "updated": self.updated,
                "plan": self.plan.to_dict(), "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
                "done": list(self.done), "log": self.log, "past": [p.to_dict() for p in self.past]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RepairState:
        return cls(str(d["app"]), int(d["number"]), RepairPlan.from_dict(d["plan"]),
                   {k: StepRecord.from_dict(v) for k, v in d["nodes"].items()}, RolloutPhase(d["phase"]),
                   str(d.get("message", "")), str(d.get("holder", "")), int(d.get("token", 0)),
                   float(d.get("created", 0)), float(d.get("updated", 0)), list(d.get("log", [])),
                   [RepairSummary.from_dict(p) for p in d.get("past", [])])


class RepairStore(FencedDocument):
    """The app's repair progress in the control plane, fenced like the rollout state (:mod:`.progress`). Node by
    node work of another kind keeps the same state under a name of its own (``isthmus restart``:
    :class:`~.restartstate.RestartStore`)."""

    def __init__(self, conn: ClusterConnection, app: str, *, name: str | None = None,
                 component: str = "repair-state") -> None:
        super().__init__(conn, app, name or repair_state_name(app), component)

    async def load(self) -> RepairState | None:
        doc = await self.load_document()
        return RepairState.from_dict(doc) if doc else None

    async def save(self, state: RepairState) -> None:
        state.updated = time.time()
        await self.save_document(state.to_dict(), state.token)


async def repair_history(conn: ClusterConnection, app: str,
                         store: RepairStore | None = None) -> tuple[RepairSummary, ...]:
    """Every repair kept (or every run ``store`` keeps), oldest first, the current (or last) one at the end."""
    state = await (store or RepairStore(conn, app)).load()
    return () if state is None else (*state.past, state.summary())
