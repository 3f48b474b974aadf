"""ChartRelease: rendering with the real ``helm`` per member, a ``release`` step, status.

Rendering (:func:`render_release`): per member, concurrently (bounded), its capabilities from
discovery (``isthmus.kube.capabilities``), ``helm template`` of its values twice (``isthmus.helm``;
members with the same values and capabilities share those two runs), the random leaves kept from
the live objects, then the pure post-processing of
``isthmus.render.charts``. Nothing is written.

A ``release`` step (:func:`run_release`, called by the engine) in one member: the member's record
says whether this is an install (it never fully ran a revision) or an upgrade; the matching
``pre-*`` hook Jobs run one by one (weight order) and are waited on; the release's objects are
applied (server-side, inventory first, no prune: that is ``finalize``); then the step waits until
every object is healthy (:func:`isthmus.kube.object_health`), failing early once more pods failed
than the failure budget, or at the progress deadline; then the ``post-*`` hooks run.

Stored revisions hold no Secret value (:func:`isthmus.render.charts.mask_secrets`). Rolling a stored
revision out again (resume, rollback) takes each Secret's values from the member, where it is
(:func:`restore_secrets`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UserError
from ..helm import HelmBinary, TemplateRequest, find_helm, template
from ..kube import (
    ApplyReport,
    ClusterConnection,
    ClusterRegistry,
    Health,
    KubeObject,
    ObjectHealth,
    ObjectRef,
    Reach,
    across,
    apply_exactly,
    apply_objects,
    capabilities,
    delete_record,
    fetch_owned,
    get_record,
    job_health,
    list_objects,
    live_objects,
    object_health,
    register_custom_kinds,
)
from ..kube.inventory import APP_LABEL, is_ours, read_inventory
from ..render import Manifests, render
from ..render.charts import (
    HOOK_ANNOTATION,
    Hook,
    hook_order,
    hooks_key,
    keep_live,
    masked_secret,
    parse_rendered,
    random_paths,
    settle_annotations,
)
from ..render.hashing import digest
from ..render.manifests import object_key
from ..spec import ChartRelease, Fleet
from .deploying import DatacenterStatus, StatusReport
from .gates import failed_pods, pod_ready
from .memberrevisions import read_member_revision, record_member_revision
from .steps import Step

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["SecretsLost", "UnservedKind", "release_status", "render_release", "restore_secrets", "run_release"]

REVISION_HASH_LABEL = "controller-revision-hash"
_WORKLOADS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "Job"})


class UnservedKind(UserError):
    """A chart renders a custom resource whose CRD a member lacks: nothing is written anywhere."""


class SecretsLost(UserError):
    """A stored revision's Secret is not in the member any more, and revisions keep no Secret values."""


def _with_namespace(obj: KubeObject, namespace: str) -> KubeObject:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    if not meta.get("namespace") and obj.get("kind") not in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                                                               "CustomResourceDefinition", "StorageClass",
                                                               "PriorityClass"):
        meta["namespace"] = namespace
    return out


async def _stable(conn: ClusterConnection, release: ChartRelease, first: list[KubeObject],
                  second: list[KubeObject]) -> list[KubeObject]:
    """``first`` with the leaves that differ from ``second`` (drawn at random by the chart) taken from the live
    objects that are ours, as Helm's ``lookup`` would keep them."""
    rand = random_paths(first, second)
    if not rand:
        return first
    wanted = [_with_namespace(o, release.namespace) for o in first if object_key(o) in rand]
    live = await live_objects(conn, release.metadata.name, wanted)
    mine = {ObjectRef.of(o): o for o in live.values() if is_ours(o, release.metadata.name)}
    out = []
    for obj in first:
        paths = rand.get(object_key(obj))
        if paths:
            obj = keep_live(obj, paths, mine.get(ObjectRef.of(_with_namespace(obj, release.namespace))))
        out.append(obj)
    # What no member holds (a hook, recreated every time): random annotations get a stand-in that changes only
    # with the rest of the release.
    # (Its own random annotations left out: on a first install they are stood in for too, and kept afterwards.)
    seed = digest([settle_annotations(o, rand.get(object_key(o), frozenset()), "") for o in out
                   if HOOK_ANNOTATION not in ((o.get("metadata") or {}).get("annotations") or {})])
    return [settle_annotations(o, rand[object_key(o)], seed)
            if object_key(o) in rand and ObjectRef.of(_with_namespace(o, release.namespace)) not in mine else o
            for o in out]


T = TypeVar("T")

async def _all_or_none(*work: Coroutine[Any, Any, T]) -> list[T]:
    """Every result, or the first failure once the rest are cancelled and have ended (no helm, no call left running
    behind the caller's back while it closes its connections)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(w) for w in work]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


def _input_key(request: TemplateRequest) -> str:
    """What Helm renders from (the cluster's name aside), as one string."""
    return json.dumps({"chart": request.chart, "release": request.release, "namespace": request.namespace,
                       "values": request.values, "kube": request.kube_version,
                       "apis": sorted(request.api_versions)}, sort_keys=True, default=str)


async def render_release(release: ChartRelease, fleet: Fleet, registry: ClusterRegistry, *,
                         helm: HelmBinary | None = None, concurrency: int = 4) -> Manifests:
    """The release's manifests (real Secret values; mask them before storing), rendered by Helm per member."""
    binary = helm or find_helm()
    regions = {c.name: c.region for c in fleet.spec.clusters}
    limit = asyncio.Semaphore(concurrency)

    shared: dict[tuple[str, int], asyncio.Future[str]] = {}

    async def helm_says(request: TemplateRequest, draw: int) -> str:
        """Helm's output for ``request`` (``draw`` 0 or 1): one run per distinct input, shared by the members whose
        values and capabilities are the same (only the cluster's name differs, and Helm never sees it)."""
        key = (_input_key(request), draw)
        if key in shared:
            return await asyncio.shield(shared[key])
        future = shared[key] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even with no other reader
        try:
            async with limit:
                text = await template(binary, request)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as failed:
            future.set_exception(failed)
            raise
        future.set_result(text)
        return text

    async def run(request: TemplateRequest, draw: int) -> list[KubeObject]:
        text = await helm_says(request, draw)
        return parse_rendered(text, chart=request.chart, cluster=request.cluster)

    async def one(cluster: str) -> tuple[str, list[KubeObject]]:
        conn = registry[cluster]
        caps = await capabilities(conn)
        request = TemplateRequest(chart=release.spec.chart, release=release.metadata.name,
                                  namespace=release.namespace, cluster=cluster,
                                  values=release.values_for(cluster, regions[cluster]),
                                  kube_version=caps.kube_version, api_versions=caps.api_versions)
        first, second = await _all_or_none(run(request, 0), run(request, 1))
        absent = await register_custom_kinds(conn, first)
        if absent:
            raise UnservedKind(f"chart {release.spec.chart}, cluster {cluster}: the chart renders "
                               f"{', '.join(absent)}, which the cluster does not serve; install its CRD there, or "
                               "turn that part of the chart off in the values")
        return cluster, await _stable(conn, release, first, second)

    rendered = dict(await _all_or_none(*(one(c) for c in release.member_clusters())))
    return render(release, fleet, rendered=rendered)


async def restore_secrets(manifests: Manifests, registry: ClusterRegistry, release: ChartRelease) -> Manifests:
    """A stored revision's manifests with every masked Secret's values taken from its member."""
    out: dict[str, tuple[KubeObject, ...]] = {}
    for cluster in manifests.clusters:
        objects = manifests.for_cluster(cluster)
        masked = [o for o in objects if masked_secret(o)]
        if not masked:
            out[cluster] = objects
            continue
        member = cluster.removeprefix("hooks:")
        live = await live_objects(registry[member], release.metadata.name, masked)
        fixed = []
        for obj in objects:
            if masked_secret(obj):
                found = live.get(ObjectRef.of(obj))
                if found is None or not is_ours(found, release.metadata.name):
                    raise SecretsLost(f"ChartRelease {release.metadata.name}, cluster {member}: Secret "
                                      f"{ObjectRef.of(obj)} of the stored revision is gone from the cluster, and "
                                      "revisions keep no Secret values; `isthmus apply` the spec instead")
                obj = copy.deepcopy(obj)
                for key in ("data", "stringData"):
                    if key in obj:
                        obj[key] = {k: (found.get("data") or {}).get(k, "") for k in obj[key]}
                if "stringData" in obj:  # the live object holds them base64-encoded, as data
                    obj["data"] = {**obj.get("data", {}), **obj.pop("stringData")}
            fixed.append(obj)
        out[cluster] = tuple(fixed)
    return Manifests(out)


# -- the release step ------------------------------------------------------------------------------


async def _pods(conn: ClusterConnection, app: str, namespace: str) -> list[KubeObject]:
    return await list_objects(conn, "v1", "Pod", namespace=namespace, labels={APP_LABEL: app})


async def _run_hook(engine: Engine, step: Step, conn: ClusterConnection, hook: Hook, phase: str) -> None:
    from .results import StepFailed

    ns = hook.obj["metadata"].get("namespace") or engine.namespace
    api = str(hook.obj["apiVersion"])
    what = f"{phase} hook Job {ns}/{hook.name}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + engine.settings.progress_deadline
    if "before-hook-creation" in hook.delete_policies:
        await delete_record(conn, api, "Job", hook.name, ns)
        while await get_record(conn, api, "Job", hook.name, ns) is not None:
            if loop.time() > deadline:
                raise StepFailed(step, f"{what}: the previous run's Job is still being deleted")
            await asyncio.sleep(engine.settings.poll_interval)
    engine.progress(step.cluster, f"{step.id}: running {what}")
    await apply_exactly(conn, [hook.obj], force=engine.settings.force_conflicts)
    while True:
        live = await get_record(conn, api, "Job", hook.name, ns)
        health = job_health(live) if live is not None else None
        if health is not None and health.health is Health.HEALTHY:
            break
        if health is not None and health.health is Health.DEGRADED:
            if "hook-failed" in hook.delete_policies:
                await delete_record(conn, api, "Job", hook.name, ns)
            raise StepFailed(step, f"{what} failed: {health.reason}")
        if loop.time() > deadline:
            raise StepFailed(step, f"{what} did not complete within the progress deadline of "
                                   f"{engine.settings.progress_deadline:g}s")
        await asyncio.sleep(engine.settings.poll_interval)
    engine.state.event(f"{step.cluster}: {what} completed")
    if "hook-succeeded" in hook.delete_policies:
        await delete_record(conn, api, "Job", hook.name, ns)


async def _converge(engine: Engine, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> None:
    """Wait until every object of the step is healthy; fail over the failure budget or at the deadline."""
    from .results import StepFailed

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + engine.settings.progress_deadline
    refs = [ObjectRef.of(o) for o in objects if o.get("kind") != "Namespace"]
    try:
        while True:
            engine._check_stop()
            live, pods = await asyncio.gather(live_objects(conn, engine.app, objects),
                                              _pods(conn, engine.app, engine.namespace))
            healths = [object_health(live[r]) if r in live else ObjectHealth(r.name, Health.MISSING, 0, 1, "",
                                                                                f"{r} is missing")
                       for r in refs]
            sick = [(r, h) for r, h in zip(refs, healths, strict=True) if h.health is not Health.HEALTHY]
            if not sick:
                return
            judged: list[KubeObject] = []
            for ref in refs:
                obj = live.get(ref)
                if obj is None or ref.kind != "StatefulSet":
                    continue
                status = obj.get("status") or {}
                seen = int(status.get("observedGeneration", 0)) >= int(obj["metadata"].get("generation", 1))
                mine = [p for p in pods if any(o.get("kind") == "StatefulSet" and o.get("name") == ref.name
                                               for o in p["metadata"].get("ownerReferences") or [])]
                if engine.state.kind == "rollback" and seen:
                    gone = await engine._convergence._unstick(conn, obj, mine)
                    mine = [p for p in mine if p["metadata"]["name"] not in gone]
                judged += [p for p in mine if seen and (p["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL)
                           == status.get("updateRevision")]
            judged += [p for p in pods if not any(o.get("kind") == "StatefulSet"
                                                  for o in p["metadata"].get("ownerReferences") or [])
                       and (p.get("status") or {}).get("phase") not in ("Succeeded",) and not pod_ready(p)]
            bad = failed_pods(judged)
            if len(bad) > engine.settings.failure_budget:
                listed = ", ".join(f"{p} ({r})" for p, r in bad)
                raise StepFailed(step, f"{len(bad)} pod(s) failed, over the failure budget of "
                                       f"{engine.settings.failure_budget}: {listed}")
            why = "; ".join(f"{r}: {h.reason or h.health.value}" for r, h in sick)
            if loop.time() > deadline:
                raise StepFailed(step, f"not healthy within the progress deadline of "
                                       f"{engine.settings.progress_deadline:g}s: {why}")
            engine.progress(step.cluster, f"{step.id}: {why}")
            await asyncio.sleep(engine.settings.poll_interval)
    finally:
        engine.stats.converge_seconds += loop.time() - started


async def run_release(engine: Engine, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> ApplyReport:
    """One member's ``release`` step; see the module docstring."""
    record = await read_member_revision(conn, engine.app, engine.namespace)
    upgrade = record.revision is not None
    await record_member_revision(conn, engine.app, engine.namespace, target=engine.state.revision)
    hooks = hook_order(engine.manifests.for_cluster(hooks_key(step.cluster)))
    pre, post = ("pre-upgrade", "post-upgrade") if upgrade else ("pre-install", "post-install")
    for hook in hooks:
        if pre in hook.phases:
            await _run_hook(engine, step, conn, hook, pre)
    report = await apply_objects(conn, objects, app=engine.app, namespace=engine.namespace,
                                 force_conflicts=engine.settings.force_conflicts, prune=False,
                                 progress=lambda msg: engine.progress(step.cluster, f"{step.id}: {msg}"))
    await _converge(engine, step, conn, objects)
    for hook in hooks:
        if post in hook.phases:
            await _run_hook(engine, step, conn, hook, post)
    return report


# -- status ----------------------------------------------------------------------------------------


async def release_status(release: ChartRelease, registry: ClusterRegistry) -> StatusReport:
    """One row per member (its ``datacenter`` is the member's name: a release has no datacenters): the health of
    the release's workloads there (and of any other object that is not healthy), for the objects the member's
    inventory lists."""

    async def one(conn: ClusterConnection) -> list[ObjectHealth]:
        refs = await read_inventory(conn, release.metadata.name, release.namespace)
        live = await fetch_owned(conn, release.metadata.name, {(r.api_version, r.kind, r.namespace) for r in refs})
        out = []
        for ref in sorted(r for r in refs if r.kind != "Namespace"):  # shared with other apps: not labelled ours
            obj = live.get(ref)
            health = object_health(obj) if obj is not None else ObjectHealth(ref.name, Health.MISSING, 0, 1, "",
                                                                              "missing")
            if ref.kind in _WORKLOADS or health.health is not Health.HEALTHY:
                out.append(ObjectHealth(f"{ref.kind}/{ref.name}", health.health, health.ready, health.desired,
                                        health.revision, health.reason))
        return out

    outcomes = await across({m: registry[m] for m in release.member_clusters()}, one)
    rows = []
    now = time.time()
    for cluster in release.member_clusters():
        outcome = outcomes[cluster]
        if outcome.reach is not Reach.REACHED or outcome.value is None:
            rows.append(DatacenterStatus(cluster, cluster, outcome.reach, error=outcome.error))
        else:
            rows.append(DatacenterStatus(cluster, cluster, Reach.REACHED, tuple(outcome.value),
                                         seen_at=now))
    return StatusReport(release.metadata.name, tuple(rows))
