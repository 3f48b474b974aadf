"""Taking one Cassandra node out of the ring: ``nodetool decommission`` on it, ``removenode`` as the fallback.

Owns: :func:`decommission_node` (``nodetool decommission`` in the node's pod through ``pods/exec`` on its
member's API server: the node streams its ranges to the nodes that take them over, then leaves the ring
cleanly, so no datacenter keeps a DN ghost of it) and :func:`remove_node` (``nodetool removenode <host
ID>`` run on a node that stays, for a node that cannot decommission itself because it is down: the
ranges are streamed from the other replicas instead). Both return a :class:`NodeLeft`, never raise for
Cassandra's refusal: what failed names the node, the command and Cassandra's own words
(:func:`.repairplan.nodetool_failure`). :func:`host_id` finds a node's host ID in a ``nodetool status``.

Shared by removing a datacenter (:mod:`.datacenters`) and scaling one down: callers decide which node
goes, in which order, and keep their own progress.

Must not: choose nodes; delete objects (callers do, once the node has left).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..kube import ClusterConnection, ClusterUnreachable, KubeError, pod_exec
from .dbgate import CASSANDRA_CONTAINER
from .repairplan import nodetool_failure
from .ringview import parse_status

__all__ = ["NodeLeft", "decommission_node", "host_id", "remove_node"]

DECOMMISSION = ("nodetool", "decommission")


@dataclass(frozen=True)
class NodeLeft:
    """How taking one node out went: ``error`` empty when it left the ring."""

    pod: str
    command: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


async def _run(conn: ClusterConnection, namespace: str, pod: str, command: Sequence[str], *,
               within: float) -> NodeLeft:
    said = " ".join(command)
    try:
        result = await pod_exec(conn, namespace, pod, CASSANDRA_CONTAINER, command, within=within)
    except ClusterUnreachable:
        raise
    except TimeoutError:
        return NodeLeft(pod, said, f"{conn.name}/{pod}: {said}: not finished within {within:g}s")
    except KubeError as exc:
        return NodeLeft(pod, said, f"{conn.name}/{pod}: {said}: {exc}")
    if not result.ok:
        return NodeLeft(pod, said, f"{conn.name}/{pod}: {said} exited {result.exit_code}: "
                                   f"{nodetool_failure(result.stdout, result.stderr)}")
    return NodeLeft(pod, said)


async def decommission_node(conn: ClusterConnection, namespace: str, pod: str, *, within: float = 3600.0,
                            force: bool = False) -> NodeLeft:
    """``nodetool decommission`` on ``pod`` (it streams its data away and leaves); raises ClusterUnreachable.

    ``force`` (``--force``): leave even when a keyspace keeps as many replicas in the node's datacenter as it has
    nodes, which Cassandra otherwise refuses ("Not enough live nodes to maintain replication factor"). Only
    for a datacenter that is going away as a whole and whose remaining replication cannot be dropped first:
    Cassandra 5 refuses to drop a datacenter that still has nodes from ``system_auth``."""
    return await _run(conn, namespace, pod, (*DECOMMISSION, "--force") if force else DECOMMISSION, within=within)


async def remove_node(conn: ClusterConnection, namespace: str, via: str, node_host_id: str, *,
                      within: float = 3600.0) -> NodeLeft:
    """``nodetool removenode <host ID>`` run on ``via``, a node that stays (for a node that is down)."""
    return await _run(conn, namespace, via, ("nodetool", "removenode", node_host_id), within=within)


def host_id(status: str, address: str) -> str | None:
    """The host ID of the node at ``address`` in ``nodetool status`` output (None: not in the ring)."""
    return next((n.host_id for n in parse_status(status) if n.address == address), None)
