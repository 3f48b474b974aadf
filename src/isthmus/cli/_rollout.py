"""`isthmus rollout plan|status|resume`, `history`, `rollback [REVISION]`, `lock status|break`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..console import dump, err_console, out_console
from ..errors import UserError
from ._app import OutputFormat, OutputOpt, app
from ._deploy import (
    AppName,
    AsIdentity,
    CallTimeout,
    Files,
    Kubeconfig,
    LockWait,
    SkipCluster,
    _live,
    _registry,
    _run,
    _run_closing,
    is_chart,
    load_target,
    print_result,
    result_doc,
)

__all__: list[str] = []

rollout_app = typer.Typer(help="Plan, watch and resume rollouts.", no_args_is_help=True)
lock_app = typer.Typer(help="The app's cross-cluster lock.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
app.add_typer(lock_app, name="lock")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@rollout_app.command("plan")
def plan_cmd(files: Files, app_name: AppName = None, output: OutputOpt = OutputFormat.TABLE,
             live: Annotated[bool, typer.Option(
                 "--live", help="Also ask the control plane which datacenters the spec adds or removes (their "
                                "join, rebuild and decommission steps), and the ring (nodetool through the API "
                                "servers) how each datacenter's pods may restart, and why")] = False,
             kubeconfig: Kubeconfig = None, request_timeout: CallTimeout = 10.0) -> None:
    """Print the steps `apply` would run, in order, before anything runs (no cluster is contacted without --live)."""
    from ..rollout import plan_rollout

    target = load_target(files, app_name)
    restarts, scaling = _restarts(target, kubeconfig, request_timeout) if live and not is_chart(target) \
        else (None, None)
    change, change_note = _datacenter_change(target, kubeconfig, request_timeout) if live and not is_chart(target) \
        else (None, "")
    plan = plan_rollout(target.app, scaling=scaling, datacenters=change)
    if output is not OutputFormat.TABLE:
        doc = plan.to_dict()
        if restarts is not None:
            doc["restarts"] = [{"datacenter": r.datacenter, "rackAtOnce": r.rack_at_once, "reason": r.reason}
                               for r in restarts]
        dump(doc, output.value)
        return
    strategy = target.app.spec.rollout
    concurrency = f"maxConcurrentClusters={strategy.max_concurrent_clusters}" if is_chart(target) else \
        f"maxConcurrentDatacenters={strategy.max_concurrent_datacenters}"
    out_console.print(f"rollout plan of {target.app.metadata.name}: {len(plan.steps)} steps; {concurrency}, "
                      f"soak={strategy.soak_seconds:g}s, progressDeadline={strategy.progress_deadline_seconds:g}s, "
                      f"failureBudget={strategy.failure_budget}, onFailure={strategy.on_failure}", highlight=False)
    for line in plan.lines():
        out_console.print(line, markup=False, highlight=False)
    if change_note:
        out_console.print(change_note, markup=False, highlight=False)
    if restarts is not None:
        out_console.print("restarts, as the ring's replication allows them (racks one after another, each behind "
                          "the gates; within a rack, all its pods at once or one by one, as said here; checked again "
                          "before each rack):", highlight=False)
        for choice in restarts:
            out_console.print(f"  {choice.line()}", markup=False, highlight=False)


def _datacenter_change(target: Any, kubeconfig: Any, request_timeout: float) -> tuple[Any, str]:
    """The datacenters the spec adds to and removes from the revision the control plane records (a read of its
    revision index), and a line saying what the plan was compared with; (None, why) when it cannot be read."""
    from ..render import render
    from ..rollout import RevisionStore
    from ..rollout.datacenterplan import BadDatacenterChange, choose_source, datacenter_change
    from ..rollout.revisions import stage
    from ..rollout.rolling import running_spec
    from ..rollout.steps import datacenter_waves

    app = target.app
    try:
        registry = _registry(target, kubeconfig, request_timeout)
        digest = stage(app.model_dump(mode="json", by_alias=True, exclude_none=True), render(app, target.fleet)).digest
        before = _run_closing(registry, lambda: running_spec(
            RevisionStore(registry[target.fleet.spec.control_plane], app.metadata.name), digest))
    except Exception as exc:  # the plan stands without it; say so
        return None, (f"datacenters added or removed: not known ({type(exc).__name__}: {str(exc)[:200]}); "
                      "`apply` compares with the revision the control plane records")
    change = datacenter_change(before, app)
    if not change:
        return change, ""
    regions = {c.name: c.region for c in target.fleet.spec.clusters}
    order = [n for wave in datacenter_waves(app) for n in wave]
    try:
        sources = {dc: choose_source(app, dc, added=change.added, regions=regions, order=order)
                   for dc in change.added}
    except BadDatacenterChange as exc:
        raise UserError(str(exc)) from None
    why = [f"{dc} is added (rebuilt from {src})" for dc, src in sources.items()] + \
        [f"{gone.name} is removed ({len(gone.pods)} nodes in {gone.cluster})" for gone in change.removed]
    return change.with_sources(sources), (f"compared with the revision the control plane records: {'; '.join(why)}; "
                                          "apply checks the source answers and no keyspace is left replicating "
                                          "to a removed datacenter")


def _restarts(target: Any, kubeconfig: Any, request_timeout: float) -> tuple[Any, Any]:
    """How each datacenter may restart (:mod:`isthmus.rollout.restartplan`), from the nodes that answer, and the
    datacenters whose size changes (:func:`isthmus.rollout.scaling.read_scaling`: a scale-down the ring cannot take
    is refused, exit code 2)."""
    from ..kube import Reach
    from ..rollout.dbgate import database_pods, ring_reports
    from ..rollout.gates import observe
    from ..rollout.restartplan import choose_restarts
    from ..rollout.scaling import read_scaling

    registry = _registry(target, kubeconfig, request_timeout)
    app = target.app
    members = {c: registry[c] for c in app.member_clusters()}

    async def ask() -> Any:
        observation = await observe(members, app.metadata.name, app.namespace)
        pods = {c: ps for c, ps in database_pods(observation).items() if ps}
        unreachable = [c for c, view in observation.items() if view.reach is not Reach.REACHED]
        restarts = choose_restarts(app, await ring_reports(members, app.namespace, pods), unreachable=unreachable)
        return restarts, await read_scaling(registry, app)

    restarts, scaling = _run_closing(registry, ask)
    return restarts, scaling


def _state_table(state: Any) -> Table:
    table = Table("#", "step", "cluster", "outcome", "started", "finished", "writes", "note", box=box.SIMPLE_HEAVY,
                  title=f"{state.kind} of revision {state.revision}: {state.phase.value}", title_justify="left")
    for i, step in enumerate(state.plan.steps, 1):
        rec = state.steps[step.id]
        table.add_row(str(i), step.id, step.cluster, rec.outcome.value, _when(rec.started), _when(rec.finished),
                      str(rec.writes), rec.note)
    return table


@rollout_app.command("status")
def status_cmd(files: Files, app_name: AppName = None, kubeconfig: Kubeconfig = None,
               request_timeout: CallTimeout = 10.0, output: OutputOpt = OutputFormat.TABLE) -> None:
    """Show the current (or last) rollout, step by step, from the control-plane cluster."""
    from ..rollout import ProgressStore

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)

    store = ProgressStore(registry[target.fleet.spec.control_plane], target.app.metadata.name)
    state = _run_closing(registry, store.load)
    if state is None:
        raise UserError(f"app {target.app.metadata.name} has no rollout yet; `isthmus apply` starts one")
    if output is not OutputFormat.TABLE:
        dump(state.to_dict(), output.value)
        return
    out_console.print(_state_table(state))
    out_console.print(f"holder {state.holder} (fencing token {state.token}); {state.message}", markup=False,
                      highlight=False)
    if state.skipped:
        out_console.print(f"skipped by override: {', '.join(state.skipped)}")
    for line in state.log[-8:]:
        out_console.print(f"  {line}", markup=False, highlight=False)


def _run_flow(target: Any, registry: Any, options: Any, output: OutputFormat,
              flow: Callable[[Callable[[str, str], None]], Awaitable[Any]]) -> None:
    """Run one rollout flow with a live line per member, then print (or dump) its result."""
    started = time.monotonic()
    for name in options.skip_clusters:
        err_console.print(f"override: cluster {name} is skipped (--skip-cluster); it keeps what it runs")

    async def work(progress: Callable[[str, str], None]) -> Any:
        try:
            return await flow(progress)
        finally:
            await registry.close()

    with _live(target.app.member_clusters()) as progress:
        result = _run(lambda: work(progress))
    if output is not OutputFormat.TABLE:
        dump(result_doc(result, time.monotonic() - started), output.value)
    else:
        print_result(result)
    if not result.ok:
        raise typer.Exit(1)


@rollout_app.command("resume")
def resume_cmd(files: Files, app_name: AppName = None, kubeconfig: Kubeconfig = None,
               request_timeout: CallTimeout = 10.0, skip_cluster: SkipCluster = None, identity: AsIdentity = None,
               lock_wait: Annotated[float, typer.Option("--lock-wait", help="Seconds to wait for the lock "
                                                       "(a killed holder's lease must expire first)")] = 30.0,
               timeout: Annotated[float, typer.Option(help="Seconds the rollout may take; then it pauses")] = 600.0,
               output: OutputOpt = OutputFormat.TABLE) -> None:
    """Continue the persisted rollout where it stopped; completed steps are not repeated."""
    from ..rollout import RolloutOptions, resume_rollout

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    options = RolloutOptions(identity=identity, lock_wait=lock_wait, skip_clusters=frozenset(skip_cluster or ()),
                             timeout=timeout)
    _run_flow(target, registry, options, output,
              lambda progress: resume_rollout(target.app, target.fleet, registry, options, progress))


@app.command("history")
def history_cmd(files: Files, app_name: AppName = None, kubeconfig: Kubeconfig = None,
                request_timeout: CallTimeout = 10.0, output: OutputOpt = OutputFormat.TABLE) -> None:
    """List the app's revisions, which one each member runs (Unknown when it does not answer), and its repairs."""
    from ..kube import Reach
    from ..rollout import history

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    members = target.app.member_clusters()

    hist = _run_closing(registry, lambda: history(registry, target.fleet.spec.control_plane, members,
                                                  target.app.metadata.name, target.app.namespace))
    if output is not OutputFormat.TABLE:
        dump(hist.to_dict(), output.value)
        return
    if hist.control_plane_error:
        err_console.print(f"control plane {hist.control_plane} is unreachable ({hist.control_plane_error}); "
                          "showing what each member records")
    table = Table("revision", "created", "author", "origin", *members, "summary", box=box.SIMPLE_HEAVY,
                  title=f"history of {target.app.metadata.name}", title_justify="left")
    for info in reversed(hist.revisions):
        states = hist.state_of(info.number)
        table.add_row(str(info.number), _when(info.created), info.author, info.origin,
                      *(states.get(m, "") for m in members), "\n".join(info.summary))
    out_console.print(table)
    if hist.repairs:
        repairs = Table("repair", "started", "updated", "by", "keyspaces", "datacenters", "nodes", "phase", "message",
                        box=box.SIMPLE_HEAVY, title=f"repairs of {target.app.metadata.name}", title_justify="left")
        for rep in reversed(hist.repairs):
            repairs.add_row(str(rep.number), _when(rep.created), _when(rep.updated), rep.holder,
                            ", ".join(rep.keyspaces) or "all", ", ".join(rep.datacenters) or "all",
                            f"{rep.done}/{rep.total}", rep.phase.value, rep.message)
        out_console.print(repairs)
    if hist.restarts:
        restarts = Table("restart", "started", "updated", "by", "datacenters", "nodes", "phase", "message",
                         box=box.SIMPLE_HEAVY, title=f"restarts of {target.app.metadata.name}", title_justify="left")
        for rst in reversed(hist.restarts):
            restarts.add_row(str(rst.number), _when(rst.created), _when(rst.updated), rst.holder,
                             ", ".join(rst.datacenters) or "all", f"{rst.done}/{rst.total}", rst.phase.value,
                             rst.message)
        out_console.print(restarts)
    for cluster, member in sorted(hist.members.items()):
        if member.reach is not Reach.REACHED:
            out_console.print(f"{cluster}: Unknown ({member.error})", markup=False, highlight=False)
        else:
            out_console.print(f"{cluster}: runs revision {member.revision or '-'}"
                              + (f", rolling to {member.target}" if member.target else ""), highlight=False)


@app.command("rollback")
def rollback_cmd(files: Files,
                 revision: Annotated[int | None, typer.Argument(help="Revision to restore; default the previous")]
                 = None,
                 app_name: AppName = None, kubeconfig: Kubeconfig = None, request_timeout: CallTimeout = 10.0,
                 skip_cluster: SkipCluster = None, identity: AsIdentity = None, lock_wait: LockWait = 0.0,
                 timeout: Annotated[float, typer.Option(help="Seconds the rollback may take; then it pauses")]
                 = 600.0,
                 output: OutputOpt = OutputFormat.TABLE) -> None:
    """Roll an earlier revision forward through the same gates, in reverse wave order."""
    from ..rollout import RolloutOptions, rollback_app

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    options = RolloutOptions(identity=identity, lock_wait=lock_wait, skip_clusters=frozenset(skip_cluster or ()),
                             timeout=timeout)
    _run_flow(target, registry, options, output,
              lambda progress: rollback_app(target.app, target.fleet, registry, revision, options, progress))


@lock_app.command("status")
def lock_status_cmd(files: Files, app_name: AppName = None, kubeconfig: Kubeconfig = None,
                    request_timeout: CallTimeout = 10.0, output: OutputOpt = OutputFormat.TABLE) -> None:
    """Who holds the app's lock, until when, and the latest fencing token."""
    from ..rollout import lock_status

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)

    state = _run_closing(registry, lambda: lock_status(registry[target.fleet.spec.control_plane],
                                                       target.app.metadata.name))
    now = time.time()
    if output is not OutputFormat.TABLE:
        dump(state.to_dict(now) if state else {"app": target.app.metadata.name, "holder": None}, output.value)
        return
    if state is None or state.holder is None:
        token = f" (last fencing token {state.token})" if state else ""
        out_console.print(f"lock of {target.app.metadata.name}: free{token}")
        return
    alive = "live" if state.live(now) else "expired"
    out_console.print(f"lock of {target.app.metadata.name}: held by {state.holder}, fencing token {state.token}, "
                      f"renewed {_when(state.renewed_at)}, {alive} (expires in {state.expires_at - now:.0f}s)",
                      markup=False, highlight=False)


@lock_app.command("break")
def lock_break_cmd(files: Files, app_name: AppName = None, kubeconfig: Kubeconfig = None,
                   request_timeout: CallTimeout = 10.0,
                   yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False) -> None:
    """Free the app's lock; the next holder's higher fencing token stops the old holder's writes."""
    from ..rollout import break_lock, lock_status

    target = load_target(files, app_name)
    registry = _registry(target, kubeconfig, request_timeout)
    name = target.app.metadata.name

    async def work(confirmed: bool) -> Any:
        conn = registry[target.fleet.spec.control_plane]
        try:
            state = await lock_status(conn, name)
            if state is not None and state.live(time.time()) and not confirmed and not yes:
                return state, False
            return await break_lock(conn, name, confirmed=confirmed or yes), True
        finally:
            await registry.close()

    state, done = _run(lambda: work(False))
    if not done:
        question = (f"{state.holder} holds the lock of {name} and its lease is live; break it anyway? "
                    "(its further writes will be fenced off)")
        if not typer.confirm(question, default=False):
            raise UserError(f"lock of {name} not broken (not confirmed); nothing changed. Pass --yes to skip asking")
        registry = _registry(target, kubeconfig, request_timeout)
        state, done = _run(lambda: work(True))
    if state is None or state.holder is None:
        out_console.print(f"lock of {name} was already free")
    else:
        out_console.print(f"lock of {name} broken (was held by {state.holder}, fencing token {state.token})",
                          markup=False, highlight=False)
