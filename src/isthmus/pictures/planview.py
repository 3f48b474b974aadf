"""A plan as a rich table for the terminal and as a markdown report."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..netplan import CheckReport, ClusterPlan, NetworkPlan

__all__ = ["markdown", "print_check", "print_plan"]


def _cidrs(*values: object | None) -> str:
    return "\n".join(str(v) for v in values if v is not None) or "-"


def _row(c: ClusterPlan) -> list[str]:
    cap = c.capacity
    return [
        c.name,
        c.region,
        "-" if c.cluster_id is None else str(c.cluster_id),
        str(c.nodes),
        _cidrs(c.pod_cidr, c.pod_cidr_v6),
        _cidrs(c.service_cidr, c.service_cidr_v6),
        str(c.mtu.route_mtu),
        f"{cap.pod_addresses_used:,} / {cap.pod_addresses_total:,}",
        f"+{cap.nodes_addable}",
    ]


_HEADERS = ["cluster", "region", "ID", "nodes", "pod CIDR", "service CIDR", "route MTU", "pods used / total",
            "nodes addable"]


def print_plan(plan: NetworkPlan, console: Console) -> None:
    net = plan.network
    title = (f"Fleet [bold]{plan.fleet}[/]: {net.routing.value}"
             f"{'/' + net.tunnel_protocol.value if net.routing.value == 'tunnel' else ''}, "
             f"encryption {net.encryption.value}, mesh {net.mesh.value}")
    table = Table(*_HEADERS, title=title, box=box.SIMPLE_HEAVY, title_justify="left")
    for cluster in plan.clusters:
        table.add_row(*_row(cluster))
    console.print(table)
    mtu = plan.mesh_mtu
    breakdown = " + ".join(f"{o.layer} {o.bytes}" for o in mtu.overheads) or "no overhead"
    console.print(
        f"Mesh MTU: underlay {mtu.underlay_mtu} - ({breakdown}) = [bold]{mtu.route_mtu}[/]; "
        f"TCP MSS {mtu.tcp_mss_v4} (IPv4), {mtu.efficiency:.1%} of native routing"
    )
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def print_check(report: CheckReport, console: Console) -> None:
    if not report.findings:
        console.print(f"[green]Fleet {report.fleet}: no overlaps, collisions or MTU mismatches found.[/]")
        return
    table = Table("severity", "code", "clusters", "finding", box=box.SIMPLE_HEAVY,
                  title=f"Fleet {report.fleet}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)",
                  title_justify="left")
    for f in report.findings:
        colour = "red" if f in report.errors else "yellow"
        table.add_row(f"[{colour}]{f.severity}[/]", f.code, ", ".join(f.clusters), f.message)
    console.print(table)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("\n", "<br>").replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def markdown(plan: NetworkPlan) -> str:
    net = plan.network
    mtu = plan.mesh_mtu
    parts = [
        f"# Network plan for fleet `{plan.fleet}`",
        "",
        "## Settings",
        "",
        _md_table(["setting", "value"], [
            ["routing", net.routing.value],
            ["tunnel protocol", net.tunnel_protocol.value if net.routing.value == "tunnel" else "-"],
            ["encryption", net.encryption.value],
            ["mesh", net.mesh.value],
            ["max connected clusters", str(net.max_connected_clusters)],
            ["pod supernet", str(net.pod_supernet)],
            ["service supernet", str(net.service_supernet)],
            ["avoided ranges", ", ".join(str(a) for a in net.avoid) or "-"],
            ["per-node pod block", f"/{net.pod_mask_size}"],
            ["headroom", f"{net.headroom:g}x"],
        ]),
        "",
        "## Clusters",
        "",
        _md_table(_HEADERS, [_row(c) for c in plan.clusters]),
        "",
        "## MTU",
        "",
        f"The mesh runs at the smallest underlay MTU of its clusters, {mtu.underlay_mtu}.",
        "",
        _md_table(["layer", "bytes"], [[o.layer, str(o.bytes)] for o in mtu.overheads]
                  + [["**route MTU**", f"**{mtu.route_mtu}**"]]),
        "",
        f"TCP MSS is {mtu.tcp_mss_v4} over IPv4 and {mtu.tcp_mss_v6} over IPv6, "
        f"{mtu.efficiency:.1%} of what native routing without encryption would carry.",
        "",
        "## Capacity",
        "",
        _md_table(["cluster", "per-node blocks used / total", "pod addresses free", "free", "nodes addable"], [
            [c.name, f"{c.capacity.node_blocks_used} / {c.capacity.node_blocks_total}",
             f"{c.capacity.pod_addresses_free:,}", f"{c.capacity.free_fraction:.0%}", str(c.capacity.nodes_addable)]
            for c in plan.clusters
        ]),
        "",
    ]
    if plan.warnings:
        parts += ["## Warnings", "", *(f"- {w}" for w in plan.warnings), ""]
    return "\n".join(parts)
