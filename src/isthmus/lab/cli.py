"""``isthmus lab ...``: the lab's commands as a typer app (``lab_app``), wired in by the main CLI.

Owns: option parsing, rendering status (a rich table, or ``-o json``) and turning every
:class:`~isthmus.lab.errors.LabError` into one line on stderr and exit code 2.
Must not: hold lab logic; each command gathers options and calls one :class:`Lab` method.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from isthmus import console

from .components import Component
from .errors import LabError
from .lab import ComponentState, Lab, LabSettings
from .latency import RTT_PROFILES, Link, parse_bandwidth, parse_duration_ms
from .latency import rtt_profile as rtt_profile_of
from .processes import log_tail
from .specs import LabClusterSpec, default_specs
from .state import PodMode

__all__ = ["fault_app", "lab_app"]

lab_app = typer.Typer(name="lab", help="Several real Kubernetes control planes on this machine.",
                      no_args_is_help=True, add_completion=False)
fault_app = typer.Typer(name="fault", help="Inject faults into a running lab.", no_args_is_help=True)
lab_app.add_typer(fault_app)

P = ParamSpec("P")
R = TypeVar("R")

NameOpt = Annotated[str, typer.Option("--name", help="Lab name (state in ~/.cache/isthmus/lab/state/NAME).")]
StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", help="Explicit lab state folder.")]
ClusterArg = Annotated[str, typer.Argument(help="Cluster name, e.g. c1.")]
NodeArg = Annotated[str, typer.Argument(help="Node name, e.g. c1-region-1a-1.")]


class LabOutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A LabError is a user error: print its message on stderr and exit 2."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (LabError, ValueError) as exc:
            console.err_console.print(Text.assemble(("error: ", "red"), str(exc)), highlight=False)
            raise typer.Exit(2) from exc
    return wrapper


def _lab(name: str, state_dir: Path | None) -> Lab:
    return Lab(name=name, state_dir=state_dir)


@lab_app.command()
@_user_errors
def up(
    clusters: Annotated[int, typer.Option("--clusters", "-n", min=1, help="Number of clusters.")] = 3,
    name: NameOpt = "default",
    state_dir: StateDirOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds for each cluster to become Ready.")] = 120.0,
    fleet: Annotated[Path | None, typer.Option("--fleet", help="Shape the lab like this Fleet spec (and its plan)."
                                               )] = None,
    pods: Annotated[PodMode, typer.Option(help="real: Cassandra pods run for real (a JVM per pod); simulated: kwok "
                                               "fakes every pod.")] = PodMode.REAL,
    proxy: Annotated[bool, typer.Option("--proxy", help="Put Toxiproxy between the kubeconfig and each API server"
                                                        " (for `lab fault latency|partition`).")] = False,
    rtt_profile: Annotated[str | None, typer.Option(
        "--rtt-profile", help=f"Apply real inter-region round trips to the clusters (implies --proxy):"
                              f" {', '.join(sorted(RTT_PROFILES))}.")] = None,
    minimal: Annotated[bool, typer.Option("--minimal", help="Only etcd and kube-apiserver per cluster.")] = False,
) -> None:
    """Start the lab: its pod network, then per cluster etcd, kube-apiserver, controller-manager, scheduler,
    kwok, the cluster DNS and the pod runtime (with --minimal: etcd and kube-apiserver only)."""
    if rtt_profile is not None:
        rtt_profile_of(rtt_profile)  # a bad name fails before anything starts
    specs = _fleet_specs(fleet) if fleet is not None else default_specs(clusters)
    settings = LabSettings(ready_timeout=timeout, proxy=proxy, rtt_profile=rtt_profile, minimal=minimal, pods=pods)
    lab = Lab(name=name, specs=specs, state_dir=state_dir, settings=settings)
    lab.up()
    console.err_console.print(f"lab {name!r} is up: {', '.join(s.context for s in lab.specs)}")
    console.out_console.print(lab.env(), highlight=False)


def _fleet_specs(path: Path) -> tuple[LabClusterSpec, ...]:
    """The Fleet's clusters with the CIDRs its plan (honouring the lock beside it) gives them."""
    import yaml

    from ..netplan import Lock, plan
    from ..spec import load_file, require_fleet
    from .fleet import specs_from_fleet

    fleet = require_fleet(load_file(path))
    lock_file = path.with_name(path.stem + ".lock.yaml")
    lock = Lock.from_dict(yaml.safe_load(lock_file.read_text())) if lock_file.exists() else None
    return specs_from_fleet(fleet, plan(fleet, lock))


@lab_app.command()
@_user_errors
def down(name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """Stop every lab process and remove the lab's state folder."""
    _lab(name, state_dir).down()
    console.err_console.print(f"lab {name!r} is down")


@lab_app.command()
@_user_errors
def status(
    name: NameOpt = "default",
    state_dir: StateDirOpt = None,
    output: Annotated[LabOutputFormat, typer.Option("--output", "-o", help="table or json")] = (
        LabOutputFormat.TABLE
    ),
) -> None:
    """Show each cluster's components and whether they run."""
    st = _lab(name, state_dir).status()
    if output is LabOutputFormat.JSON:
        console.dump(st.to_json(), "json")
        return
    table = Table(title=f"lab {st.name} ({st.phase})  KUBECONFIG={st.kubeconfig}")
    table.add_column("cluster")
    table.add_column("context")
    table.add_column("server", no_wrap=True)
    table.add_column("zones")
    short = {Component.ETCD: "etcd", Component.APISERVER: "apiserver", Component.CONTROLLER_MANAGER: "kcm",
             Component.SCHEDULER: "scheduler", Component.KWOK: "kwok", Component.DNS: "dns",
             Component.RUNTIME: "runtime"}
    for comp in Component:
        table.add_column(short[comp])
    links = any(c.link is not None for c in st.clusters)
    if links:
        table.add_column("link")
    colour = {ComponentState.RUNNING: "green", ComponentState.FROZEN: "cyan",
              ComponentState.STOPPED: "yellow", ComponentState.DEAD: "red"}
    for c in st.clusters:
        zones = " ".join(f"{z}:{n}" for z, n in c.spec.zones.items())
        states = {s.component: s.state for s in c.components}
        cells = [f"[{colour[states[comp]]}]{states[comp].value}[/]" if comp in states else "-" for comp in Component]
        table.add_row(c.spec.name, c.context, c.server, zones, *cells, *([c.link or "-"] if links else []))
    console.out_console.print(table)
    console.out_console.print(_network_line(st.network), highlight=False)


def _network_line(net: dict[str, object]) -> str:
    """One line on the pod network: how clusters are joined, MTU, and what this kernel lacks."""
    if not net:
        return "network: none"
    joined = f"tunnel {net['tunnel']} (UDP {net['tunnelPort']})" if net.get("tunnel") else "native routing"
    line = (f"network ({'up' if net.get('up') else 'DOWN'}): {joined}, encryption {net['encryption']},"
            f" route MTU {net['routeMTU']}, mesh {net['mesh']}")
    fallbacks = net.get("fallbacks")
    if isinstance(fallbacks, list) and fallbacks:
        line += "; fallbacks: " + "; ".join(str(f) for f in fallbacks)
    return line


@lab_app.command()
@_user_errors
def env(name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """Print `export KUBECONFIG=...` for this lab (use: eval "$(isthmus lab env)")."""
    lab = _lab(name, state_dir)
    lab.status()  # raises if the lab does not exist
    sys.stdout.write(lab.env() + "\n")


@lab_app.command()
@_user_errors
def logs(
    cluster: ClusterArg,
    component: Annotated[str | None, typer.Argument(help="etcd, kube-apiserver, kube-controller-manager,"
                                                         " kube-scheduler or kwok; all if omitted.")] = None,
    name: NameOpt = "default",
    state_dir: StateDirOpt = None,
    tail: Annotated[int, typer.Option("--tail", help="Lines per log.")] = 50,
) -> None:
    """Print the tail of one component's log (or of all of a cluster's components)."""
    lab = _lab(name, state_dir)
    comps: list[Component | str] = [component] if component else list(Component)
    for comp in comps:
        path = lab.log_path(cluster, comp)
        if len(comps) > 1:
            sys.stdout.write(f"==> {path} <==\n")
        sys.stdout.write(log_tail(path, tail) + "\n")


@fault_app.command()
@_user_errors
def freeze(cluster: ClusterArg, name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """SIGSTOP the cluster's API server (calls to it hang)."""
    _lab(name, state_dir).freeze(cluster)


@fault_app.command()
@_user_errors
def thaw(cluster: ClusterArg, name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """SIGCONT the cluster's API server."""
    _lab(name, state_dir).thaw(cluster)


@fault_app.command()
@_user_errors
def latency(
    cluster: ClusterArg,
    rtt: Annotated[str | None, typer.Option("--rtt", help="Round trip to the API server, e.g. 80ms (0 removes it).")
                   ] = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="± this much on the round trip, e.g. 5ms.")] = None,
    bandwidth: Annotated[str | None, typer.Option("--bandwidth", help="Per direction, e.g. 1MB/s or 10Mbit/s;"
                                                                      " 'none' removes the limit.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove every delay, limit and partition.")] = False,
    name: NameOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Put distance between clients and the cluster's API server (needs `lab up --proxy`).

    Options not given keep their current value.
    """
    lab = _lab(name, state_dir)
    if clear:
        if rtt is not None or jitter is not None or bandwidth is not None:
            raise ValueError("--clear removes everything: give it alone, or --rtt/--jitter/--bandwidth without it")
        new = Link()
    else:
        if rtt is None and jitter is None and bandwidth is None:
            raise ValueError(f"nothing to change on {cluster}: give --rtt, --jitter, --bandwidth or --clear")
        old = lab.link(cluster)
        new = replace(
            old,
            rtt_ms=parse_duration_ms(rtt, what="--rtt") if rtt is not None else old.rtt_ms,
            jitter_ms=parse_duration_ms(jitter, what="--jitter") if jitter is not None else old.jitter_ms,
            bandwidth_kbps=(old.bandwidth_kbps if bandwidth is None else
                            None if bandwidth == "none" else parse_bandwidth(bandwidth)),
        )
    lab.set_link(cluster, new)
    console.err_console.print(f"{cluster}: {new}")


@fault_app.command()
@_user_errors
def partition(
    cluster: ClusterArg,
    heal: Annotated[bool, typer.Option("--heal", help="End the partition (delays stay).")] = False,
    name: NameOpt = "default",
    state_dir: StateDirOpt = None,
) -> None:
    """Connections to the cluster's API server are accepted, then nothing answers (needs `lab up --proxy`)."""
    lab = _lab(name, state_dir)
    new = replace(lab.link(cluster), partitioned=not heal)
    lab.set_link(cluster, new)
    console.err_console.print(f"{cluster}: {new}")


@fault_app.command("stop")
@_user_errors
def stop_cluster(cluster: ClusterArg, name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """Stop all of the cluster's processes (data and ports are kept)."""
    _lab(name, state_dir).stop_cluster(cluster)


@fault_app.command("start")
@_user_errors
def start_cluster(cluster: ClusterArg, name: NameOpt = "default", state_dir: StateDirOpt = None) -> None:
    """Start a stopped cluster again and wait until it is Ready."""
    _lab(name, state_dir).start_cluster(cluster)


@fault_app.command("node-not-ready")
@_user_errors
def node_not_ready(cluster: ClusterArg, node: NodeArg, name: NameOpt = "default",
                   state_dir: StateDirOpt = None) -> None:
    """Make a node NotReady; its pods turn not Ready."""
    _lab(name, state_dir).node_not_ready(cluster, node)


@fault_app.command("node-recover")
@_user_errors
def node_recover(cluster: ClusterArg, node: NodeArg, name: NameOpt = "default",
                 state_dir: StateDirOpt = None) -> None:
    """Make a node and its pods Ready again."""
    _lab(name, state_dir).node_recover(cluster, node)
