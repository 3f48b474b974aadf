"""The persisted state of an app's current (or last) rollout, in the control-plane cluster.

ConfigMap ``isthmus-rollout-<app>`` in ``isthmus-system`` holds one JSON document: which
revision is being rolled out (and from which), the plan, each step's outcome, the phase, the
holder and its fencing token, the clusters skipped by override, and a short event log. It is
written before and after every disruptive step (and at the end), so a killed process leaves
behind exactly which disruptive steps are done; ``rollout resume`` re-runs the rest (a step
caught mid-way is re-run, which writes nothing it already wrote: applying unchanged objects is a
no-op). Steps that roll no pods are recorded with the next write (see :mod:`.engine`).

Writes are guarded by the fencing token: a save refuses (:class:`~.locking.Fenced`) when a newer
holder's token is stored, and writes by compare-and-swap on the ``resourceVersion`` it last
read or wrote: one round trip when nobody else wrote since, a fresh read and check otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..kube import ClusterConnection, bookkeeping_labels, read_config_map, remembered_config_map, write_config_map
from .locking import CONTROL_NAMESPACE, Fenced
from .steps import RolloutPlan

__all__ = ["FencedDocument", "Outcome", "ProgressStore", "RolloutPhase", "RolloutState", "StepRecord", "state_name"]

LOG_KEEP = 200


class RolloutPhase(StrEnum):
    RUNNING = "Running"
    PAUSED = "Paused"
    FAILED = "Failed"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"

    @property
    def finished(self) -> bool:
        return self in (RolloutPhase.SUCCEEDED, RolloutPhase.ROLLED_BACK)


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
    plan: RolloutPlan
    steps: dict[str, StepRecord]
    phase: RolloutPhase = RolloutPhase.RUNNING
    message: str = ""
    holder: str = ""
    token: int = 0
    skipped: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    log: list[str] = field(default_factory=list)
    #: The superuser Secret's role is not (yet) the ring's superuser: the next apply tries again, even of a
    #: settled revision (:mod:`isthmus.rollout.superuser`).
    superuser_pending: bool = False

    @classmethod
    def new(cls, *, app: str, kind: str, revision: int, previous: int | None, plan: RolloutPlan) -> RolloutState:
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
                "steps": {k: v.to_dict() for k, v in self.steps.items()}, "log": self.log,
                "superuserPending": self.superuser_pending}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutState:
        return cls(str(d["app"]), str(d["kind"]), int(d["revision"]), d.get("previous"),
                   RolloutPlan.from_dict(d["plan"]),
                   {k: StepRecord.from_dict(v) for k, v in d["steps"].items()}, RolloutPhase(d["phase"]),
                   str(d.get("message", "")), str(d.get("holder", "")), int(d.get("token", 0)),
                   list(d.get("skipped", [])), float(d.get("created", 0)), float(d.get("updated", 0)),
                   list(d.get("log", [])), bool(d.get("superuserPending", False)))


def state_name(app: str) -> str:
    return f"isthmus-rollout-{app}"


def _stored_token(data: dict[str, str] | None) -> int:
    if not data:
        return 0
    if "token" in data:
        return int(data["token"])
    raw = data.get("state")  # written before the token had a key of its own
    return int(json.loads(raw).get("token", 0)) if raw else 0


class FencedDocument:
    """One JSON document in ConfigMap ``name`` of the control plane's ``isthmus-system``, written by
    compare-and-swap and refused (:class:`Fenced`) when a newer lock holder's token is stored.

    The machinery under :class:`ProgressStore`, shared with the repair's progress (:mod:`.repairing`).
    """

    def __init__(self, conn: ClusterConnection, app: str, name: str, component: str) -> None:
        self.conn, self.app = conn, app
        self.name, self.component = name, component
        self.saves = 0
        self._lock = asyncio.Lock()

    def remembered_document(self) -> Any | None:
        """The document as this process last read or wrote it (a hint, never the truth; None if neither)."""
        _, data = remembered_config_map(self.conn, self.name, CONTROL_NAMESPACE)
        raw = (data or {}).get("state")
        return json.loads(raw) if raw else None

    async def load_document(self) -> Any | None:
        live = await read_config_map(self.conn, self.name, CONTROL_NAMESPACE)
        raw = ((live or {}).get("data") or {}).get("state")
        return json.loads(raw) if raw else None

    async def save_document(self, document: Mapping[str, Any], token: int) -> None:
        async with self._lock:
            text = json.dumps(document, indent=1)

            def change(data: dict[str, str] | None) -> dict[str, str]:
                stored = _stored_token(data)
                if stored > token:
                    raise Fenced(self.conn.name, self.app, token, stored)
                return {"state": text, "token": str(token)}

            await write_config_map(self.conn, self.name, CONTROL_NAMESPACE,
                                   labels=bookkeeping_labels(self.app, self.component), change=change)
            self.saves += 1


class ProgressStore(FencedDocument):
    """Loads and saves the rollout state of one app in the control-plane cluster ``conn``.

    A save is one compare-and-swap write against the version last read or written (see
    :func:`isthmus.kube.write_config_map`); the fencing token is also kept under a key of its own,
    so checking it never parses the whole state.
    """

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        super().__init__(conn, app, state_name(app), "rollout-state")

    async def load(self) -> RolloutState | None:
        doc = await self.load_document()
        return RolloutState.from_dict(doc) if doc else None

    def remembered(self) -> RolloutState | None:
        """The state as this process last read or wrote it (a hint; see :meth:`FencedDocument.remembered_document`)."""
        doc = self.remembered_document()
        return RolloutState.from_dict(doc) if doc else None

    async def save(self, state: RolloutState) -> None:
        """Write ``state`` unless a holder with a newer fencing token has written since (:class:`Fenced`)."""
        state.updated = time.time()
        await self.save_document(state.to_dict(), state.token)
