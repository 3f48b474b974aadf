"""The database gate: before a disruptive step, ask Cassandra itself, on every node, through ``pods/exec``.

Owns: :class:`DatabaseGate` (``database``), which joins the Kubernetes gates of :mod:`.gates`, and
:func:`database_view`, the ring per node that ``isthmus status`` shows beside the pods. Each Ready
pod of the app that a container runtime runs, in every member that answers, runs ``nodetool status``,
``describecluster``, ``netstats`` and ``compactionstats`` in one exec (bounded concurrency, a timeout on
each); :func:`.ringview.judge` says whether the step may start. Kubernetes readiness cannot see what
this sees: a pod can be Ready while Cassandra in another region marks its node DN.

Why ``pods/exec`` and ``nodetool`` (not CQL through ``pods/portforward``, not JMX): the ring's state per
node (UN/DN/UJ/UL, streams, repairs) is what nodetool reports from each node's own gossip, through the
same API server path that works from a laptop, from the operator, and across regions; CQL's
``system.peers`` has no liveness, and JMX would need a port-forward per node. Pods that no runtime runs
(kwok's simulated pods) have no process to ask: the gate passes and says so.

Must not: change the ring; judge (that is :mod:`.ringview`'s, pure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..kube import ClusterConnection, KubeError, KubeObject, Reach, pod_exec
from .gates import GateContext, GateResult, GateVerdict, Observation, observe, owner_set, pod_ready
from .ringview import NODETOOL_SCRIPT, NodeReport, judge, parse_report
from .steps import DC_LABEL

__all__ = ["CASSANDRA_CONTAINER", "DC_LABEL", "DatabaseGate", "DatabaseView", "NodeView", "database_pods",
           "database_view", "has_runtime", "ring_reports", "summarise"]

CASSANDRA_CONTAINER = "cassandra"


def has_runtime(pod: KubeObject) -> bool:
    """A container runtime reports a container ID; simulated pods (kwok's fakes) have none: no process."""
    return any(s.get("containerID") for s in (pod.get("status") or {}).get("containerStatuses") or [])


async def _ask(conn: ClusterConnection, namespace: str, pod: KubeObject, *, within: float,
               limit: asyncio.Semaphore) -> NodeReport:
    name = pod["metadata"]["name"]
    dc = str((pod["metadata"].get("labels") or {}).get(DC_LABEL, "?"))
    address = str((pod.get("status") or {}).get("podIP") or "")
    async with limit:
        try:
            result = await pod_exec(conn, namespace, name, CASSANDRA_CONTAINER, ["sh", "-c", NODETOOL_SCRIPT],
                                    within=within)
        except (KubeError, TimeoutError) as exc:
            return NodeReport(conn.name, name, dc, address, error=f"nodetool: {exc or 'timed out'}")
    if not result.ok and "=== isthmus: status" not in result.stdout:
        said = (result.stderr.strip() or result.stdout.strip())[-300:]
        return NodeReport(conn.name, name, dc, address, error=f"nodetool exited {result.exit_code}: {said}")
    report = parse_report(conn.name, name, dc, address, result.stdout)
    if not result.ok and report.answered:  # a later section failed (nodetool's own words are in stderr)
        said = result.stderr.strip()[-300:]
        return NodeReport(conn.name, name, dc, address, error=f"nodetool exited {result.exit_code}: {said}")
    return report


def database_pods(observation: Observation) -> dict[str, list[KubeObject]]:
    """The pods to ask, per member: Ready, run by a container runtime, not being deleted."""
    return {cluster: [p for p in view.pods if pod_ready(p) and has_runtime(p)
                      and not p["metadata"].get("deletionTimestamp")]
            for cluster, view in observation.items() if view.reach is Reach.REACHED}


async def ring_reports(connections: Mapping[str, ClusterConnection], namespace: str,
                       pods: Mapping[str, Sequence[KubeObject]], *, within: float = 60.0,
                       concurrency: int = 8) -> list[NodeReport]:
    """Every listed pod's :class:`NodeReport`, asked concurrently (at most ``concurrency`` execs at once)."""
    limit = asyncio.Semaphore(concurrency)
    asks = [_ask(connections[c], namespace, p, within=within, limit=limit)
            for c in sorted(pods) for p in sorted(pods[c], key=lambda p: p["metadata"]["name"])]
    return list(await asyncio.gather(*asks))


@dataclass
class DatabaseGate:
    """``database``: every node UN in every node's view, one schema, nothing streaming or repairing.

    ``datacenters``: the app's datacenter -> member cluster, so that the nodes of a member that does not
    answer are left out (Unknown, not a reason to stall the others).
    """

    datacenters: Mapping[str, str]
    within: float = 60.0
    concurrency: int = 8
    name: str = "database"
    last_reports: list[NodeReport] = field(default_factory=list)
    """The nodes' answers at the last check (how a rack may restart is read from them: :mod:`.rackrolling`)."""

    async def check(self, ctx: GateContext) -> GateResult:
        pods = database_pods(ctx.observation)
        self.last_reports = []
        if not any(pods.values()):
            return GateResult(self.name, GateVerdict.PASS, "no database process to ask (no pod runs in a container "
                                                       "runtime)")
        reports = await ring_reports(ctx.connections, ctx.namespace, {c: ps for c, ps in pods.items() if ps},
                                     within=self.within, concurrency=self.concurrency)
        self.last_reports = reports
        unreachable = {dc for dc, cluster in self.datacenters.items()
                       if ctx.observation.get(cluster) is None or ctx.observation[cluster].reach is not Reach.REACHED}
        tolerated = {str((p.get("status") or {}).get("podIP")) for c, view in ctx.observation.items()
                     for p in view.pods if (c, owner_set(p)) in ctx.tolerated}
        verdict = judge(reports, unreachable_datacenters=unreachable, tolerated=tolerated)
        if verdict.ok:
            return GateResult(self.name, GateVerdict.PASS, f"{len(reports)} nodes agree: every node UN, one schema")
        return GateResult(self.name, GateVerdict.WAIT, str(verdict), verdict.clusters)


@dataclass(frozen=True)
class NodeView:
    """One node as the ring sees it: its state in each asking datacenter's view, load, owns, schema."""

    datacenter: str
    rack: str
    address: str
    pod: str
    cluster: str
    seen: Mapping[str, str]
    """Asking datacenter -> state code (UN, DN, UJ...); with several nodes asked there, the worst."""
    load: str
    owns: str
    schema: str

    @property
    def state(self) -> str:
        """The one code every view agrees on, else each view's, e.g. ``DN (dc-eu), UN (dc-us)``."""
        codes = sorted(set(self.seen.values()))
        if len(codes) == 1:
            return codes[0]
        return ", ".join(f"{code} ({dc})" for dc, code in sorted(self.seen.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"datacenter": self.datacenter, "rack": self.rack, "address": self.address, "pod": self.pod,
                "cluster": self.cluster, "state": self.state, "seen": dict(self.seen), "load": self.load,
                "owns": self.owns, "schema": self.schema}


@dataclass(frozen=True)
class DatabaseView:
    """What ``isthmus status`` shows beside the pods: the ring per node, and who could not be asked."""

    nodes: tuple[NodeView, ...] = ()
    errors: tuple[str, ...] = ()
    asked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "nodes": [n.to_dict() for n in self.nodes], "errors": list(self.errors)}


def summarise(reports: Sequence[NodeReport]) -> DatabaseView:
    """Merge every node's view into one row per node (pure)."""
    by_address = {r.address: r for r in reports}
    rows: dict[str, dict[str, Any]] = {}
    for report in reports:
        if not report.answered:
            continue
        for node in report.ring:
            row = rows.setdefault(node.address, {"node": node, "seen": {}})
            seen = row["seen"]
            if seen.get(report.datacenter, "UN") == "UN":  # a datacenter's worst view wins: one DN is DN
                seen[report.datacenter] = node.code
            if report.address == node.address:
                row["node"] = node  # a node's own line has its freshest load
    versions = {addr: version for r in reports for version, addrs in r.schema.items() for addr in addrs}
    nodes = []
    for address, row in rows.items():
        node = row["node"]
        own = by_address.get(address)
        nodes.append(NodeView(node.datacenter, node.rack, address, own.pod if own else "", own.cluster if own else "",
                              dict(row["seen"]), node.load, node.owns, versions.get(address, "?")))
    nodes.sort(key=lambda n: (n.datacenter, n.rack, n.address))
    errors = tuple(f"{r.cluster}/{r.pod}: {r.error}" for r in reports if not r.answered)
    return DatabaseView(tuple(nodes), errors, len(reports))


async def database_view(connections: Mapping[str, ClusterConnection], app: str, namespace: str, *,
                        within: float = 60.0) -> DatabaseView:
    """Ask every Ready node of the app (through ``pods/exec``) and merge the answers."""
    observation = await observe(connections, app, namespace)
    pods = {c: ps for c, ps in database_pods(observation).items() if ps}
    return summarise(await ring_reports(connections, namespace, pods, within=within))
