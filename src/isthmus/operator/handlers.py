"""The kopf handlers, and nothing else: each one gathers its inputs and calls :mod:`.reconciling`.

Handlers are registered on a registry built per operator (:func:`build_registry`), so settings
(intervals) are injected rather than global, and tests can run several operators in one process.
The process plumbing (leadership, member Secrets, probes, the metrics server) is in :mod:`.running`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from .crds import GROUP, VERSION
from .reconciling import EventType, ReconcileOutcome, Reconciler, Trigger
from .settings import FINALIZER, OperatorSettings

__all__ = ["build_registry"]

PLURAL = "cassandraclusters"
RELEASES = "chartreleases"


def _fleets(kwargs: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The Fleets from kopf's index (handler keyword ``fleets``)."""
    index: kopf.Index[str, Any] = kwargs["fleets"]
    return [body for name in index for body in index[name]]


def _publish(body: kopf.Body, patch: kopf.Patch, outcome: ReconcileOutcome) -> None:
    if not outcome.write:
        return
    status = outcome.status.to_json()
    current = dict(body.get("status") or {})
    if any(current.get(k) != v for k, v in status.items()):
        patch.status.update(status)
    for event in outcome.events:
        kopf.event(body, type=event.type.value, reason=event.reason, message=event.message[:1000])


def build_registry(settings: OperatorSettings, reconciler: Reconciler,
                   login: kopf.ConnectionInfo | None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = "isthmus-operator"
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        # No delay between an event and its handler: kopf (>= 1.38) batches no events by time (its old
        # batch_window is gone), queueing.idle_timeout only retires idle per-object workers, and the
        # consistency wait after our own patch ends as soon as the patched version arrives (measured: the
        # handler starts within milliseconds of `kubectl apply` returning).

    @kopf.on.login(id="login", registry=registry)
    def credentials(logger: kopf.Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if login is not None:
            return login
        return kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
            logger=logger, **kwargs)

    @kopf.index(GROUP, VERSION, "fleets", id="fleets", registry=registry)
    def fleets(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
        return {name: {"apiVersion": body.get("apiVersion"), "metadata": {"name": name},
                       "spec": dict(body.get("spec") or {})}}

    for plural, kind in ((PLURAL, "CassandraCluster"), (RELEASES, "ChartRelease")):
        _register(registry, plural, kind, reconciler, settings)
    return registry


def _kind(body: kopf.Body, kind: str) -> Mapping[str, Any]:
    """``body`` with its kind (an object from a LIST carries none), which tells the reconciler what it is."""
    return body if body.get("kind") == kind else {**body, "kind": kind}


def _register(registry: kopf.OperatorRegistry, plural: str, kind: str, reconciler: Reconciler,
              settings: OperatorSettings) -> None:
    """The reconcile, resync and cleanup handlers of one kind (CassandraClusters, ChartReleases)."""

    @kopf.on.resume(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, plural, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, plural, id="reconcile", field="spec", registry=registry)
    async def reconcile(*, body: kopf.Body, patch: kopf.Patch, reason: str, **kwargs: Any) -> None:
        trigger = Trigger(reason) if reason in Trigger.__members__.values() else Trigger.RESUME
        _publish(body, patch, await reconciler.reconcile(_kind(body, kind), _fleets(kwargs), trigger=trigger))

    @kopf.timer(GROUP, VERSION, plural, id="resync", interval=settings.reconcile.progress_requeue,
                initial_delay=settings.reconcile.progress_requeue, registry=registry)
    async def resync(*, body: kopf.Body, patch: kopf.Patch, **kwargs: Any) -> None:
        _publish(body, patch, await reconciler.tick(_kind(body, kind), _fleets(kwargs)))

    @kopf.on.delete(GROUP, VERSION, plural, id="cleanup", registry=registry)
    async def finalize(*, body: kopf.Body, **kwargs: Any) -> None:
        outcome = await reconciler.finalize(_kind(body, kind), _fleets(kwargs))
        for event in outcome.events:
            kopf.event(body, type=event.type.value, reason=event.reason, message=event.message[:1000])
        if outcome.retry_after is not None:
            if outcome.events and outcome.events[-1].type is EventType.WARNING:
                message = outcome.events[-1].message
            else:
                message = "cleanup incomplete"
            raise kopf.TemporaryError(message, delay=outcome.retry_after)

