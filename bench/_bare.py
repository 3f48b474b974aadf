"""The bare apply some benchmarks measure against: every member's objects written at once.

No revision, lock, gate or fence: no command or operator path does this (``isthmus apply`` runs
:func:`isthmus.rollout.apply_rollout`); it is the floor the orchestration is compared with.
"""

from __future__ import annotations

from isthmus.kube import ApplyReport, ClusterConnection, ClusterOutcome, ClusterRegistry, across, apply_objects
from isthmus.rollout import render_app, superuser_password
from isthmus.spec import CassandraCluster, Fleet

__all__ = ["bare_apply"]


async def bare_apply(app: CassandraCluster, fleet: Fleet,
                     registry: ClusterRegistry) -> dict[str, ClusterOutcome[ApplyReport]]:
    """Apply (and prune) ``app``'s rendered objects in every member concurrently."""
    manifests = render_app(app, fleet, await superuser_password(registry, fleet, app))

    async def one(conn: ClusterConnection) -> ApplyReport:
        return await apply_objects(conn, manifests.for_cluster(conn.name), app=app.metadata.name,
                                   namespace=app.namespace)

    return await across({name: registry[name] for name in app.member_clusters()}, one)
