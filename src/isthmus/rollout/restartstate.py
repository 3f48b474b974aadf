"""The progress of an app's restarts (``isthmus restart``), in the control plane, and their history.

Owns: :class:`RestartStore`, ConfigMap ``isthmus-restart-<app>`` of ``isthmus-system``, holding a
:class:`~.repairstate.RepairState` (the same shape as a repair's: the plan's nodes, a record per node, the
restarts before), written by the rollout state's fenced compare-and-swap; :func:`restart_history`, what
``isthmus history`` lists.

Must not: run anything (that is :mod:`.restarting`'s).
"""

from __future__ import annotations

import time

from ..kube import ClusterConnection
from .progress import FencedDocument
from .repairstate import RepairState, RepairSummary

__all__ = ["RestartStore", "restart_history", "restart_state_name"]


def restart_state_name(app: str) -> str:
    return f"isthmus-restart-{app}"


class RestartStore(FencedDocument):
    """The app's restart progress in the control plane, fenced like the rollout state (:mod:`.progress`)."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        super().__init__(conn, app, restart_state_name(app), "restart-state")

    async def load(self) -> RepairState | None:
        doc = await self.load_document()
        return RepairState.from_dict(doc) if doc else None

    async def save(self, state: RepairState) -> None:
        state.updated = time.time()
        await self.save_document(state.to_dict(), state.token)


async def restart_history(conn: ClusterConnection, app: str) -> tuple[RepairSummary, ...]:
    """Every restart kept, oldest first, the current (or last) one at the end."""
    state = await RestartStore(conn, app).load()
    return () if state is None else (*state.past, state.summary())
