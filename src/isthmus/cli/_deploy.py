"""`isthmus render|diff|apply|status|delete`: one app spec, every member cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..console import dump, err_console, out_console
from ..errors import UserError
from ._app import OutputFormat, OutputOpt, app

__all__ = ["DeployTarget", "is_chart", "load_target", "print_result", "rendered_release", "result_doc"]

T = TypeVar("T")

Files = Annotated[list[Path], typer.Option("--file", "-f", help="Fleet and app specs (repeat -f)")]
AppName = Annotated[str | None, typer.Option("--app", help="Which app, when the specs hold several")]
Kubeconfig = Annotated[Path | None, typer.Option(help="kubeconfig with a context per cluster; default $KUBECONFIG")]
CallTimeout = Annotated[float, typer.Option("--request-timeout", help="Seconds one API call may take")]


@dataclass(frozen=True)
class DeployTarget:
    fleet: Any
    app: Any


def load_target(files: list[Path], app_name: str | None) -> DeployTarget:
    """Load and cross-check the specs; everything wrong is reported before any cluster is touched."""
    from ..helm import chart_problem
    from ..spec import CassandraCluster, ChartRelease, bind_release, check_consistency, load_files, require_fleet

    if not files:
        raise UserError("no spec given; pass the Fleet and the app with -f fleet.yaml -f app.yaml")
    specs = load_files(files)
    fleet = require_fleet(specs)
    check_consistency(specs)
    apps = [a for a in specs.apps if isinstance(a, CassandraCluster | ChartRelease)]
    if app_name is not None:
        apps = [a for a in apps if a.metadata.name == app_name]
    if len(apps) != 1:
        names = ", ".join(a.metadata.name for a in specs.apps) or "none"
        raise UserError(f"expected exactly one app{f' named {app_name!r}' if app_name else ''} "
                        f"in the specs (found: {names}); use --app NAME")
    chosen = apps[0]
    if isinstance(chosen, ChartRelease):  # placement resolved against the Fleet; the chart relative to its file
        chart = Path(chosen.spec.chart).expanduser()
        if not chart.is_absolute():
            chart = Path(specs.document_of(chosen).file).resolve().parent / chart
        if (problem := chart_problem(chart)) is not None:
            raise UserError(f"{specs.document_of(chosen).file}: spec.chart: {problem}")
        chosen = bind_release(chosen, fleet, chart=str(chart))
    return DeployTarget(fleet, chosen)


def is_chart(target: DeployTarget) -> bool:
    from ..spec import ChartRelease

    return isinstance(target.app, ChartRelease)


async def rendered_release(target: DeployTarget, registry: Any) -> Any:
    """A ChartRelease rendered by Helm for every member (discovery first); an unreachable member is exit 1."""
    from ..kube import KubeError
    from ..rollout import render_release

    try:
        return await render_release(target.app, target.fleet, registry)
    except KubeError as exc:
        err_console.print(f"[red]cannot render {target.app.metadata.name}:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _registry(target: DeployTarget, kubeconfig: Path | None, timeout: float) -> Any:
    from ..kube import ClusterRegistry, ConnectionSettings, UnknownContext

    wanted = {*target.app.member_clusters(), target.fleet.spec.control_plane}
    try:  # every Fleet cluster the kubeconfig knows: a datacenter removed from the spec is in a cluster left behind
        return ClusterRegistry.from_fleet(target.fleet, kubeconfig, settings=ConnectionSettings(timeout=timeout))
    except UnknownContext:
        return ClusterRegistry.from_fleet(target.fleet, kubeconfig, only=wanted,
                                          settings=ConnectionSettings(timeout=timeout))


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(work())


def _run_closing(registry: Any, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` to its end, then close every connection of ``registry``, whatever happened."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await registry.close()

    return asyncio.run(run())


@contextmanager
def _live(clusters: list[str]) -> Iterator[Callable[[str, str], None]]:
    """A progress line per cluster while work runs (on stderr, so stdout stays clean for -o json)."""
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[cluster]:<12}[/] {task.description}"),
                  TimeElapsedColumn(), console=err_console, transient=False) as bar:
        tasks = {c: bar.add_task("waiting", cluster=c, total=None) for c in clusters}

        def update(cluster: str, message: str) -> None:
            if cluster in tasks:
                bar.update(tasks[cluster], description=message)

        yield update
        for task in tasks.values():
            bar.update(task, total=1, completed=1)


@app.command("render")
def render_cmd(
    files: Files,
    out: Annotated[Path, typer.Option("--out", help="Folder; one sub-folder per cluster")],
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
) -> None:
    """Write each cluster's manifests to OUT/<cluster>/ for kubectl or GitOps (the password stays out).

    A ChartRelease is rendered by helm per cluster, with that cluster's version and API versions (asked of it).
    """
    from ..rollout import render_app

    target = load_target(files, app_name)
    if is_chart(target):
        _render_chart(target, out, kubeconfig, request_timeout)
        return
    manifests = render_app(target.app, target.fleet)
    for cluster in manifests.clusters:
        folder = out / cluster
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{target.app.metadata.name}.yaml").write_text(manifests.to_yaml(cluster))
        except OSError as exc:
            raise UserError(f"cannot write {folder}: {exc.strerror}") from exc
        out_console.print(f"{folder}/{target.app.metadata.name}.yaml: {len(manifests.for_cluster(cluster))} objects")
    err_console.print("The superuser Secret holds a placeholder; `isthmus apply` fills in the real password.")


def _render_chart(target: DeployTarget, out: Path, kubeconfig: Path | None, timeout: float) -> None:
    from ..render.charts import hooks_key, mask_secrets

    registry = _registry(target, kubeconfig, timeout)
    manifests = mask_secrets(_run_closing(registry, lambda: rendered_release(target, registry)))
    name = target.app.metadata.name
    written = []
    for cluster in target.app.member_clusters():
        folder = out / cluster
        files = {f"{name}.yaml": manifests.to_yaml(cluster)}
        if manifests.for_cluster(hooks_key(cluster)):
            files[f"{name}-hooks.yaml"] = manifests.to_yaml(hooks_key(cluster))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                (folder / file).write_text(text)
        except OSError as exc:
            raise UserError(f"cannot write {folder}: {exc.strerror}") from exc
        written.append(f"{folder}/{name}.yaml: {len(manifests.for_cluster(cluster))} objects"
                       + (f" (+ {len(manifests.for_cluster(hooks_key(cluster)))} hook(s) in {name}-hooks.yaml)"
                          if len(files) > 1 else ""))
    for line in written:
        out_console.print(line, highlight=False)
    err_console.print("Secret values are masked; `isthmus apply` renders and applies the real ones.")


@app.command()
def diff(
    files: Files,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    force_conflicts: Annotated[bool, typer.Option("--force-conflicts")] = False,
) -> None:
    """Show what `apply` would change in each cluster (server-side dry run; secrets masked)."""
    from ..kube import Reach

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)

    async def work() -> Any:
        try:
            from ..rollout import diff_app

            return await diff_app(target.app, target.fleet, registry, force_conflicts=force_conflicts)
        finally:
            await registry.close()

    outcomes = _run(work)
    changed = False
    for name, outcome in outcomes.items():
        if outcome.reach is not Reach.REACHED:
            out_console.print(f"[bold]{name}[/]: [red]{outcome.reach.value}[/] ({outcome.error})", highlight=False)
            continue
        diffs = [d for d in outcome.value if d.changed]
        out_console.print(f"[bold]{name}[/]: {len(diffs)} object(s) would change")
        for d in diffs:
            changed = True
            out_console.print(d.text, markup=False, highlight=False, end="")
    if any(o.reach is not Reach.REACHED for o in outcomes.values()):
        raise typer.Exit(1)
    raise typer.Exit(1 if changed else 0)


def _requests(registry: Any, clusters: list[str]) -> dict[str, dict[str, int]]:
    """API requests and writes this command made to each cluster (lock and history included)."""
    return {name: {"requests": sum(registry[name].requests.values()), "writes": registry[name].writes}
            for name in clusters}


def _apply_table(result: Any, clusters: list[str], requests: dict[str, dict[str, int]]) -> Table:
    from ..kube import ApplyAction
    from ..rollout import MemberOutcome, Outcome

    table = Table("cluster", "result", "created", "configured", "unchanged", "pruned", "steps", "API requests",
                  "writes", "note", box=box.SIMPLE_HEAVY)
    plan = result.state.plan
    members = result.members()
    for name in clusters:
        records = [result.state.steps[s.id] for s in plan.steps if s.cluster == name]
        counts = result.counts(name)
        member = members.get(name)
        outcome = member.outcome if member is not None else MemberOutcome.ROLLED_OUT
        if outcome is MemberOutcome.FAILED:
            verdict, note = "[red]failed[/]", member.reason if member is not None else ""
        elif outcome is MemberOutcome.SKIPPED:
            verdict, note = "[yellow]skipped[/]", "--skip-cluster"
        elif outcome is MemberOutcome.ROLLED_OUT:
            verdict, note = "[green]applied[/]", ""
        else:
            verdict, note = "[yellow]pending[/]", ""
        done = sum(1 for r in records if r.outcome in (Outcome.DONE, Outcome.SKIPPED))
        table.add_row(name, verdict, *(str(counts[a]) for a in
                      (ApplyAction.CREATED, ApplyAction.CONFIGURED, ApplyAction.UNCHANGED, ApplyAction.PRUNED)),
                      f"{done}/{len(records)}", str(requests[name]["requests"]), str(requests[name]["writes"]),
                      note)
    return table


SkipCluster = Annotated[list[str] | None, typer.Option(
    "--skip-cluster", help="Leave this member cluster out (an explicit override, logged in the rollout state)")]
AsIdentity = Annotated[str | None, typer.Option("--as", help="Who is rolling out (lock holder); default user@host/pid")]
LockWait = Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for another holder's lock")]


def print_result(result: Any) -> None:
    """The rollout's outcome as the lines people read (stdout): phase, message, notes."""
    from ..rollout import RolloutPhase

    colours = {RolloutPhase.SUCCEEDED: "green", RolloutPhase.ROLLED_BACK: "yellow", RolloutPhase.PAUSED: "yellow"}
    colour = colours.get(result.phase, "red")
    out_console.print(f"rollout of revision {result.state.revision}: [{colour}]{result.phase.value}[/]",
                      highlight=False)
    if result.state.message:
        out_console.print(result.state.message, markup=False, highlight=False)
    for note in result.notes:
        out_console.print(note, markup=False, highlight=False)


def result_doc(result: Any, elapsed: float, requests: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    return {"app": result.state.app, "seconds": round(elapsed, 3), "phase": result.phase.value,
            "revision": result.state.revision, "message": result.state.message, "notes": result.notes,
            "stats": result.stats.to_dict(), "state": result.state.to_dict(),
            "clusters": {name: {"objects": [{"object": str(ref), "action": action.value}
                                            for ref, action in sorted(actions.items())],
                                **(requests or {}).get(name, {})}
                         for name, actions in result.reports.items()}}


@app.command("apply")
def apply_cmd(
    files: Files,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    wait: Annotated[bool, typer.Option("--wait", help="After the rollout, wait until every datacenter is healthy")]
    = False,
    timeout: Annotated[float, typer.Option(help="Seconds the rollout (and --wait) may take; then it pauses")]
    = 600.0,
    force_conflicts: Annotated[bool, typer.Option("--force-conflicts", help="Take fields other managers own")]
    = False,
    prune: Annotated[bool, typer.Option(help="Delete objects that left the spec")] = True,
    skip_cluster: SkipCluster = None,
    identity: AsIdentity = None,
    lock_wait: LockWait = 0.0,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Roll the spec out: a new revision, gated steps rack by rack, under the app's lock (resumable)."""
    from ..rollout import RolloutOptions, apply_rollout, wait_healthy

    target = load_target(files, app_name)
    started = time.monotonic()
    rendered = None
    if is_chart(target):  # rendered (helm, per member) before anything is shown or written: bad input is one line
        first = _registry(target, kubeconfig, request_timeout)
        rendered = _run_closing(first, lambda: rendered_release(target, first))
    registry = _registry(target, kubeconfig, request_timeout)
    clusters = target.app.member_clusters()
    options = RolloutOptions(identity=identity, lock_wait=lock_wait, force_conflicts=force_conflicts, prune=prune,
                             skip_clusters=frozenset(skip_cluster or ()), timeout=timeout, unless_settled=True)
    for name in options.skip_clusters:
        err_console.print(f"override: cluster {name} is skipped (--skip-cluster); it keeps what it runs")

    async def work(progress: Callable[[str, str], None]) -> tuple[Any, Any]:
        try:
            result = await apply_rollout(target.app, target.fleet, registry, options, progress, rendered=rendered)
            left = max(1.0, timeout - (time.monotonic() - started))
            status = await wait_healthy(target.app, registry, within=left, progress=progress) \
                if wait and result.ok else None
            return result, status
        finally:
            await registry.close()

    with _live(clusters) as progress:
        result, status = _run(lambda: work(progress))
    elapsed = time.monotonic() - started
    requests = _requests(registry, clusters)
    if output is not OutputFormat.TABLE:
        doc = result_doc(result, elapsed, requests)
        if status is not None:
            doc["status"] = status.to_dict()
        dump(doc, output.value)
    else:
        out_console.print(_apply_table(result, clusters, requests))
        print_result(result)
        if status is not None:
            _print_status(status, chart=is_chart(target))
        out_console.print(f"finished in {elapsed:.1f}s")
    if not result.ok or (status is not None and not status.healthy):
        raise typer.Exit(1)


def _print_ring(view: Any) -> None:
    """The database's own view, one row per node (nothing when no pod runs a database process)."""
    if not view.asked:
        return
    colours = {"UN": "green", "DN": "red"}
    table = Table("datacenter", "rack", "node", "pod", "state", "load", "owns", "schema",
                  box=box.SIMPLE_HEAVY, title=f"The ring, as {view.asked} nodes see it", title_justify="left")
    for node in view.nodes:
        state = node.state
        table.add_row(node.datacenter, node.rack, node.address, node.pod or "-",
                      f"[{colours.get(state, 'yellow')}]{state}[/]", node.load, node.owns, node.schema[:8])
    out_console.print(table)
    for error in view.errors:
        out_console.print(f"  not asked: {error}", markup=False, highlight=False)


def _print_status(report: Any, *, chart: bool = False) -> None:
    from ..kube import Health

    colours = {Health.HEALTHY: "green", Health.PROGRESSING: "yellow", Health.DEGRADED: "red",
               Health.UNKNOWN: "magenta", Health.MISSING: "red"}
    if chart:
        table = Table("cluster", "workloads", "ready/desired", "health", "last seen", box=box.SIMPLE_HEAVY,
                      title=f"ChartRelease {report.app}", title_justify="left")
        for row in report.datacenters:
            seen = time.strftime("%H:%M:%S", time.localtime(row.seen_at)) if row.seen_at else "-"
            health = f"[{colours[row.health]}]{row.health.value}[/]"
            reasons = [f"{r.name}: {r.reason}" for r in row.racks if r.reason]
            if row.error or reasons:
                health += f" ({row.error or '; '.join(reasons)})"
            table.add_row(row.cluster, ", ".join(r.name for r in row.racks) or "-", f"{row.ready}/{row.desired}",
                          health, seen)
        out_console.print(table)
        return
    table = Table("cluster", "datacenter", "racks", "ready/desired", "revision", "health", "last seen",
                  box=box.SIMPLE_HEAVY, title=f"CassandraCluster {report.app}", title_justify="left")
    for dc in report.datacenters:
        seen = time.strftime("%H:%M:%S", time.localtime(dc.seen_at)) if dc.seen_at else "-"
        health = f"[{colours[dc.health]}]{dc.health.value}[/]"
        if dc.error:
            health += f" ({dc.error})"
        table.add_row(dc.cluster, dc.datacenter, str(len(dc.racks)), f"{dc.ready}/{dc.desired}",
                      ", ".join(dc.revisions) or "-", health, seen)
    out_console.print(table)


@app.command()
def status(
    files: Files,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Show every datacenter's health, per cluster (an unreachable one is Unknown), and the ring per node."""
    from ..rollout import app_status
    from ..rollout.dbgate import database_view

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    app = target.app

    async def both() -> tuple[Any, Any]:
        if is_chart(target):  # a chart's workloads are judged by their status; there is no ring to ask
            return await app_status(app, registry), None
        members = {c: registry[c] for c in app.member_clusters()}
        return await asyncio.gather(app_status(app, registry),
                                    database_view(members, app.metadata.name, app.namespace))

    report, ring = _run_closing(registry, both)
    if output is OutputFormat.TABLE:
        _print_status(report, chart=is_chart(target))
        if ring is not None:
            _print_ring(ring)
    else:
        dump({**report.to_dict(), **({"database": ring.to_dict()} if ring is not None else {})}, output.value)
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
def delete(
    files: Files,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
    delete_volumes: Annotated[bool, typer.Option("--delete-volumes", help="Also delete data volumes")] = False,
) -> None:
    """Delete what Isthmus created for the app in every member cluster (volumes kept unless asked)."""
    from ..kube import Reach
    from ..rollout import delete_app

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    clusters = target.app.member_clusters()
    if not yes:
        what = "and its volumes " if delete_volumes else ""
        if not typer.confirm(f"Delete {target.app.metadata.name} {what}from {', '.join(clusters)}?", default=False):
            raise UserError("nothing deleted (not confirmed); pass --yes to skip the question")

    async def work(progress: Callable[[str, str], None]) -> Any:
        try:
            return await delete_app(target.app, registry, delete_volumes=delete_volumes, progress=progress)
        finally:
            await registry.close()

    with _live(clusters) as progress:
        outcomes = _run(lambda: work(progress))
    for name, o in outcomes.items():
        if o.reach is Reach.REACHED:
            out_console.print(f"{name}: deleted {len(o.value.outcomes)} object(s)")
        else:
            out_console.print(f"{name}: [red]{o.reach.value}[/] ({o.error})")
    if any(o.reach is not Reach.REACHED for o in outcomes.values()):
        raise typer.Exit(1)
