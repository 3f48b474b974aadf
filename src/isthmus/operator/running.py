"""One operator process: endpoints, member Secrets, probes, leadership, then kopf while we lead.

::

    serve /metrics /healthz /readyz ──► sync members (watch + re-list) ──► probe members
                                     └► wait for the Lease ──► kopf handlers  ◄─ renew the Lease
                                                             (Lease lost: stop kopf, exit 1)

A standby replica does everything but the kopf part: it keeps its member registry warm and
serves metrics, so taking over costs one Lease duration plus kopf's start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import kopf
import yaml

from ..kube import ClusterConnection, KubeError
from ..kube.members import control_plane_connection, list_member_secrets, watch_member_secrets
from .handlers import build_registry
from .leadership import Leadership, LeadershipLost
from .members import MemberRegistry
from .metrics import OperatorMetrics, Probes, serve
from .reconciling import Reconciler
from .settings import OperatorSettings

__all__ = ["login_from_kubeconfig", "run_operator"]

log = logging.getLogger(__name__)
EXIT_LOST_LEADERSHIP = 3


def login_from_kubeconfig(path: Path, context: str | None) -> kopf.ConnectionInfo:
    """kopf's credentials for one context of a kubeconfig file (kopf itself only reads the current one)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    name = context or doc.get("current-context")
    ctx = next((c["context"] for c in doc.get("contexts", []) if c["name"] == name), None)
    if ctx is None:
        raise KeyError(f"kubeconfig {path} has no context {name!r}")
    cluster = next(c["cluster"] for c in doc.get("clusters", []) if c["name"] == ctx["cluster"])
    user: dict[str, Any] = next((u["user"] for u in doc.get("users", []) if u["name"] == ctx.get("user")), {})
    base = path.parent

    def file(value: str | None) -> str | None:
        return None if value is None else str(base / value)

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=file(cluster.get("certificate-authority")), ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file(user.get("client-certificate")), certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user.get("client-key")), private_key_data=user.get("client-key-data"),
        token=user.get("token"), scheme="Bearer" if user.get("token") else None,
        username=user.get("username"), password=user.get("password"),
        default_namespace=ctx.get("namespace"),
    )


async def _sync_members(control: ClusterConnection, members: MemberRegistry, settings: OperatorSettings,
                        wake: asyncio.Event) -> None:
    while True:
        try:
            changes = members.sync(await list_member_secrets(control, settings.namespace))
            if changes:
                log.info("members: %s", changes)
        except KubeError as exc:
            log.warning("listing member Secrets failed: %s", exc)
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=settings.members.relist_interval)


async def _probe_members(members: MemberRegistry, interval: float) -> None:
    while True:
        await members.probe()
        await asyncio.sleep(interval)


async def run_operator(settings: OperatorSettings) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until leadership is lost (exit 3, to be restarted as a standby)."""
    conn_settings = settings.connection.calls
    opts = settings.connection
    control = control_plane_connection(kubeconfig=opts.kubeconfig, context=opts.context, settings=conn_settings)
    named: dict[str, ClusterConnection] = {}

    def control_as(name: str) -> ClusterConnection:
        if name not in named:
            named[name] = control_plane_connection(kubeconfig=opts.kubeconfig, context=opts.context,
                                                   settings=conn_settings, name=name)
        return named[name]

    members = MemberRegistry(conn_settings)
    leadership = Leadership(control, settings.namespace, settings.identity, settings.leadership)
    metrics = OperatorMetrics(members=members, is_leader=lambda: leadership.is_leader)
    health = Probes(detail=lambda: f"{'leader' if leadership.is_leader else 'standby'} {settings.identity}")
    runner = None
    if settings.serving.metrics_port:
        runner = await serve(metrics, health, host=settings.serving.host, port=settings.serving.metrics_port)
    wake = asyncio.Event()

    async def woken() -> None:
        wake.set()

    background = [
        asyncio.create_task(_sync_members(control, members, settings, wake), name="member-sync"),
        asyncio.create_task(watch_member_secrets(control, settings.namespace, woken), name="member-watch"),
        asyncio.create_task(_probe_members(members, settings.members.probe_interval), name="member-probe"),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await members.synced.wait()
        health.ready = True
        acquire = asyncio.create_task(leadership.acquire())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquire.cancel()
            return 0
        stopping.cancel()
        log.info("%s leads; starting the handlers", settings.identity)
        login = login_from_kubeconfig(opts.kubeconfig, opts.context) if opts.kubeconfig else None
        reconciler = Reconciler(members, metrics, settings, control_plane=control_as,
                                is_leader=lambda: leadership.is_leader,
                                watch_settings=settings.members.watch)
        metrics.watches = reconciler.watch_count
        kopf_stop = asyncio.Event()
        operator = asyncio.create_task(kopf.operator(
            registry=build_registry(settings, reconciler, login), clusterwide=True, standalone=True,
            stop_flag=kopf_stop, memo=kopf.Memo()), name="kopf")
        keep = asyncio.create_task(leadership.keep(), name="lease-renew")
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({operator, keep, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if keep in done:
            try:
                keep.result()
            except LeadershipLost as exc:
                log.error("%s; stopping the handlers", exc)
                code = EXIT_LOST_LEADERSHIP
        kopf_stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(operator, timeout=15)
        await reconciler.close()
        keep.cancel()
        stopping.cancel()
        if code == 0:
            await leadership.release()
        return code
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await members.close()
        for conn in [control, *named.values()]:
            await conn.close()
