"""``isthmus rollback [REVISION]``: roll an earlier revision forward, through the same gates.

The target's stored manifests (the password put back in) become a new revision whose origin
says ``rollback to N``, and are rolled out by the engine in reverse wave order (the datacenter
changed last is restored first). A broken pod of the revision being undone does not block its
own removal: StatefulSets not yet reverted are tolerated by the gates, and a pod stuck on the
bad revision is deleted once its StatefulSet is reverted (the controller would wait forever).

Bad input is refused before anything is written: an unknown revision (:class:`RevisionNotFound`),
or nothing earlier to roll back to (:class:`NothingToRollBack`).
"""

from __future__ import annotations

from ..errors import UserError
from ..kube import ClusterRegistry
from ..spec import Fleet
from .deploying import Progress
from .results import RolloutResult
from .revisions import RevisionInfo, RevisionNotFound, RevisionStore
from .rolling import AnyApp, RolloutOptions, _check_skips, _password, _Session

__all__ = ["NothingToRollBack", "choose_target", "rollback_app"]


class NothingToRollBack(UserError):
    pass


def _quiet(_cluster: str, _message: str) -> None:
    return None


def choose_target(app: str, infos: list[RevisionInfo], wanted: int | None) -> RevisionInfo:
    """The revision to restore: ``wanted``, or the one before the latest."""
    if wanted is not None:
        for info in infos:
            if info.number == wanted:
                return info
        known = ", ".join(str(i.number) for i in infos) or "none yet"
        raise RevisionNotFound(f"app {app} has no revision {wanted} (revisions: {known}); see `isthmus history`")
    if len(infos) < 2:
        raise NothingToRollBack(f"app {app} has {len(infos)} revision(s): nothing earlier to roll back to")
    return infos[-2]


async def rollback_app(app: AnyApp, fleet: Fleet, registry: ClusterRegistry, revision: int | None = None,
                       options: RolloutOptions | None = None, progress: Progress = _quiet) -> RolloutResult:
    opts = options or RolloutOptions()
    _check_skips(app, opts.skip_clusters)
    control = registry[fleet.spec.control_plane]
    target = choose_target(app.metadata.name, await RevisionStore(control, app.metadata.name).entries(), revision)
    password = await _password(registry, fleet, app)
    session = _Session.open(app, fleet, registry, opts, progress)
    await session.lock.acquire(wait=opts.lock_wait, waiting=opts.lock_waiting)
    try:
        return await session.roll_back(target.number, password=password, reason="requested")
    finally:
        await session.lock.release()
