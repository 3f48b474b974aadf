"""Running a ``keyspace`` step: the ring's keyspace brought to the replication the spec declares.

:class:`RingKeyspaces` is what the engine asks (``settings.keyspaces``): :meth:`~RingKeyspaces.matches`
(does the ring have the declared replication already? then the step is Done without a write) and
:meth:`~RingKeyspaces.apply` (after the gates, the database gate among them): read the keyspace's row of
``system_schema.keyspaces``, run the ``CREATE KEYSPACE`` or ``ALTER KEYSPACE`` that :mod:`.keyspaceplan`
says, run ``nodetool repair -full <keyspace>`` on every Ready node of each datacenter whose replicas grew
(one node at a time, through ``pods/exec``), then read the row again and fail unless it is exactly what
was declared.

How the ring is reached: CQL through ``pods/portforward`` on a member's API server (never a pod IP), to
one Ready pod of the step's datacenter, else of the next datacenter in the spec that answers; logged in
as the superuser Secret's role, or, on a ring whose superuser is not set up yet (the first rollout: the
keyspaces come before :mod:`.superuser`), as Cassandra's default login. The password is only ever inside
that connection. Only keyspaces the spec names are read or changed; a keyspace is never dropped. When every
member answers and no pod runs in a container runtime (kwok's simulated pods), there is no database: the
step is done and says so, as the database gate passes.

Must not: decide what changes (that is :mod:`.keyspaceplan`'s, pure).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError
from ..kube import ClusterRegistry, ClusterUnreachable, KubeError, fetch_owned, pod_exec
from ..kube.portforward import PodPortForward
from ..render import SUPERUSER_USERNAME
from ..render.cassandra_config import CQL_PORT
from ..spec import CassandraCluster, Keyspace
from .cqlsession import auth_failed, cql_session, ready_pods, unavailable
from .dbgate import CASSANDRA_CONTAINER, has_runtime
from .keyspaceplan import KeyspaceChange, LiveReplication, check_readback, keyspace_change
from .repairplan import nodetool_failure
from .steps import Step, StepKind

__all__ = ["NO_DATABASE", "KeyspaceError", "RingKeyspaces"]

_DEFAULT_LOGIN = ("cassandra", "cassandra")  # Cassandra's own, public (CassandraRoleManager)
_READ = "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s"


class _NoDatabase(Exception):
    """Every member answered and none runs a Cassandra process (simulated pods, as in a kwok-only lab)."""


NO_DATABASE = "done: no database process to ask (no pod runs in a container runtime)"


class KeyspaceError(IsthmusError):
    """Cassandra refused a keyspace change, or the ring does not have what was declared afterwards; the
    message names the node, the statement or command, and Cassandra's own words (never the password)."""


def _read(session: Any, name: str) -> LiveReplication | None:
    rows = list(session.execute(_READ, (name,)))
    return LiveReplication.parse(dict(rows[0].replication)) if rows else None


@dataclass
class RingKeyspaces:
    """The keyspace steps of one app's rollout (see the module docstring)."""

    registry: ClusterRegistry
    app: CassandraCluster
    password: str
    within: float = 120.0
    """Seconds for one connection and its statements."""
    repair_within: float = 3600.0
    """Seconds one ``nodetool repair`` of a keyspace may take on one node."""
    rebuilt: frozenset[str] = frozenset()
    """Datacenters this rollout adds: a ``rebuild`` step fills their new replicas, so they are not repaired."""

    def declared(self, step: Step) -> Keyspace:
        for keyspace in self.app.spec.keyspaces:
            if keyspace.name == step.keyspace:
                return keyspace
        raise KeyspaceError(f"{step.id}: keyspace {step.keyspace} is not in spec.keyspaces of {self.app.metadata.name}")

    def _login(self, host: str, port: int) -> tuple[Any, Any]:
        try:
            return cql_session(host, port, SUPERUSER_USERNAME, self.password)  # type: ignore[no-any-return]
        except Exception as exc:
            if not auth_failed(exc):
                raise KeyspaceError(f"CQL through the port-forward failed: {type(exc).__name__}") from None
        try:
            return cql_session(host, port, *_DEFAULT_LOGIN)  # type: ignore[no-any-return]
        except Exception as exc:
            raise KeyspaceError(f"neither role {SUPERUSER_USERNAME!r} with the Secret's password nor the default "
                                f"login logs in ({type(exc).__name__})") from None

    async def _connected(self, step: Step, work: Any) -> tuple[str, str, Any]:
        """Run ``work(session)`` on a thread, logged in through a port-forward to one Ready pod: the step's
        datacenter first. Returns (cluster, pod, result). ClusterUnreachable when no datacenter answers."""
        order = sorted(self.app.spec.datacenters, key=lambda dc: dc.name != step.datacenter)
        tried: list[str] = []
        runtime = unreachable = False
        for dc in order:
            conn = self.registry[dc.cluster]
            try:
                pods = await fetch_owned(conn, self.app.metadata.name, {("v1", "Pod", self.app.namespace)})
            except ClusterUnreachable as exc:
                tried.append(f"{dc.name}: {exc}")
                unreachable = True
                continue
            runtime = runtime or any(has_runtime(p) for p in pods.values() if p.get("kind", "Pod") == "Pod")
            ready = ready_pods(list(pods.values()), dc.name)
            if not ready:
                tried.append(f"{dc.name}: no Ready pod")
                continue
            try:
                async with asyncio.timeout(self.within):
                    async with PodPortForward(conn, self.app.namespace, ready[0], CQL_PORT) as (host, port):
                        def run(host: str = host, port: int = port) -> Any:
                            cluster, session = self._login(host, port)
                            try:
                                return work(session)
                            finally:
                                cluster.shutdown()

                        return dc.cluster, ready[0], await asyncio.to_thread(run)
            except (KubeError, TimeoutError) as exc:
                tried.append(f"{dc.name} ({ready[0]}): {exc or 'timed out'}")
        if not runtime and not unreachable:
            raise _NoDatabase
        raise ClusterUnreachable(step.cluster, "no datacenter let CQL in: " + "; ".join(tried))

    async def in_datacenter(self, datacenter: str, work: Any) -> tuple[str, str, Any]:
        """``work(session)`` through a Ready pod of ``datacenter`` (else of the next that answers, as the keyspace
        steps do): (cluster, pod, result). ClusterUnreachable when none answers."""
        cluster = next(dc.cluster for dc in self.app.spec.datacenters if dc.name == datacenter)
        try:
            return await self._connected(Step(StepKind.KEYSPACE, cluster, datacenter), work)
        except _NoDatabase:
            raise ClusterUnreachable(cluster, "no pod runs in a container runtime") from None

    async def matches(self, step: Step) -> bool | None:
        """The ring has the declared replication already; None when no node could be asked."""
        declared = self.declared(step)
        try:
            _, _, live = await self._connected(step, lambda session: _read(session, declared.name))
        except (ClusterUnreachable, KeyspaceError, _NoDatabase):
            return None
        return keyspace_change(declared, live) is None

    async def apply(self, step: Step, *, interrupted: bool = False) -> tuple[str, bool]:
        """Create or change the keyspace, repair where replicas were added, check; returns what was done and
        whether anything was written.

        ``interrupted``: an earlier attempt of this step may have changed the replication and stopped before
        its repair ended; when the ring has the declared replication already, every datacenter of it is
        repaired again (which ones grew is not known any more).
        """
        declared = self.declared(step)

        def change(session: Any) -> KeyspaceChange | None:
            wanted = keyspace_change(declared, _read(session, declared.name))
            if wanted is not None:
                try:
                    session.execute(wanted.statement)
                except Exception as exc:
                    if unavailable(exc):  # a node not up yet (Cassandra's words): the engine waits and tries again
                        raise ClusterUnreachable(step.cluster, f"{wanted.statement}: not every replica it needs is "
                                                               f"up yet ({str(exc)[:300]})") from None
                    raise KeyspaceError(f"{wanted.statement}: refused ({type(exc).__name__}: {str(exc)[:300]})") \
                        from None
            return wanted

        try:
            cluster, pod, done = await self._connected(step, change)
        except _NoDatabase:
            return NO_DATABASE, False
        if done is None and not interrupted:
            return "unchanged: the ring has the declared replication", False
        repaired = await self._repair(declared.name, done.grown if done is not None else tuple(declared.replication))
        _, _, live = await self._connected(step, lambda session: _read(session, declared.name))
        if (problem := check_readback(declared, live)) is not None:
            raise KeyspaceError(problem)
        note = f"{done.describe()} (through {cluster}/{pod})" if done is not None else \
            "the declared replication was in place (an earlier attempt changed it)"
        if repaired:
            note += f"; repaired on {', '.join(repaired)}"
        return note, True

    async def _repair(self, keyspace: str, datacenters: tuple[str, ...]) -> list[str]:
        """``nodetool repair -full <keyspace>`` on every Ready node of ``datacenters``, one after another."""
        command = ("nodetool", "repair", "-full", keyspace)
        done: list[str] = []
        for dc in self.app.spec.datacenters:
            if dc.name not in datacenters or dc.name in self.rebuilt:
                continue
            conn = self.registry[dc.cluster]
            pods = await fetch_owned(conn, self.app.metadata.name, {("v1", "Pod", self.app.namespace)})
            for pod in ready_pods(list(pods.values()), dc.name):
                try:
                    result = await pod_exec(conn, self.app.namespace, pod, CASSANDRA_CONTAINER, command,
                                            within=self.repair_within)
                except (KubeError, TimeoutError) as exc:
                    raise KeyspaceError(f"{dc.cluster}/{pod}: {' '.join(command)}: {exc or 'timed out'}") from None
                if not result.ok:
                    raise KeyspaceError(f"{dc.cluster}/{pod}: {' '.join(command)} exited {result.exit_code}: "
                                        f"{nodetool_failure(result.stdout, result.stderr)}")
                done.append(f"{dc.cluster}/{pod}")
        return done
