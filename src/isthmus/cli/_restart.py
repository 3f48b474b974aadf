"""`isthmus restart`: a rolling restart of the app's ring with no spec change, under the app's lock."""

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


def _table(result: Any) -> Table:
    state = result.state
    table = Table("#", "node", "datacenter", "rack", "cluster", "outcome", "note", box=box.SIMPLE_HEAVY,
                  title=f"restart {state.number} of {state.app}: {state.phase.value}", title_justify="left")
    for i, node in enumerate(state.plan.nodes, 1):
        rec = state.nodes[node.id]
        outcome = rec.outcome.value + (" (earlier run)" if node.id in result.skipped else "")
        table.add_row(str(i), node.pod, node.datacenter, node.rack, node.cluster, outcome, rec.note)
    return table


@app.command("restart")
def restart_cmd(
    files: Files,
    dc: Annotated[list[str] | None, typer.Option("--dc", help="Only this datacenter's nodes (repeat)")] = None,
    app_name: AppName = None,
    kubeconfig: Kubeconfig = None,
    request_timeout: CallTimeout = 10.0,
    identity: AsIdentity = None,
    lock_wait: LockWait = 0.0,
    gate_timeout: Annotated[float, typer.Option(help="Seconds a round may wait for the gates; then the restart "
                                                     "pauses")] = 600.0,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round's pods may take to be back and Ready")]
    = 1800.0,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the gates and the pods")] = 5.0,
    one_node_at_a_time: Annotated[bool, typer.Option("--one-node-at-a-time", help="Never a rack at once, even where "
                                                     "the ring's replication proves it safe")] = False,
    output: OutputOpt = OutputFormat.TABLE,
) -> None:
    """Restart every node (or a datacenter's), a rack at once where the ring's replication proves it safe, else
    one node at a time, each round behind the database gate; resumable, in `isthmus history`."""
    from ..rollout import RestartOptions, run_restart
    from ..rollout.restarting import check_datacenters
    from ..spec import CassandraCluster

    target = load_target(files, app_name)
    if not isinstance(target.app, CassandraCluster):
        raise UserError(f"app {target.app.metadata.name} is a {type(target.app).__name__}; only a "
                        "CassandraCluster has a ring to restart")
    check_datacenters(target.app, dc or ())  # refused before any cluster is contacted
    registry = _registry(target, kubeconfig, request_timeout)
    options = RestartOptions(identity=identity, lock_wait=lock_wait, gate_timeout=gate_timeout,
                             round_timeout=round_timeout, poll_interval=poll,
                             rack_at_once=not one_node_at_a_time)
    started = time.monotonic()

    async def work(progress: Any) -> Any:
        try:
            return await run_restart(target.app, target.fleet, registry, datacenters=dc or (), options=options,
                                     progress=progress)
        finally:
            await registry.close()

    with _live([d.name for d in target.app.spec.datacenters if not dc or d.name in dc]) as progress:
        result = _run(lambda: work(progress))
    if output is not OutputFormat.TABLE:
        dump({**result.to_dict(), "seconds": round(time.monotonic() - started, 3)}, output.value)
    else:
        out_console.print(_table(result))
        for choice in result.choices:
            out_console.print(choice.line(), markup=False, highlight=False)
        colour = "green" if result.ok else "yellow" if result.state.phase.value == "Paused" else "red"
        out_console.print(f"restart {result.state.number}: [{colour}]{result.state.phase.value}[/]", highlight=False)
        out_console.print(f"{result.state.message} ({len(result.rounds)} round(s) by this run, {len(result.skipped)} "
                          "node(s) by an earlier one)", markup=False, highlight=False)
    if not result.ok:
        raise typer.Exit(1)
