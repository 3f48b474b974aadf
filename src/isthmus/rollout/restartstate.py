"""The progress of an app's restarts (``isthmus restart``), in the control plane, and their history.

Owns: :class:`RestartStore`, ConfigMap ``isthmus-restart-<app>`` of ``isthmus-system``, holding a
:class:`~.repairstate.RepairState` (the same shape as a repair's: the plan's nodes, a record per node, the
restarts before), written by the rollout state's fenced compare-and-swap; :func:`restart_history`, what
``isthmus history`` lists.

Must not: run anything (that is :mod:`.restarting`'s).
"""

from __future__ import annotations

from ..kube import ClusterConnection
from .repairstate import RepairStore, RepairSummary, repair_history

__all__ = ["RestartStore", "restart_history", "restart_state_name"]


def restart_state_name(app: str) -> str:
    return f"isthmus-restart-{app}"


class RestartStore(RepairStore):
    """The app's restart progress in the control plane: a repair's node-by-node state, under its own name."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        super().__init__(conn, app, name=restart_state_name(app), component="restart-state")


async def restart_history(conn: ClusterConnection, app: str) -> tuple[RepairSummary, ...]:
    """Every restart kept, oldest first, the current (or last) one at the end."""
    return await repair_history(conn, app, RestartStore(conn, app))
