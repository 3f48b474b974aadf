"""Running the steps of a datacenter added to or removed from a running ring: ``join``, ``rebuild``,
``decommission`` (planned by :mod:`.datacenterplan`, see there for the order and the choices).

Owns: :class:`RingDatacenters`, what the engine asks to run those steps (``settings.datacenters``).

- ``join/<dc>``: before the datacenter's racks, the ``no-bootstrap`` key in its ``<app>-<dc>-identities``
  ConfigMap (which the pods mount): a pod that starts on an empty volume and replaces nobody then starts with
  ``-Dcassandra.auto_bootstrap=false`` (:mod:`isthmus.render.cassandra`), so no node of the new datacenter
  streams at start; its data comes from the rebuild, once the keyspaces replicate there.
- ``rebuild/<dc>``: the undeclared replicated system keyspaces gain replicas there
  (:func:`.datacenterplan.system_keyspace_changes`, CQL through ``pods/portforward``), then
  ``nodetool rebuild -- <source>`` on each of its nodes through ``pods/exec`` (``concurrency`` at once,
  progress per node). Each node's completion is kept (:mod:`.datacenterstate`) before and after, so a
  resumed rollout does not rebuild a node that finished. A failed rebuild is retried (``attempts``, ``retry_wait``
  apart, on the injected clock); then the step fails, naming the node, the command and Cassandra's words,
  and the rollout stops. Done only when every table of every spec keyspace replicated there counts, at
  LOCAL_ONE through one of its nodes, at least the rows the source datacenter counts at LOCAL_ONE just before;
  then the ``no-bootstrap`` key goes (a later scale-up bootstraps as usual).
- ``decommission/<dc>``: no keyspace other than the system ones may still replicate there (the keyspace steps
  have dropped it from the declared ones; the check was made before anything was written, and is made again);
  the undeclared system keyspaces lose it; ``nodetool decommission`` on each node, one at a time
  (:mod:`.decommission`; ``nodetool removenode`` from a remaining node when a node cannot decommission: its
  pod is gone or not Ready, or the decommission failed), each node's completion kept; then the datacenter's
  StatefulSets (or, when its cluster hosts nothing else of the app, every object of the app there), its
  volume claims and its identities are deleted; finally every remaining node's ``nodetool status`` must show
  no node of it (no DN ghost).

Must not: plan (that is :mod:`.datacenterplan`'s); write objects other than those named above.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError
from ..kube import (
    ClusterConnection,
    ClusterRegistry,
    ClusterUnreachable,
    ExecResult,
    KubeError,
    bookkeeping_labels,
    delete_objects,
    delete_record,
    fetch_owned,
    pod_exec,
    write_config_map,
)
from ..render.naming import CassandraNames
from ..spec import CassandraCluster
from ..spec.keyspaces import REPLICATED_SYSTEM_KEYSPACES
from .clock import SYSTEM, Clock
from .cqlsession import count_rows
from .datacenterplan import rebuild_commands, system_keyspace_changes
from .datacenterstate import NodeProgress, NodeProgressStore
from .dbgate import CASSANDRA_CONTAINER, database_pods, ring_reports
from .decommission import NodeLeft, decommission_node, remove_node
from .gates import observe, pod_ready
from .identities import IDENTITIES_ROLE
from .keyspaceplan import KeyspaceChange, LiveReplication
from .keyspacing import RingKeyspaces
from .progress import Outcome
from .repairplan import nodetool_failure
from .steps import DC_LABEL, Step, StepKind

__all__ = ["NO_BOOTSTRAP_KEY", "DatacenterError", "RingDatacenters"]

NO_BOOTSTRAP_KEY = "no-bootstrap"
"""In ``<app>-<dc>-identities``: the datacenter joins a running ring; its new nodes must not bootstrap."""
_ACTIVE_NODES = "have active nodes and must be present in replication options"
"""Cassandra 5's refusal to drop a datacenter that still has nodes from ``system_auth``."""
_KEYSPACES = "SELECT keyspace_name, replication FROM system_schema.keyspaces"
_TABLES = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s"

Say = Callable[[str, str], None]
Exec = Callable[..., Awaitable[ExecResult]]


class DatacenterError(IsthmusError):
    """Cassandra refused a datacenter's step (the node, the command, its words), or the step's check failed."""


def _quiet(_cluster: str, _message: str) -> None:
    return None


def _live(session: Any) -> dict[str, LiveReplication]:
    return {str(r.keyspace_name): LiveReplication.parse(dict(r.replication)) for r in session.execute(_KEYSPACES)}


def _alter(session: Any, changes: list[KeyspaceChange]) -> list[str]:
    done = []
    for change in changes:
        try:
            session.execute(change.statement)
        except Exception as exc:
            raise DatacenterError(f"{change.statement}: refused ({type(exc).__name__}: {str(exc)[:300]})") from None
        done.append(f"{change.keyspace} {change.describe()}")
    return done


def _counts(session: Any, keyspaces: list[str]) -> dict[str, int]:
    """Rows per table (``ks.table``) of ``keyspaces``, counted at LOCAL_ONE through the session's node."""
    return {f"{ks}.{row.table_name}": count_rows(session, ks, str(row.table_name))
            for ks in keyspaces for row in session.execute(_TABLES, (ks,))}


@dataclass
class RingDatacenters:
    """The ``join``, ``rebuild`` and ``decommission`` steps of one app's rollout (see the module docstring)."""

    registry: ClusterRegistry
    app: CassandraCluster
    cql: RingKeyspaces
    store: NodeProgressStore
    revision: int
    say: Say = _quiet
    clock: Clock = SYSTEM
    concurrency: int = 2
    """Nodes rebuilt at once (each streams from the source datacenter)."""
    attempts: int = 3
    retry_wait: float = 10.0
    node_within: float = 3600.0
    """Seconds one ``nodetool rebuild`` or ``decommission`` may take."""
    gone_within: float = 300.0
    """Seconds a removed datacenter's pods and claims may take to go once deleted."""
    execute: Exec = pod_exec
    """How a ``nodetool rebuild`` runs in a pod (``pods/exec``; a test scripts Cassandra's answers)."""

    async def run(self, step: Step, *, token: int, interrupted: bool = False) -> str:
        if step.kind is StepKind.JOIN:
            return await self._join(step)
        progress = await self.store.load(self.revision)
        if step.kind is StepKind.REBUILD:
            return await self._rebuild(step, progress, token)
        if step.kind is StepKind.DECOMMISSION:
            return await self._decommission(step, progress, token)
        raise DatacenterError(f"{step.id}: not a datacenter step")

    # -- join ----------------------------------------------------------------------------------------

    async def _marker(self, step: Step, present: bool) -> bool:
        names = CassandraNames(self.app.metadata.name, self.app.namespace)
        labels = {**bookkeeping_labels(self.app.metadata.name, IDENTITIES_ROLE), DC_LABEL: step.datacenter}

        def change(current: Mapping[str, str] | None) -> dict[str, str] | None:
            data = dict(current or {})
            if (NO_BOOTSTRAP_KEY in data) == present:
                return None
            if present:
                data[NO_BOOTSTRAP_KEY] = "true"
            else:
                data.pop(NO_BOOTSTRAP_KEY)
            return data

        written = await write_config_map(self.registry[step.cluster], names.identities(step.datacenter),
                                         self.app.namespace, labels=labels, change=change)
        return bool(written)

    async def _join(self, step: Step) -> str:
        await self._marker(step, True)
        return (f"{CassandraNames(self.app.metadata.name, self.app.namespace).identities(step.datacenter)} says "
                f"{NO_BOOTSTRAP_KEY}: its new nodes start with auto_bootstrap=false")

    # -- rebuild -------------------------------------------------------------------------------------

    async def _save(self, progress: NodeProgress, token: int) -> None:
        await self.store.save(progress, token)

    async def _command(self, step: Step, pod: str, command: tuple[str, ...]) -> str:
        """Run one rebuild command on ``pod``, tried ``attempts`` times; "" or what failed the last time."""
        said = " ".join(command)
        failure = ""
        for attempt in range(1, self.attempts + 1):
            self.say(step.cluster, f"{step.id}: {pod}: {said} (attempt {attempt} of {self.attempts})")
            try:
                result = await self.execute(self.registry[step.cluster], self.app.namespace, pod,
                                            CASSANDRA_CONTAINER, command, within=self.node_within)
                failure = "" if result.ok else \
                    f"exited {result.exit_code}: {nodetool_failure(result.stdout, result.stderr)}"
            except ClusterUnreachable:
                raise
            except TimeoutError:
                failure = f"not finished within {self.node_within:g}s"
            except KubeError as exc:
                failure = str(exc)
            if not failure:
                return ""
            self.say(step.cluster, f"{step.id}: {pod}: failed (attempt {attempt}): {failure}")
            if attempt < self.attempts:
                await self.clock.sleep(self.retry_wait)
        return f"{step.cluster}/{pod}: {said} {failure} (after {self.attempts} attempts)"

    async def _rebuild_one(self, step: Step, pod: str, commands: list[tuple[str, ...]], progress: NodeProgress,
                           token: int) -> None:
        rec = progress.record(step.id, pod)
        rec.outcome, rec.started, rec.finished, rec.note = Outcome.RUNNING, self.clock.wall(), None, ""
        await self._save(progress, token)
        started = self.clock.monotonic()
        for i, command in enumerate(commands, 1):
            rec.note = f"{i} of {len(commands)}: {' '.join(command)}"
            failure = await self._command(step, pod, command)
            if failure:
                rec.outcome, rec.note = Outcome.FAILED, failure
                await self._save(progress, token)
                raise DatacenterError(failure)
        rec.outcome, rec.finished = Outcome.DONE, self.clock.wall()
        rec.note = f"rebuilt from {step.source} in {self.clock.monotonic() - started:.1f}s ({len(commands)} keyspaces)"
        await self._save(progress, token)
        self.say(step.cluster, f"{step.id}: {pod}: {rec.note}")

    async def _rebuild(self, step: Step, progress: NodeProgress, token: int) -> str:
        def prepare(session: Any) -> tuple[list[str], list[tuple[str, ...]]]:
            altered = _alter(session, system_keyspace_changes(self.app, _live(session), add=step.datacenter))
            return altered, rebuild_commands(_live(session), step.datacenter, step.source)

        _, _, (altered, commands) = await self.cql.in_datacenter(step.source, prepare)
        done = set(progress.done(step.id))
        left = [p for p in step.nodes if p not in done]
        if done:
            self.say(step.cluster, f"{step.id}: rebuilt already (an earlier run): {', '.join(sorted(done))}")
        limit = asyncio.Semaphore(max(1, self.concurrency))

        async def one(pod: str) -> None:
            async with limit:
                await self._rebuild_one(step, pod, commands, progress, token)

        results = await asyncio.gather(*(one(p) for p in left), return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        counts = await self._readable(step)
        await self._marker(step, False)
        parts = [f"rebuilt {len(left)} node(s) from {step.source}"]
        if done:
            parts.append(f"{len(done)} rebuilt by an earlier run ({', '.join(sorted(done))})")
        if altered:
            parts.append("; ".join(altered))
        parts.append(counts)
        return "; ".join(parts)

    async def _readable(self, step: Step) -> str:
        keyspaces = [k.name for k in self.app.spec.keyspaces
                     if step.datacenter in k.replication and k.name not in REPLICATED_SYSTEM_KEYSPACES]
        if not keyspaces:
            return "no spec keyspace replicates there"
        cluster_of = {dc.name: dc.cluster for dc in self.app.spec.datacenters}
        source_at, _, before = await self.cql.in_datacenter(step.source, lambda s: _counts(s, keyspaces))
        here_at, pod, after = await self.cql.in_datacenter(step.datacenter, lambda s: _counts(s, keyspaces))
        if here_at != cluster_of[step.datacenter] or source_at != cluster_of[step.source]:
            raise ClusterUnreachable(step.cluster, f"no Ready node of {step.datacenter} and {step.source} to count "
                                                   "rows through")
        short = {t: (before[t], after.get(t, 0)) for t in before if after.get(t, 0) < before[t]}
        if short:
            raise DatacenterError(f"{step.id}: rows missing in {step.datacenter} after the rebuild (LOCAL_ONE "
                                  f"through {pod}, against {step.source}): " + ", ".join(
                                      f"{t} {n} of {m}" for t, (m, n) in sorted(short.items())))
        return (f"readable at LOCAL_ONE in {step.datacenter}: {sum(after.values())} rows in {len(after)} tables "
                f"({step.source} counts {sum(before.values())})")

    # -- decommission --------------------------------------------------------------------------------

    def _members(self) -> dict[str, ClusterConnection]:
        return {c: self.registry[c] for c in self.app.member_clusters()}

    async def _ring(self) -> list[Any]:
        """What every remaining Ready node says (``nodetool status`` and the rest, through ``pods/exec``)."""
        members = self._members()
        observation = await observe(members, self.app.metadata.name, self.app.namespace)
        pods = {c: ps for c, ps in database_pods(observation).items() if ps}
        if not pods:
            raise ClusterUnreachable(next(iter(members)), "no remaining node answers")
        return [r for r in await ring_reports(members, self.app.namespace, pods) if r.answered]

    async def _leave(self, step: Step, pod: str, *, force: bool = False) -> str:
        """Take ``pod``'s node out of the ring; returns how (or raises DatacenterError)."""
        conn = self.registry[step.cluster]
        live = await fetch_owned(conn, self.app.metadata.name, {("v1", "Pod", self.app.namespace)})
        obj = next((p for p in live.values() if p["metadata"]["name"] == pod), None)
        address = str(((obj or {}).get("status") or {}).get("podIP") or "")
        reports = await self._ring()
        members = [n for r in reports for n in r.ring if n.datacenter == step.datacenter]
        if address and not any(n.address == address for n in members):
            return "not in the ring (left already)"
        tried = ""
        if obj is not None and pod_ready(obj):
            self.say(step.cluster, f"{step.id}: {pod}: nodetool decommission{' --force' if force else ''}")
            left = await decommission_node(conn, self.app.namespace, pod, within=self.node_within, force=force)
            if left.ok:
                return "decommissioned" + (" (--force)" if force else "")
            tried = left.error
            self.say(step.cluster, f"{step.id}: {pod}: {tried}; trying nodetool removenode")
        gone = [n for n in members if n.address == address] if address else []
        if not gone:
            raise DatacenterError(tried or f"{step.cluster}/{pod}: not Ready and its address is unknown: cannot "
                                           "decommission it or remove it by host ID")
        via = reports[0]
        result: NodeLeft = await remove_node(self.registry[via.cluster], self.app.namespace, via.pod,
                                             gone[0].host_id, within=self.node_within)
        if not result.ok:
            raise DatacenterError(f"{tried + '; then ' if tried else ''}{result.error}")
        return f"removed by host ID {gone[0].host_id} through {via.cluster}/{via.pod}" + \
            (f" (decommission failed: {tried})" if tried else "")

    async def _decommission(self, step: Step, progress: NodeProgress, token: int) -> str:
        def replication(session: Any) -> tuple[list[str], list[KeyspaceChange], list[str]]:
            """(what was altered, what Cassandra defers until the datacenter has no node, what still replicates
            there afterwards)."""
            live = _live(session)
            here = {name for name, rep in live.items() if (rep.per_datacenter() or {}).get(step.datacenter, 0) > 0}
            still = sorted(here - set(REPLICATED_SYSTEM_KEYSPACES))
            if still:
                raise DatacenterError(f"{step.id}: keyspace(s) {', '.join(still)} still replicate to "
                                      f"{step.datacenter}; declare them in spec.keyspaces without it")
            altered, deferred = [], []
            for change in system_keyspace_changes(self.app, live, remove=step.datacenter):
                try:
                    altered += _alter(session, [change])
                except DatacenterError as exc:
                    if _ACTIVE_NODES not in str(exc):
                        raise
                    deferred.append(change)  # Cassandra 5: system_auth keeps a datacenter while it has nodes
            return altered, deferred, sorted(here - {c.split(" ", 1)[0] for c in altered})

        seed = next(iter(dc.name for dc in self.app.spec.datacenters))
        _, _, (altered, deferred, kept) = await self.cql.in_datacenter(seed, replication)
        force = bool(kept)  # a keyspace keeps replicas there until its nodes are gone: Cassandra wants --force
        if force:
            self.say(step.cluster, f"{step.id}: {', '.join(kept)} keep replicas in {step.datacenter} until its nodes "
                                   "are gone (Cassandra 5 refuses to drop it from system_auth before): --force")
        done = set(progress.done(step.id))
        notes = []
        for pod in step.nodes:
            if pod in done:
                notes.append(f"{pod}: left by an earlier run")
                continue
            rec = progress.record(step.id, pod)
            rec.outcome, rec.started, rec.finished, rec.note = Outcome.RUNNING, self.clock.wall(), None, ""
            await self._save(progress, token)
            try:
                how = await self._leave(step, pod, force=force)
            except DatacenterError as exc:
                rec.outcome, rec.note = Outcome.FAILED, str(exc)
                await self._save(progress, token)
                raise
            rec.outcome, rec.finished, rec.note = Outcome.DONE, self.clock.wall(), how
            await self._save(progress, token)
            self.say(step.cluster, f"{step.id}: {pod}: {how}")
            notes.append(f"{pod}: {how}")
        if deferred:
            _, _, later = await self.cql.in_datacenter(seed, lambda session: _alter(session, deferred))
            altered += [f"{c} (once its nodes had left)" for c in later]
        deleted = await self._delete(step)
        ghosts = [f"{r.datacenter} ({r.pod}) sees {n.address} {n.code}" for r in await self._ring()
                  for n in r.ring if n.datacenter == step.datacenter]
        if ghosts:
            raise DatacenterError(f"{step.id}: nodes of {step.datacenter} are still in the ring: {'; '.join(ghosts)}")
        return "; ".join([*altered, *notes, deleted, f"no remaining node sees {step.datacenter}"])

    async def _delete(self, step: Step) -> str:
        conn = self.registry[step.cluster]
        name, ns = self.app.metadata.name, self.app.namespace
        names = CassandraNames(name, ns)
        if step.cluster not in self.app.member_clusters():
            report = await delete_objects(conn, app=name, namespace=ns)
            what = f"{len(report.outcomes)} objects of {name} in {step.cluster}"
        else:  # the cluster keeps another datacenter: this one's StatefulSets go (finalize prunes the rest)
            sets = await fetch_owned(conn, name, {("apps/v1", "StatefulSet", ns)})
            ours = [o["metadata"]["name"] for o in sets.values()
                    if (o["metadata"].get("labels") or {}).get(DC_LABEL) == step.datacenter]
            for sts in ours:
                await delete_record(conn, "apps/v1", "StatefulSet", sts, ns)
            what = f"StatefulSets {', '.join(ours) or 'none'}"
        claims = await fetch_owned(conn, name, {("v1", "PersistentVolumeClaim", ns)})
        gone = [o["metadata"]["name"] for o in claims.values()
                if (o["metadata"].get("labels") or {}).get(DC_LABEL) == step.datacenter]
        for claim in gone:
            await delete_record(conn, "v1", "PersistentVolumeClaim", claim, ns)
        await delete_record(conn, "v1", "ConfigMap", names.identities(step.datacenter), ns)
        left = await self._wait_gone(conn, step.datacenter)
        return f"deleted {what}, {len(gone)} volume claim(s) and the identities" + \
            (f" ({', '.join(left)} still terminating after {self.gone_within:g}s)" if left else "")

    async def _wait_gone(self, conn: ClusterConnection, datacenter: str) -> list[str]:
        """Until the datacenter's pods and claims are gone (a pod first runs its pre-stop hook), at most
        ``gone_within`` seconds; returns what is left."""
        name, ns = self.app.metadata.name, self.app.namespace
        deadline = self.clock.monotonic() + self.gone_within
        while True:
            live = await fetch_owned(conn, name, {("v1", "Pod", ns), ("v1", "PersistentVolumeClaim", ns)})
            left = sorted(f"{ref.kind.lower()}/{ref.name}" for ref, o in live.items()
                          if (o["metadata"].get("labels") or {}).get(DC_LABEL) == datacenter)
            if not left or self.clock.monotonic() >= deadline:
                return left
            await self.clock.sleep(2.0)

