"""Whether an apply has nothing to do, found by reading only, so a repeated `isthmus apply` writes nothing.

An apply is settled when the latest revision already holds this spec and these manifests, its
rollout succeeded with no cluster skipped, and every member holds exactly the rendered objects
(content hashes, inventory) and records that revision as the one it runs (:meth:`.memberview.MemberView.runs`,
which the engine also asks before a ``finalize`` step). Then taking the lock,
bumping every member's fence and rewriting the member records would change nothing but
resourceVersions. Anything else, including a member that does not answer, is not settled and
goes through the full rollout, which is the one place that decides what to do about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..kube import ApplyAction, ClusterConnection, ClusterRegistry, KubeObject, ObjectRef, Reach, across
from ..render import Manifests
from .memberview import read_member
from .progress import ProgressStore, RolloutPhase, RolloutState
from .revisions import RevisionStore

__all__ = ["member_runs", "settled_state", "unchanged_reports"]


async def settled_state(registry: ClusterRegistry, members: Sequence[str], manifests: Manifests, *, app: str,
                        namespace: str, digest: str, revisions: RevisionStore,
                        states: ProgressStore) -> RolloutState | None:
    """The finished rollout that already put ``manifests`` (of revision ``digest``) everywhere, else None."""
    latest, stored = await asyncio.gather(revisions.latest(), states.load())
    if latest is None or latest.digest != digest or stored is None or stored.revision != latest.number \
            or stored.phase is not RolloutPhase.SUCCEEDED or stored.skipped:
        return None

    async def holds(conn: ClusterConnection) -> bool:
        return await member_runs(conn, app, namespace, manifests.for_cluster(conn.name), latest.number)

    outcomes = await across({m: registry[m] for m in members}, holds)
    if all(o.reach is Reach.REACHED and o.value for o in outcomes.values()):
        return stored
    return None


async def member_runs(conn: ClusterConnection, app: str, namespace: str, objects: Sequence[KubeObject],
                      revision: int) -> bool:
    """Whether the member holds exactly ``objects`` (content hashes, and an inventory listing just them) and
    records ``revision`` as the one it runs, with no rollout to it under way; reads only."""
    view = await read_member(conn, app, namespace, objects, record=True)
    return view.runs(objects, revision) is True


def unchanged_reports(manifests: Manifests, members: Sequence[str]) -> dict[str, dict[ObjectRef, ApplyAction]]:
    """What a settled apply reports: every object of every member, unchanged."""
    return {m: {ObjectRef.of(o): ApplyAction.UNCHANGED for o in manifests.for_cluster(m)} for m in members}
