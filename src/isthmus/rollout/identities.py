"""Who each Cassandra node is: the address the ring knows each pod by, kept where its replacement can read it.

Owns: :func:`observed_identities`, :func:`merged_identities` and :func:`spec_pods` (pure), and
:func:`record_identities`, which asks every Ready node of the app (the database gate's one exec per node,
:func:`.dbgate.ring_reports`, through ``pods/exec``) and writes, per datacenter, the ConfigMap
``<app>-<dc>-identities`` (pod name -> address) in that datacenter's cluster, by compare-and-swap. The
rendered init container reads it: a pod whose volume was lost starts with
``replace_address_first_boot=<its old address>`` (see :mod:`isthmus.render.cassandra`).

The rules:

- a pod is recorded only when it answered and its own ``nodetool status`` shows its address UN: a node
  that is joining or replacing (UJ) is not yet the node it will be;
- a pod that did not answer keeps its entry: a dead node's entry is what its replacement needs;
- an entry is dropped when the spec no longer has the pod (scaled away), or when another pod of the
  datacenter is now UN at that address (the address was reused: replacing it would replace a live node);
- nothing is written when nothing changed, and a datacenter whose cluster does not answer is left as it is.

Recording is bookkeeping, not a step: :func:`record_identities` returns what it could not do as notes and
never raises for a member that does not answer (it must not fail a rollout that succeeded). The
ConfigMaps carry bookkeeping labels (:func:`isthmus.kube.bookkeeping_labels`), so pruning and drift
never see them; :func:`.deploying.delete_app` deletes them with the app (a new ring must not try to replace
the nodes of an old one).

Must not: change the ring; write anything but the identities ConfigMaps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from ..errors import IsthmusError
from ..kube import ClusterConnection, bookkeeping_labels, write_config_map
from ..render.naming import CassandraNames
from ..spec import CassandraCluster
from .dbgate import database_pods, ring_reports
from .gates import observe
from .ringview import NodeReport
from .steps import DC_LABEL

__all__ = ["IDENTITIES_ROLE", "merged_identities", "observed_identities", "record_identities", "spec_pods",
           "write_identities"]

IDENTITIES_ROLE = "identities"


def observed_identities(reports: Sequence[NodeReport]) -> dict[str, dict[str, str]]:
    """Datacenter -> pod -> address, for every node that answered and is UN in its own view."""
    out: dict[str, dict[str, str]] = {}
    for report in reports:
        if not report.answered or not report.address:
            continue
        own = [node for node in report.ring if node.address == report.address]
        if own and all(node.normal for node in own):
            out.setdefault(report.datacenter, {})[report.pod] = report.address
    return out


def merged_identities(current: Mapping[str, str] | None, seen: Mapping[str, str],
                      pods: Collection[str]) -> dict[str, str] | None:
    """The identities to write (None: nothing to write), from the ConfigMap's data (None: no ConfigMap yet),
    what the ring showed (:func:`observed_identities` of one datacenter) and the pods the spec has there."""
    seen = {pod: address for pod, address in seen.items() if pod in pods}
    claimed = {address: pod for pod, address in seen.items()}
    kept = {pod: address for pod, address in (current or {}).items()
            if pod in pods and claimed.get(address, pod) == pod}
    wanted = {**kept, **seen}
    if wanted == dict(current or {}):
        return None
    return wanted


def spec_pods(app: CassandraCluster) -> dict[str, set[str]]:
    """Datacenter -> the names of the pods its StatefulSets have at the spec's size."""
    names = CassandraNames(app.metadata.name, app.namespace)
    out: dict[str, set[str]] = {}
    for dc in app.spec.datacenters:
        sizes = dc.rack_sizes()
        out[dc.name] = {pod for rack in dc.racks for pod in names.pods(dc.name, rack.name, sizes[rack.name])}
    return out


async def write_identities(connections: Mapping[str, ClusterConnection], app: CassandraCluster,
                           reports: Sequence[NodeReport]) -> list[str]:
    """Merge what ``reports`` show into each datacenter's ConfigMap; returns notes on what failed."""
    seen = observed_identities(reports)
    wanted = spec_pods(app)
    names = CassandraNames(app.metadata.name, app.namespace)

    async def one(name: str, cluster: str) -> str | None:
        conn = connections.get(cluster)
        if conn is None or name not in seen:  # nobody there answered: leave what is recorded
            return None
        labels = {**bookkeeping_labels(app.metadata.name, IDENTITIES_ROLE), DC_LABEL: name}
        try:
            await write_config_map(conn, names.identities(name), app.namespace, labels=labels,
                                   change=lambda current: merged_identities(current, seen[name], wanted[name]))
        except (IsthmusError, TimeoutError) as exc:
            return f"the identities of datacenter {name} are not recorded (the next rollout tries again): {exc}"
        return None

    notes = await asyncio.gather(*(one(dc.name, dc.cluster) for dc in app.spec.datacenters))
    return [n for n in notes if n]


async def record_identities(connections: Mapping[str, ClusterConnection], app: CassandraCluster, *,
                            within: float = 60.0) -> list[str]:
    """Ask every Ready node of ``app`` and record the identities (see the module docstring); returns notes."""
    try:
        observation = await observe(connections, app.metadata.name, app.namespace)
    except (IsthmusError, TimeoutError) as exc:
        return [f"the identities are not recorded (the next rollout tries again): {exc}"]
    pods = {c: ps for c, ps in database_pods(observation).items() if ps}
    if not pods:
        return []
    return await write_identities(connections, app, await ring_reports(connections, app.namespace, pods,
                                                                       within=within))
