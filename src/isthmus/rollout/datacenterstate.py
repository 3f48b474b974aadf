"""Which nodes of a datacenter step finished: the per-node progress of ``rebuild`` and ``decommission``.

Owns: :class:`NodeProgress` (per step of one revision, a :class:`~.progress.StepRecord` per node) and
:class:`NodeProgressStore`, which keeps it in ConfigMap ``isthmus-datacenters-<app>`` of the control plane's
``isthmus-system`` through the rollout state's fenced compare-and-swap (:class:`~.progress.FencedDocument`),
as the repair keeps its own (:mod:`.repairstate`). It is written before and after each node, so a run
killed mid-step (SIGKILL included) and resumed (``isthmus rollout resume``) does not rebuild or decommission
a node that finished; a node caught mid-way is done again. Progress of another revision is dropped.

Must not: run anything (that is :mod:`.datacenters`' work).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kube import ClusterConnection
from .progress import FencedDocument, Outcome, StepRecord

__all__ = ["NodeProgress", "NodeProgressStore", "node_progress_name"]


def node_progress_name(app: str) -> str:
    return f"isthmus-datacenters-{app}"


@dataclass
class NodeProgress:
    revision: int
    steps: dict[str, dict[str, StepRecord]] = field(default_factory=dict)
    """Step id -> pod -> its record."""

    def record(self, step: str, pod: str) -> StepRecord:
        return self.steps.setdefault(step, {}).setdefault(pod, StepRecord())

    def done(self, step: str) -> tuple[str, ...]:
        return tuple(p for p, rec in self.steps.get(step, {}).items() if rec.outcome is Outcome.DONE)

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision,
                "steps": {s: {p: r.to_dict() for p, r in pods.items()} for s, pods in self.steps.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeProgress:
        return cls(int(d["revision"]), {s: {p: StepRecord.from_dict(r) for p, r in pods.items()}
                                        for s, pods in (d.get("steps") or {}).items()})


class NodeProgressStore(FencedDocument):
    def __init__(self, conn: ClusterConnection, app: str) -> None:
        super().__init__(conn, app, node_progress_name(app), "datacenter-progress")

    async def load(self, revision: int) -> NodeProgress:
        """The progress of ``revision`` (empty when what is stored belongs to another revision)."""
        doc = await self.load_document()
        stored = NodeProgress.from_dict(doc) if doc else None
        return stored if stored is not None and stored.revision == revision else NodeProgress(revision)

    async def save(self, progress: NodeProgress, token: int) -> None:
        await self.save_document(progress.to_dict(), token)
