"""Which revision each member runs, recorded by the member itself, and the app's history that joins those
records with the control plane's index of revisions (:mod:`.revisions`).

The history also lists the app's repairs (:mod:`.repairstate`), kept beside the rollout state.

Each member records the revision it runs in ConfigMap ``isthmus-revision-<app>`` of the app's
namespace, so that stays knowable while the control plane is unreachable: ``revision`` once a rollout is
done there, ``target`` while one is under way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..kube import (
    ClusterConnection,
    ClusterRegistry,
    ClusterUnreachable,
    Reach,
    across,
    bookkeeping_labels,
    read_config_map,
    write_config_map,
)
from .repairstate import RepairSummary, repair_history
from .restartstate import restart_history
from .revisions import RevisionInfo, RevisionStore

__all__ = ["History", "MemberRevision", "history", "member_record_name", "member_revisions", "read_member_revision",
           "record_member_revision"]


def member_record_name(app: str) -> str:
    return f"isthmus-revision-{app}"


@dataclass(frozen=True)
class MemberRevision:
    """One member's own record: the revision it fully runs, and the one being rolled out to it."""

    cluster: str
    reach: Reach
    revision: int | None = None
    target: int | None = None
    updated: float | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "reach": self.reach.value, "revision": self.revision,
                "target": self.target, "updated": self.updated, "error": self.error}


async def read_member_revision(conn: ClusterConnection, app: str, namespace: str) -> MemberRevision:
    live = await read_config_map(conn, member_record_name(app), namespace)
    data = (live or {}).get("data") or {}

    def num(key: str) -> int | None:
        return int(data[key]) if data.get(key) else None

    return MemberRevision(conn.name, Reach.REACHED, num("revision"), num("target"),
                          float(data["updated"]) if data.get("updated") else None)


async def record_member_revision(conn: ClusterConnection, app: str, namespace: str, *,
                                 revision: int | None = None, target: int | None = None) -> bool:
    """Set ``target`` when a rollout starts touching the member, ``revision`` when it is done there.

    Nothing is written when the record already says so (only its time would change); returns
    whether it wrote.
    """

    def change(data: dict[str, str] | None) -> dict[str, str] | None:
        new = dict(data or {})
        if revision is not None:
            new["revision"] = str(revision)
            new.pop("target", None)
        if target is not None and not (new.get("revision") == str(target) and "target" not in new):
            new["target"] = str(target)  # (not when it already runs that revision: a re-apply)
        old = dict(data or {})
        if data is not None and {k: v for k, v in new.items() if k != "updated"} == \
                {k: v for k, v in old.items() if k != "updated"}:
            return None
        new["updated"] = f"{time.time():.3f}"
        return new

    return bool(await write_config_map(conn, member_record_name(app), namespace,
                                       labels=bookkeeping_labels(app, "member-revision"), change=change))


async def member_revisions(registry: ClusterRegistry, clusters: Sequence[str], app: str,
                           namespace: str) -> dict[str, MemberRevision]:
    conns = {c: registry[c] for c in clusters}
    outcomes = await across(conns, lambda conn: read_member_revision(conn, app, namespace))
    return {c: (o.value if o.value is not None else MemberRevision(c, o.reach, error=o.error))
            for c, o in outcomes.items()}


@dataclass(frozen=True)
class History:
    """The app's revisions (empty when the control plane did not answer) and what each member runs."""

    app: str
    revisions: tuple[RevisionInfo, ...]
    members: dict[str, MemberRevision]
    control_plane: str
    control_plane_error: str = ""
    repairs: tuple[RepairSummary, ...] = ()
    """The app's repairs (``isthmus repair``), oldest first."""
    restarts: tuple[RepairSummary, ...] = ()
    """The app's restarts (``isthmus restart``), oldest first."""

    def state_of(self, number: int) -> dict[str, str]:
        """Per member: Running, Rolling (the target of an unfinished rollout), Unknown, or empty."""
        out = {}
        for cluster, m in sorted(self.members.items()):
            if m.reach is not Reach.REACHED:
                out[cluster] = "Unknown"
            elif m.revision == number and m.target is None:
                out[cluster] = "Running"
            elif m.target == number:
                out[cluster] = "Rolling"
            elif m.revision == number:
                out[cluster] = "Running (rolling on)"
            else:
                out[cluster] = ""
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "controlPlane": self.control_plane, "controlPlaneError": self.control_plane_error,
                "members": {c: m.to_dict() for c, m in sorted(self.members.items())},
                "revisions": [{**r.to_dict(), "clusters": self.state_of(r.number)} for r in self.revisions],
                "repairs": [r.to_dict() for r in self.repairs], "restarts": [r.to_dict() for r in self.restarts]}


async def history(registry: ClusterRegistry, control_plane: str, members: Sequence[str], app: str,
                  namespace: str) -> History:
    error = ""
    control = registry[control_plane]
    try:
        infos, repairs, restarts = await asyncio.gather(RevisionStore(control, app).entries(),
                                                        repair_history(control, app), restart_history(control, app))
    except ClusterUnreachable as exc:
        infos, repairs, restarts, error = [], (), (), exc.reason
    return History(app, tuple(infos), await member_revisions(registry, members, app, namespace), control_plane,
                   error, tuple(repairs), tuple(restarts))
