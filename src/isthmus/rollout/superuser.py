"""Making the superuser Secret the ring's superuser, and the default login useless.

A fresh Cassandra with ``PasswordAuthenticator`` has one superuser, ``cassandra``/``cassandra``, known to
everyone. Once a datacenter answers, this creates the role named in the app's superuser Secret
(``cassandra-admin``) with the Secret's password, as a superuser that can log in, then takes from the
default role its login and superuser status and gives it a random password nobody keeps. It is
idempotent: when the Secret's role already logs in, only the default role is checked.

The order matters. First ``system_auth`` goes from SimpleStrategy (one replica, Cassandra's default) to
NetworkTopologyStrategy with ``min(3, nodes)`` replicas in every datacenter, so that every datacenter can
log its clients in. That change moves no data: the default role's row stays where SimpleStrategy put it,
and a QUORUM read (how Cassandra reads the default role) may then miss it and deny the default login its
superuser status. So ``nodetool repair -full system_auth`` runs next on every Ready node, one at a time,
through ``pods/exec``; only then is the role created (written to every datacenter) and the default
disabled.

How the ring is reached: CQL through ``pods/portforward`` on the member's API server
(:class:`isthmus.kube.PodPortForward`), to one Ready pod of the first datacenter that answers, and
``nodetool`` through ``pods/exec`` (:func:`isthmus.kube.pod_exec`), never by pod IP, so it works from a
laptop or from the operator in any cluster. With the CQL guard on, the port-forward arrives on the pod's
loopback, where the rendered policy lets the superuser (and, until now, the default login) through. The
password travels only inside that CQL connection: it is never on a command line, in a URL, in a log or in
an error message.

Must not: create keyspaces or change replication beyond ``system_auth`` (that is :mod:`.keyspacing`'s
work; when ``spec.keyspaces`` declares ``system_auth``, its declared replication is used here too, so the
two never undo each other).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError
from ..kube import ClusterRegistry, ClusterUnreachable, KubeError, fetch_owned, pod_exec
from ..kube.portforward import PodPortForward
from ..render import SUPERUSER_USERNAME
from ..render.cassandra_config import CQL_PORT
from ..spec import CassandraCluster
from .cqlsession import auth_failed, cql_session, ready_pods
from .dbgate import CASSANDRA_CONTAINER, has_runtime

__all__ = ["DEFAULT_ROLE", "SuperuserError", "SuperuserOutcome", "ensure_superuser"]

DEFAULT_ROLE = "cassandra"
_DEFAULT_PASSWORD = "cassandra"  # Cassandra's, public: CassandraRoleManager.DEFAULT_SUPERUSER_PASSWORD
_REPAIR = ("nodetool", "repair", "-full", "system_auth")


class SuperuserError(IsthmusError):
    """No datacenter let the superuser be set up; the message names what was tried (never the password)."""


@dataclass(frozen=True)
class SuperuserOutcome:
    cluster: str
    datacenter: str
    pod: str
    created: bool
    default_disabled: bool

    def note(self) -> str:
        done = [f"created role {SUPERUSER_USERNAME}" if self.created else f"role {SUPERUSER_USERNAME} in place"]
        if self.default_disabled:
            done.append(f"disabled the default login {DEFAULT_ROLE!r}")
        return f"superuser: {', '.join(done)} (through {self.cluster}/{self.pod}, datacenter {self.datacenter})"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _replicate_auth(session: Any, declared: Mapping[str, int] | None = None) -> None:
    """``system_auth`` on NetworkTopologyStrategy, ``min(3, nodes)`` replicas in every datacenter of the ring,
    or the replication ``spec.keyspaces`` declares for it (``declared``).

    Cassandra 5.0 starts it on SimpleStrategy with one replica, which a multi-datacenter ring cannot use
    (role reads and writes are at LOCAL_QUORUM or stronger, so a datacenter without a replica cannot log
    anyone in). Set before the role is written, so the role has its replicas everywhere.
    """
    nodes: dict[str, int] = {}
    for row in [*session.execute("SELECT data_center FROM system.local"),
                *session.execute("SELECT data_center FROM system.peers")]:
        nodes[row.data_center] = nodes.get(row.data_center, 0) + 1
    wanted = dict(declared) if declared else {dc: min(3, n) for dc, n in sorted(nodes.items())}
    replication = ", ".join(f"{_literal(dc)}: {rf}" for dc, rf in wanted.items())
    session.execute("ALTER KEYSPACE system_auth WITH replication = "
                    f"{{'class': 'NetworkTopologyStrategy', {replication}}}")


def _admin_or_default(host: str, port: int, password: str, declared: Mapping[str, int] | None = None) -> bool:
    """True when the Secret's role logs in already; else puts ``system_auth`` on NTS as the default login.

    Runs on a thread (the driver is synchronous).
    """
    try:
        cluster, _ = cql_session(host, port, SUPERUSER_USERNAME, password)
    except Exception as exc:
        if not auth_failed(exc):
            raise SuperuserError(f"CQL through the port-forward failed: {type(exc).__name__}") from None
    else:
        cluster.shutdown()
        return True
    cluster, session = _default_session(host, port)
    try:
        _replicate_auth(session, declared)
    except SuperuserError:
        raise
    except Exception as exc:
        raise SuperuserError(f"replicating system_auth to every datacenter failed ({type(exc).__name__}: "
                             f"{str(exc)[:300]})") from None
    finally:
        cluster.shutdown()
    return False


def _default_session(host: str, port: int) -> tuple[Any, Any]:
    try:
        return cql_session(host, port, DEFAULT_ROLE, _DEFAULT_PASSWORD)  # type: ignore[no-any-return]
    except Exception as exc:
        if auth_failed(exc):
            raise SuperuserError(
                f"neither role {SUPERUSER_USERNAME!r} with the Secret's password nor the default login "
                f"logs in: the ring's roles were changed outside Isthmus; set the Secret's password to "
                f"that of {SUPERUSER_USERNAME!r}, or create that role by hand") from None
        raise SuperuserError(f"CQL through the port-forward failed: {type(exc).__name__}") from None


def _create_role(host: str, port: int, password: str) -> None:
    cluster, session = _default_session(host, port)
    try:
        session.execute(f'CREATE ROLE IF NOT EXISTS "{SUPERUSER_USERNAME}" WITH SUPERUSER = true AND '
                        f"LOGIN = true AND PASSWORD = {_literal(password)}")
    except Exception as exc:  # the statement held the password: never let the driver's text out
        raise SuperuserError(f"CREATE ROLE {SUPERUSER_USERNAME} was refused ({type(exc).__name__}: "
                             f"{str(exc).replace(password, '***')[:300]})") from None
    finally:
        cluster.shutdown()


def _disable_default(host: str, port: int, password: str) -> bool:
    """Takes login and superuser status from the default role; True when it could still log in."""
    cluster, session = cql_session(host, port, SUPERUSER_USERNAME, password)
    try:
        try:
            other, _ = cql_session(host, port, DEFAULT_ROLE, _DEFAULT_PASSWORD)
            other.shutdown()
        except Exception as exc:
            if not auth_failed(exc):
                raise SuperuserError(f"checking the default login failed: {type(exc).__name__}") from None
            return False
        try:
            session.execute(f'ALTER ROLE "{DEFAULT_ROLE}" WITH SUPERUSER = false AND LOGIN = false AND '
                            f"PASSWORD = {_literal(secrets.token_urlsafe(32))}")
        except Exception as exc:
            raise SuperuserError(f"ALTER ROLE {DEFAULT_ROLE} was refused ({type(exc).__name__})") from None
        return True
    finally:
        cluster.shutdown()


async def _repair_auth(registry: ClusterRegistry, app: CassandraCluster, *, within: float) -> None:
    """``nodetool repair -full system_auth`` on every Ready node, one after another, through ``pods/exec``.

    After ``system_auth`` changes replication, its rows (the default role among them) are still only where
    SimpleStrategy put them, and a read at QUORUM may miss them: Cassandra then says the default role is
    no superuser. Repair puts every row on every new replica before the role is created.
    """
    for dc in app.spec.datacenters:
        conn = registry[dc.cluster]
        try:
            pods = await fetch_owned(conn, app.metadata.name, {("v1", "Pod", app.namespace)})
        except ClusterUnreachable:
            continue  # a datacenter that is not there now gets its replicas from a later repair
        for pod in _ready_pods(list(pods.values()), dc.name):
            try:
                result = await pod_exec(conn, app.namespace, pod, CASSANDRA_CONTAINER, _REPAIR, within=within)
            except (KubeError, TimeoutError) as exc:
                raise SuperuserError(f"{dc.cluster}/{pod}: {' '.join(_REPAIR)}: {exc or 'timed out'}") from None
            if not result.ok:
                said = (result.stderr.strip() or result.stdout.strip())[-300:]
                raise SuperuserError(f"{dc.cluster}/{pod}: {' '.join(_REPAIR)} exited {result.exit_code}: {said}")


_ready_pods = ready_pods


async def ensure_superuser(registry: ClusterRegistry, app: CassandraCluster, password: str, *,
                           within: float = 180.0) -> SuperuserOutcome | None:
    """Make the Secret's role the superuser, through the first datacenter with a Ready pod that answers.

    None when no member runs a container runtime (every pod simulated, as in a kwok-only lab): nothing to set up.
    """
    tried: list[str] = []
    runtime_seen = False
    declared = next((dict(k.replication) for k in app.spec.keyspaces if k.name == "system_auth"), None)
    for dc in app.spec.datacenters:
        conn = registry[dc.cluster]
        try:
            pods = await fetch_owned(conn, app.metadata.name, {("v1", "Pod", app.namespace)})
        except ClusterUnreachable as exc:
            tried.append(f"{dc.name}: {exc}")
            continue
        runtime_seen = runtime_seen or any(has_runtime(p) for p in pods.values() if p.get("kind", "Pod") == "Pod")
        ready = _ready_pods(list(pods.values()), dc.name)
        if not ready:
            tried.append(f"{dc.name}: no Ready pod")
            continue
        pod = ready[0]
        try:
            async with asyncio.timeout(within):
                async with PodPortForward(conn, app.namespace, pod, CQL_PORT) as (host, port):
                    created = not await asyncio.to_thread(_admin_or_default, host, port, password, declared)
                    if created:
                        await _repair_auth(registry, app, within=within)
                        await asyncio.to_thread(_create_role, host, port, password)
                    disabled = await asyncio.to_thread(_disable_default, host, port, password)
        except (KubeError, TimeoutError) as exc:
            tried.append(f"{dc.name} ({pod}): {exc or 'timed out'}")
            continue
        return SuperuserOutcome(dc.cluster, dc.name, pod, created, disabled)
    if not runtime_seen and not any("unreachable" in t for t in tried):
        return None
    raise SuperuserError(f"app {app.metadata.name}: no datacenter let the superuser be set up: " + "; ".join(tried))
