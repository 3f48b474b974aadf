"""Reading and removing an app across its member clusters: render, diff, status, wait, delete.

Applying is not here: every apply goes through :func:`isthmus.rollout.apply_rollout` (a revision,
the app's lock, gated steps, fences), which the CLI and the operator both call. Each cluster is
worked on concurrently and independently: one that does not answer is reported Unknown with the
reason, and the others finish.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..kube import (
    ApplyAction,
    ApplyReport,
    ClusterConnection,
    ClusterOutcome,
    ClusterRegistry,
    Health,
    ObjectDiff,
    ObjectHealth,
    ObjectOutcome,
    ObjectRef,
    Reach,
    across,
    delete_hooks,
    delete_objects,
    delete_record,
    delete_volume_claims,
    diff_objects,
    list_objects,
    rollup,
    statefulset_health,
)
from ..kube.inventory import APP_LABEL
from ..render import Manifests, render
from ..render.naming import CassandraNames
from ..spec import CassandraCluster, ChartRelease, Fleet
from .locking import TOKEN_ANNOTATION
from .secrets import superuser_password

__all__ = [
    "DatacenterStatus",
    "Progress",
    "StatusReport",
    "app_status",
    "delete_app",
    "diff_app",
    "render_app",
    "wait_healthy",
]

Progress = Callable[[str, str], None]
"""``progress(cluster, message)``: what each cluster is doing now, for a live display."""

DC_LABEL = "isthmus.dev/datacenter"


def _quiet(_cluster: str, _message: str) -> None:
    return None


AnyApp = CassandraCluster | ChartRelease


def render_app(app: CassandraCluster, fleet: Fleet, password: str | None = None) -> Manifests:
    return render(app, fleet, superuser_password=password)


def _members(registry: ClusterRegistry, app: AnyApp) -> dict[str, ClusterConnection]:
    return {name: registry[name] for name in app.member_clusters()}


async def diff_app(
    app: AnyApp, fleet: Fleet, registry: ClusterRegistry, *, force_conflicts: bool = False
) -> dict[str, ClusterOutcome[list[ObjectDiff]]]:
    if isinstance(app, ChartRelease):
        from .releasing import render_release

        manifests = await render_release(app, fleet, registry)
    else:
        manifests = render_app(app, fleet, await superuser_password(registry, fleet, app))

    async def one(conn: ClusterConnection) -> list[ObjectDiff]:
        return await diff_objects(conn, manifests.for_cluster(conn.name), force_conflicts=force_conflicts,
                                  ignore=(TOKEN_ANNOTATION,))  # the fencing token every rollout stamps

    return await across(_members(registry, app), one)


@dataclass(frozen=True)
class DatacenterStatus:
    cluster: str
    datacenter: str
    reach: Reach
    racks: tuple[ObjectHealth, ...] = ()
    error: str = ""
    seen_at: float | None = None

    @property
    def health(self) -> Health:
        return Health.UNKNOWN if self.reach is not Reach.REACHED else rollup(r.health for r in self.racks)

    @property
    def ready(self) -> int:
        return sum(r.ready for r in self.racks)

    @property
    def desired(self) -> int:
        return sum(r.desired for r in self.racks)

    @property
    def revisions(self) -> tuple[str, ...]:
        return tuple(sorted({r.revision for r in self.racks if r.revision}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster, "datacenter": self.datacenter, "reach": self.reach.value,
            "health": self.health.value, "ready": self.ready, "desired": self.desired,
            "revisions": list(self.revisions), "error": self.error, "seenAt": self.seen_at,
            "racks": [{"statefulSet": r.name, "health": r.health.value, "ready": r.ready, "desired": r.desired,
                       "revision": r.revision, "reason": r.reason} for r in self.racks],
        }


@dataclass(frozen=True)
class StatusReport:
    app: str
    datacenters: tuple[DatacenterStatus, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        return bool(self.datacenters) and all(dc.health is Health.HEALTHY for dc in self.datacenters)

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "healthy": self.healthy, "datacenters": [d.to_dict() for d in self.datacenters]}


async def _statefulsets(conn: ClusterConnection, app: CassandraCluster) -> list[dict[str, Any]]:
    return await list_objects(conn, "apps/v1", "StatefulSet", namespace=app.namespace,
                              labels={APP_LABEL: app.metadata.name})


async def app_status(app: AnyApp, registry: ClusterRegistry) -> StatusReport:
    """One row per datacenter (per member, for a ChartRelease), from the live objects; an unreachable
    cluster's rows are Unknown."""
    if isinstance(app, ChartRelease):
        from .releasing import release_status

        return await release_status(app, registry)
    outcomes = await across(_members(registry, app), lambda conn: _statefulsets(conn, app))
    rows = []
    now = time.time()
    for dc in app.spec.datacenters:
        outcome = outcomes[dc.cluster]
        if outcome.reach is not Reach.REACHED or outcome.value is None:
            rows.append(DatacenterStatus(dc.cluster, dc.name, outcome.reach, error=outcome.error))
            continue
        mine = [s for s in outcome.value if (s["metadata"].get("labels") or {}).get(DC_LABEL) == dc.name]
        racks = tuple(sorted((statefulset_health(s) for s in mine), key=lambda h: h.name))
        rows.append(DatacenterStatus(dc.cluster, dc.name, Reach.REACHED, racks, seen_at=now))
    return StatusReport(app.metadata.name, tuple(rows))


async def wait_healthy(
    app: AnyApp, registry: ClusterRegistry, *, within: float, interval: float = 1.0,
    progress: Progress = _quiet,
) -> StatusReport:
    """Poll until every DC is healthy or ``within`` seconds pass; returns the last report either way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        report = await app_status(app, registry)
        for dc in report.datacenters:
            progress(dc.cluster, f"{dc.datacenter}: {dc.health.value} {dc.ready}/{dc.desired} ready")
        if report.healthy or loop.time() >= deadline:
            return report
        await asyncio.sleep(interval)


async def delete_app(
    app: AnyApp, registry: ClusterRegistry, *, delete_volumes: bool = False,
    progress: Progress = _quiet,
) -> dict[str, ClusterOutcome[ApplyReport]]:
    """Remove what Isthmus created for ``app`` (a ChartRelease's hook Jobs too); data volumes stay unless asked,
    the namespace stays. A CassandraCluster's node identities (:mod:`.identities`) go with it: a ring made
    again later must not try to replace the nodes of this one."""

    async def one(conn: ClusterConnection) -> ApplyReport:
        progress(conn.name, "deleting")
        report = await delete_objects(conn, app=app.metadata.name, namespace=app.namespace,
                                      progress=lambda msg: progress(conn.name, msg))
        if isinstance(app, ChartRelease):  # hook Jobs Helm itself would leave behind
            hooks = await delete_hooks(conn, app=app.metadata.name, namespace=app.namespace)
            report = ApplyReport(conn.name, report.outcomes + tuple(ObjectOutcome(r, ApplyAction.DELETED)
                                                                    for r in hooks))
        if isinstance(app, CassandraCluster):
            names = CassandraNames(app.metadata.name, app.namespace)
            for dc in (d for d in app.spec.datacenters if d.cluster == conn.name):
                if await delete_record(conn, "v1", "ConfigMap", names.identities(dc.name), app.namespace):
                    ref = ObjectRef("v1", "ConfigMap", app.namespace, names.identities(dc.name))
                    report = ApplyReport(conn.name, (*report.outcomes, ObjectOutcome(ref, ApplyAction.DELETED)))
        if delete_volumes:
            claims = await delete_volume_claims(conn, app=app.metadata.name, namespace=app.namespace)
            deleted = tuple(ObjectOutcome(r, ApplyAction.DELETED) for r in claims)
            report = ApplyReport(conn.name, report.outcomes + deleted)
        progress(conn.name, "deleted")
        return report

    return await across(_members(registry, app), one)
