"""The database gate: before a disruptive step, ask Cassandra itself, on every node, through ``pods/exec``.

Owns: :class:`DatabaseGate` (``database``), which joins the Kubernetes gates of :mod:`.gates`, and
:func:`ring_reports`, which ``isthmus status`` shares. Each Ready pod of the app that a container runtime
runs, in every member that answers, runs ``nodetool status``, ``describecluster``, ``netstats`` and
``compactionstats`` in one exec (bounded concurrency, a timeout on each); :func:`.ringview.judge` says
whether the step may start. Kubernetes readiness cannot see what this sees: a pod can be Ready while
Cassandra in another region marks its node DN.

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
from dataclasses import dataclass

from ..kube import ClusterConnection, KubeError, KubeObject, Reach, pod_exec
from .gates import GateContext, GateResult, Observation, Verdict, pod_ready
from .ringview import NODETOOL_SCRIPT, NodeReport, judge, parse_report

__all__ = ["CASSANDRA_CONTAINER", "DC_LABEL", "DatabaseGate", "database_pods", "has_runtime", "ring_reports"]

CASSANDRA_CONTAINER = "cassandra"
DC_LABEL = "isthmus.dev/datacenter"


def has_runtime(pod: KubeObject) -> bool:
    """A container runtime reports a container ID; simulated pods (kwok's fakes) have none: no process."""
    return any(s.get("containerID") for s in (pod.get("status") or {}).get("containerStatuses") or [])


def _owner(pod: KubeObject) -> str:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "StatefulSet":
            return str(ref.get("name"))
    return ""


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
            for cluster, view in observation.items() if view.reach is Reach.DONE}


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

    async def check(self, ctx: GateContext) -> GateResult:
        pods = database_pods(ctx.observation)
        if not any(pods.values()):
            return GateResult(self.name, Verdict.PASS, "no database process to ask (no pod runs in a container "
                                                       "runtime)")
        reports = await ring_reports(ctx.connections, ctx.namespace, {c: ps for c, ps in pods.items() if ps},
                                     within=self.within, concurrency=self.concurrency)
        unreachable = {dc for dc, cluster in self.datacenters.items()
                       if ctx.observation.get(cluster) is None or ctx.observation[cluster].reach is not Reach.DONE}
        tolerated = {str((p.get("status") or {}).get("podIP")) for c, view in ctx.observation.items()
                     for p in view.pods if (c, _owner(p)) in ctx.tolerated}
        verdict = judge(reports, unreachable_datacenters=unreachable, tolerated=tolerated)
        if verdict.ok:
            return GateResult(self.name, Verdict.PASS, f"{len(reports)} nodes agree: every node UN, one schema")
        return GateResult(self.name, Verdict.WAIT, str(verdict), verdict.clusters)
