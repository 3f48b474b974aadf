"""A CQL session to one node through a port-forward, and the pods worth connecting to.

Shared by :mod:`.superuser`, :mod:`.keyspacing` and :mod:`.datacenters`. The driver is synchronous: callers
run these on a thread. The session talks only to the forwarded address (a white-list policy: the ring's other nodes are
pod IPs, never reached from here), with a timeout on connecting and on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..kube import KubeObject
from .dbgate import has_runtime
from .gates import pod_ready
from .steps import DC_LABEL

__all__ = ["auth_failed", "count_rows", "cql_session", "ready_pods", "unavailable"]


def auth_failed(exc: BaseException) -> bool:
    """The driver's error says the credentials were refused (not that the node could not be reached)."""
    errors = getattr(exc, "errors", None) or {}
    return any(type(e).__name__ == "AuthenticationFailed" for e in errors.values()) or \
        type(exc).__name__ == "AuthenticationFailed"


def cql_session(host: str, port: int, user: str, password: str, *, request_timeout: float = 30.0) -> Any:
    """(cluster, session) logged in to the node behind ``host:port``; shut the cluster down when done."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]),
                               request_timeout=request_timeout)
    cluster = Cluster([host], port=port, auth_provider=PlainTextAuthProvider(user, password),
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=20.0,
                      control_connection_timeout=20.0, protocol_version=5)
    try:
        return cluster, cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def count_rows(session: Any, keyspace: str, table: str, *, timeout: float = 300.0) -> int:
    """``SELECT count(*)`` of one table at LOCAL_ONE through the session's node (its datacenter's replicas)."""
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    statement = SimpleStatement(f'SELECT count(*) FROM {keyspace}."{table}"',
                                consistency_level=ConsistencyLevel.LOCAL_ONE)
    return int(session.execute(statement, timeout=timeout).one()[0])


def ready_pods(pods: Sequence[KubeObject], datacenter: str) -> list[str]:
    """The datacenter's pods that a container runtime runs, Ready and not being deleted, by name."""
    return sorted(p["metadata"]["name"] for p in pods
                  if (p["metadata"].get("labels") or {}).get(DC_LABEL) == datacenter and pod_ready(p)
                  and not p["metadata"].get("deletionTimestamp") and has_runtime(p))


def unavailable(exc: BaseException) -> bool:
    """Cassandra answered Unavailable (too few replicas alive for the statement's own reads or writes: a
    keyspace created by a role writes its permissions to ``system_auth``, whose one SimpleStrategy replica may
    be on a node that is not up yet), directly or as the reason the driver gives for NoHostAvailable."""
    from cassandra import Unavailable
    from cassandra.cluster import NoHostAvailable

    if isinstance(exc, NoHostAvailable):
        return any(isinstance(e, Unavailable) for e in (exc.errors or {}).values())
    return isinstance(exc, Unavailable)
