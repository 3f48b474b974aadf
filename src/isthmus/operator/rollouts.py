"""The operator's calls into the members: the one rollout path, the drift check, and deletion.

:func:`roll_out` is the only way the operator changes a member's objects: the same
:func:`isthmus.rollout.apply_rollout` as ``isthmus apply`` (a revision, gated waves, the app's
lock and its fencing token, held under this replica's identity). Members whose Reachable
condition is False are skipped (the engine records the skip), and each member is reported by its
own outcome (:func:`.rollup.applied_by_member`). :func:`check_drift` lists each kind once per
member and dry-runs only what another field manager wrote (:func:`isthmus.kube.find_drift`).
:func:`delete_in_waves` removes the app, datacenter (a ChartRelease: cluster) waves in reverse.
:func:`render_chart` renders a ChartRelease with Helm against its members, as ``isthmus apply`` does; a chart
Helm refuses is an :class:`.inputs.Invalid` (nothing is applied).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from ..errors import IsthmusError, UserError
from ..kube import ClusterRegistry, Drift, ObjectRef, Reach, across, find_drift
from ..render import Manifests
from ..rollout import RolloutOptions, RolloutResult, apply_rollout, delete_app, render_release, superuser_password
from ..rollout.locking import TOKEN_ANNOTATION
from ..rollout.results import Timeline
from ..rollout.rolling import fill_password
from ..rollout.steps import cluster_waves, datacenter_waves
from ..spec import ChartRelease, Fleet
from .inputs import App, Invalid
from .members import MemberRegistry
from .metrics import OperatorMetrics
from .rollup import ByMember, EventType, OperatorEvent, applied_by_member
from .settings import OperatorSettings

__all__ = ["check_drift", "delete_in_waves", "render_chart", "roll_out", "rollout_options"]

log = logging.getLogger(__name__)


def _down(app: App, members: MemberRegistry) -> dict[str, str]:
    return {c: s.message for c in app.member_clusters() if (s := members.state(c)) is not None and s.status == "False"}


def rollout_options(settings: OperatorSettings) -> RolloutOptions:
    """The operator's options for every rollout, built once from its settings (this replica's identity, its
    Lease's duration for the app's lock, the rollout timeout, how long a member's served custom kinds stand:
    two member probes, which reconfirm them); each rollout adds only what it skips and repairs."""
    return RolloutOptions(identity=settings.identity, lock_wait=0.0, lock_duration=settings.leadership.lease_duration,
                          timeout=settings.reconcile.rollout_timeout,
                          kinds_fresh_for=2 * settings.members.probe_interval)


async def roll_out(app: App, fleet: Fleet, registry: ClusterRegistry, rendered: Manifests, *,
                   members: MemberRegistry, options: RolloutOptions, metrics: OperatorMetrics,
                   repair: Mapping[str, frozenset[ObjectRef]] | None = None,
                   timeline: Timeline | None = None) -> ByMember:
    """Roll ``app`` out (``rendered``: a CassandraCluster's with the password placeholder, a ChartRelease's as Helm
    rendered it) to every reachable member; see the module doc."""
    names = app.member_clusters()
    down = _down(app, members)
    result: RolloutResult | None = None
    error = ""
    if len(down) < len(names):
        this_run = replace(options, skip_clusters=frozenset(down),
                           repair={c: refs for c, refs in (repair or {}).items() if refs and c not in down})
        try:
            result = await apply_rollout(app, fleet, registry, this_run, rendered=rendered, timeline=timeline)
            error = f"rollout {result.phase.value}: {result.state.message}"
            log.info("%s/%s: revision %d %s (%d of %d member(s) written without reading first, %d state "
                     "write(s))", app.namespace, app.metadata.name, result.state.revision, result.phase.value,
                     result.stats.changed_only, len(names) - len(down), result.stats.state_writes)
        except UserError:
            raise
        except IsthmusError as exc:  # the lock was lost or a fence refused us: stop writing, say why
            error = f"{type(exc).__name__}: {exc}"
    by_member = applied_by_member(names, down, result, error)
    for name, out in by_member.outcomes.items():
        if out.value is None:
            metrics.rollout_steps.labels(name, out.reach.value.lower()).inc()
            continue
        for obj in out.value.outcomes:
            metrics.rollout_steps.labels(name, obj.action.value).inc()
    return by_member


async def check_drift(app: App, fleet: Fleet, registry: ClusterRegistry, rendered: Manifests, *,
                      members: MemberRegistry, only: set[str] | None = None) -> dict[str, list[Drift]]:
    """Per member (reachable, and among ``only`` if given): objects whose live state differs from the spec.
    The engine's own fencing-token annotation is not drift."""
    down = _down(app, members)
    names = [c for c in app.member_clusters() if (only is None or c in only) and c not in down]
    if not names:
        return {}
    if isinstance(app, ChartRelease):  # rendered with the members' own Secret values and random annotations
        manifests = rendered
    else:
        manifests = fill_password(rendered, await superuser_password(registry, fleet, app))
    outcomes = await across({c: registry[c] for c in names}, lambda conn: find_drift(
        conn, app.metadata.name, manifests.for_cluster(conn.name), ignore=(TOKEN_ANNOTATION,)))
    found = {}
    for name, out in outcomes.items():
        members.observe(name, out.reach, out.error)
        if out.value is not None:
            found[name] = out.value
    drifted = [f"{c}: {d}" for c, ds in sorted(found.items()) for d in ds]
    if drifted:
        log.info("%s/%s: drift: %s", app.namespace, app.metadata.name, "; ".join(drifted))
    return found


def _cluster_waves(app: App) -> list[list[str]]:
    """The clusters of each rollout wave: a CassandraCluster's datacenter waves, a ChartRelease's own."""
    if isinstance(app, ChartRelease):
        return cluster_waves(app)
    dcs = {dc.name: dc.cluster for dc in app.spec.datacenters}
    return [list(dict.fromkeys(dcs[n] for n in wave)) for wave in datacenter_waves(app)]


def _part(app: App, clusters: list[str]) -> App:
    """``app`` narrowed to ``clusters`` (what one wave of a deletion removes)."""
    if isinstance(app, ChartRelease):
        return app.model_copy(update={"spec": app.spec.model_copy(update={"clusters": clusters,
                                                                          "cluster_selector": None})})
    return app.model_copy(update={"spec": app.spec.model_copy(
        update={"datacenters": [dc for dc in app.spec.datacenters if dc.cluster in clusters]})})


async def render_chart(app: ChartRelease, fleet: Fleet, registry: ClusterRegistry) -> Manifests:
    """A ChartRelease rendered by Helm for every member (with its capabilities), or :class:`Invalid`: Helm's
    own words for a chart it refuses, a kind a member does not serve."""
    try:
        return await render_release(app, fleet, registry)
    except IsthmusError as exc:
        if isinstance(exc, UserError):
            raise Invalid("InvalidSpec", str(exc), app=app) from exc
        raise


async def delete_in_waves(app: App, members: MemberRegistry, *,
                          delete_volumes: bool) -> tuple[list[OperatorEvent], float | None]:
    """Delete what ``app`` put in every registered member, its waves in reverse; the events, and when
    to try again (a member did not answer: the later waves wait)."""
    events: list[OperatorEvent] = []
    retry: float | None = None
    done: set[str] = set()
    for wave in reversed(_cluster_waves(app)):
        clusters = [c for c in wave if c not in done]
        absent = [c for c in clusters if c not in members]
        if absent:
            events.append(OperatorEvent(EventType.WARNING, "CleanupSkipped",
                                        f"{', '.join(absent)}: not a registered member; its objects stay"))
        present = [c for c in dict.fromkeys(clusters) if c in members]
        if not present:
            continue
        outcomes = await delete_app(_part(app, present), members.registry(present), delete_volumes=delete_volumes)
        for name, out in sorted(outcomes.items()):
            members.observe(name, out.reach, out.error)
            if out.reach is not Reach.REACHED:
                events.append(OperatorEvent(EventType.WARNING, "CleanupPending", f"{name}: {out.error}"))
                retry = 10.0
            elif out.value is not None:
                done.add(name)
                events.append(OperatorEvent(EventType.NORMAL, "Deleted", f"{name}: {len(out.value.outcomes)} "
                                            f"object(s) deleted{' (volumes too)' if delete_volumes else ''}"))
        if retry is not None:
            break
    return events, retry
