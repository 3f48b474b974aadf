"""``isthmus operator run|install|crds|manifests``: thin wiring from options to :mod:`.running` and friends."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from ..console import err_console, out_console
from ..errors import UserError
from ..image import RELEASED, ImageRef
from ..settings import ConnectionSettings
from .settings import (
    DEFAULT_NAMESPACE,
    ConnectionOptions,
    LeadershipSettings,
    MemberSettings,
    OperatorSettings,
    ReconcileSettings,
    ServingSettings,
    default_identity,
)

__all__ = ["operator_app"]

operator_app = typer.Typer(name="operator", help="The Kubernetes operator: CassandraCluster objects in, clusters out.",
                           no_args_is_help=True, add_completion=False)

Namespace = Annotated[str, typer.Option("--namespace", "-n", help="The operator's namespace (member Secrets, Lease)")]
Kubeconfig = Annotated[Path | None, typer.Option(help="kubeconfig of the control-plane cluster; default in-cluster")]
Image = Annotated[str | None, typer.Option(help="Operator image by digest, REPOSITORY@sha256:<digest> (`make image` "
                                                "prints it); default: this release's")]


def _image(text: str | None) -> ImageRef:
    if text is None:
        return RELEASED
    try:
        return ImageRef.parse(text)
    except ValueError as exc:
        raise UserError(f"--image: {exc}") from exc


@operator_app.command()
def run(
    namespace: Namespace = DEFAULT_NAMESPACE,
    kubeconfig: Kubeconfig = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context of the control-plane cluster")] = None,
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics, /healthz, /readyz (0: off)")] = 8080,
    identity: Annotated[str | None, typer.Option("--id", help="Replica identity in the Lease")] = None,
    resync: Annotated[float, typer.Option(help="Seconds between periodic drift checks (watches catch drift "
                                                "sooner)")] = 120.0,
    status_interval: Annotated[float, typer.Option(help="Seconds between status timer runs")] = 5.0,
    probe_interval: Annotated[float, typer.Option(help="Seconds between member reachability probes")] = 15.0,
    request_timeout: Annotated[float, typer.Option(help="Seconds one call to a cluster may take")] = 5.0,
    lease_duration: Annotated[float, typer.Option(help="Seconds before a standby takes over a silent leader")] = 15.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator (leader election built in: start two and one leads)."""
    from .running import run_operator

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = OperatorSettings(
        namespace=namespace,
        identity=identity or default_identity(),
        connection=ConnectionOptions(kubeconfig=kubeconfig, context=context,
                                     calls=ConnectionSettings(timeout=request_timeout)),
        reconcile=ReconcileSettings(resync_interval=resync, progress_requeue=status_interval),
        members=MemberSettings(probe_interval=probe_interval),
        leadership=LeadershipSettings(lease_duration=lease_duration, renew_interval=max(lease_duration / 3, 0.5),
                                      retry_interval=max(lease_duration / 7, 0.5)),
        serving=ServingSettings(metrics_port=metrics_port),
    )
    raise typer.Exit(asyncio.run(run_operator(settings)))


@operator_app.command()
def install(
    context: Annotated[str, typer.Option(help="kubeconfig context of the control-plane cluster")],
    kubeconfig: Kubeconfig = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    image: Image = None,
    replicas: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Apply the CRDs and the operator (namespace, RBAC, Deployment, Service) to one cluster."""
    from ..kube import ApplyAction, KubeError, apply_objects, default_kubeconfig
    from ..kube.members import control_plane_connection
    from .manifests import NAME, install_objects

    objects = install_objects(namespace=namespace, image=_image(image), replicas=replicas)

    async def work() -> None:
        conn = control_plane_connection(kubeconfig=kubeconfig or default_kubeconfig(), context=context,
                                        settings=ConnectionSettings(timeout=30.0), name=context)
        try:
            report = await apply_objects(conn, objects, app=NAME, namespace=namespace, prune=False)
        except KubeError as exc:
            raise UserError(f"install failed: {exc}") from exc
        finally:
            await conn.close()
        for outcome in report.outcomes:
            out_console.print(f"{outcome.ref}: {outcome.action.value}")
        changed = sum(1 for o in report.outcomes if o.action is not ApplyAction.UNCHANGED)
        err_console.print(f"isthmus operator installed in {context} ({changed} object(s) changed)")

    asyncio.run(work())


@operator_app.command()
def crds() -> None:
    """Print the CRDs (Fleet, CassandraCluster) generated from the spec models."""
    from .crds import crds_yaml

    out_console.file.write(crds_yaml())


@operator_app.command()
def manifests(
    namespace: Namespace = DEFAULT_NAMESPACE,
    image: Image = None,
) -> None:
    """Print the operator's Namespace, RBAC, Deployment and Service (deploy/operator.yaml)."""
    from .manifests import operator_yaml

    out_console.file.write(operator_yaml(namespace=namespace, image=_image(image)))


@operator_app.command()
def chart(
    directory: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder to write the chart into "
                                            "(deploy/chart)", file_okay=False)],
) -> None:
    """Write the operator's Helm chart (deploy/chart), generated from the same objects as `install`."""
    from .chart import chart_files

    for rel, text in chart_files().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    err_console.print(f"wrote {len(chart_files())} files to {directory}")
