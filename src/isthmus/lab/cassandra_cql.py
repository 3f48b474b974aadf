"""Talking CQL to lab nodes with ``cassandra-driver``: logins and pinned driver clusters.

Owns: :class:`Credentials` and :func:`cql_cluster`, a driver ``Cluster`` that sends every
request only to the hosts it is given (``WhiteListRoundRobinPolicy``), speaks protocol v5
and has time-outs on connecting and on every request.
Must not: start or stop nodes. ``cassandra-driver`` (the ``cassandra`` extra) is imported only
when :func:`cql_cluster` is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Credentials", "cql_cluster"]


@dataclass(frozen=True)
class Credentials:
    """A CQL login (PasswordAuthenticator); the default superuser is cassandra/cassandra."""

    username: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def cql_cluster(
    hosts: Sequence[str],
    *,
    port: int = 9042,
    credentials: Credentials | None = None,
    whitelist: bool = True,
    request_timeout: float = 30.0,
    connect_timeout: float = 10.0,
) -> Any:
    """A ``cassandra.cluster.Cluster`` for lab hosts; with ``whitelist`` it talks only to ``hosts``.

    The caller owns it and must call ``shutdown()``.
    """
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy, WhiteListRoundRobinPolicy

    policy = WhiteListRoundRobinPolicy(list(hosts)) if whitelist else RoundRobinPolicy()
    auth = (
        PlainTextAuthProvider(username=credentials.username, password=credentials.password)
        if credentials is not None
        else None
    )
    profile = ExecutionProfile(load_balancing_policy=policy, request_timeout=request_timeout)
    return Cluster(
        contact_points=list(hosts),
        port=port,
        auth_provider=auth,
        protocol_version=5,
        connect_timeout=connect_timeout,
        control_connection_timeout=connect_timeout,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
