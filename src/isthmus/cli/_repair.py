"""`isthmus repair`: primary-range repair of the app's ring, node by node, under the app's lock."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from ..console import dump, out_console
from ..errors import UserError
from ._app import OutputFormat, OutputOpt, app
from ._deploy import AppName, AsIdentity, CallTimeout, Files, Kubeconfig, LockWait, _live, _registry, _run, load_target

__all__: list[str] = []


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _table(result: Any) -> Table:
    state = result.state
    table = Table("#", "node", "datacenter", "rack", "cluster", "outcome", "started", "finished", "note",
                  box=box.SIMPLE_HEAVY, title=f"repair {state.number} of {state.app}: {state.phase.value}",
                  title_justify="left")
    for i, node in enumerate(state.plan.nodes, 1):
        rec = state.nodes[node.id]
        outcome = rec.outcome.value + (" (earlier run)" if node.id in result.skipped else "")
        table.add_row(str(i), node.pod, node.datacenter, node.rack, node.cluster, outcome, _when(rec.started),
                      _when(rec.finished), rec.note)
    return table


@app.command("repair")
def repair_cmd(
    files: Files,
    keyspace: Annotated[list[str] | None, typer.Option("--keyspace", "-k", help="Repair this keyspace (repeat); "
                                                       "default every keyspace")] = None,
    dc: Annotated[list[str] | None, typer.Option("--dc", help="Only this datacenter's nodes (repeat)")] = None,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    identity: AsIdentity = None,
    lock_wait: LockWait = 0.0,
    gate_timeout: Annotated[float, typer.Option(help="Seconds a node may wait for the database gate; then "
                                                     "the repair pauses")] = 600.0,
    node_timeout: Annotated[float, typer.Option(help="Seconds one nodetool repair may run")] = 3600.0,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the database gate")] = 5.0,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Run `nodetool repair -pr -full` node by node, DC by DC, each behind the database gate; resumable."""
    from ..rollout import RepairOptions, run_repair
    from ..rollout.repairplan import check_selection
    from ..spec import CassandraCluster

    target = load_target(files, app_name)
    if not isinstance(target.app, CassandraCluster):
        raise UserError(f"app {target.app.metadata.name} is a {type(target.app).__name__}; only a "
                        "CassandraCluster has a ring to repair")
    check_selection(target.app, dc or ())  # a --dc the spec lacks: refused before any cluster is contacted
    registry = _registry(target, kubeconfig, request_timeout)
    options = RepairOptions(identity=identity, lock_wait=lock_wait, gate_timeout=gate_timeout,
                            node_timeout=node_timeout, poll_interval=poll)
    started = time.monotonic()

    async def work(progress: Any) -> Any:
        try:
            return await run_repair(target.app, target.fleet, registry, keyspaces=keyspace or (),
                                    datacenters=dc or (), options=options, progress=progress)
        finally:
            await registry.close()

    with _live([d.name for d in target.app.spec.datacenters if not dc or d.name in dc]) as progress:
        result = _run(lambda: work(progress))
    if output is not OutputFormat.TABLE:
        dump({**result.to_dict(), "seconds": round(time.monotonic() - started, 3)}, output.value)
    else:
        out_console.print(_table(result))
        colour = "green" if result.ok else "yellow" if result.state.phase.value == "Paused" else "red"
        out_console.print(f"repair {result.state.number}: [{colour}]{result.state.phase.value}[/]", highlight=False)
        out_console.print(f"{result.state.message} ({len(result.repaired)} nodes repaired by this run, "
                          f"{len(result.skipped)} by an earlier one)", markup=False, highlight=False)
    if not result.ok:
        raise typer.Exit(1)
