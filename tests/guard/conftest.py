"""Fixtures for the guard: a real proxy in a background thread, in front of the lab's Cassandra.

``running_guard(...)`` starts a :class:`~isthmus.cqlguard.proxy.GuardServer` on
``127.0.0.1:0`` in its own thread and event loop (the driver is synchronous), with a flows
file and a metrics endpoint; ``guard`` is one per test, with the policy in ``POLICY``.
``guard_schema`` creates the keyspaces and tables the tests use, once per session, directly
on the node (not through the guard).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from isthmus.cqlguard.proxy import GuardServer, event_loop_factory
from isthmus.cqlguard.settings import Endpoint, GuardSettings, Limits
from isthmus.lab.cassandra import CassandraNode

T = TypeVar("T")


class Upstream(Protocol):
    """What the guard needs of its upstream: a lab node, or a fake server in a unit test."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

#: The policy most tests run under. ``secretks`` is never allowed; ``guardks.kv`` is read-only;
#: ``guardks.open`` is writable; in ``guardks2`` only ``kv`` may be read.
POLICY = """
rules:
  - name: loopback-app
    identities:
      cidrs: ["127.0.0.0/8"]
    allow:
      - actions: [select]
        tables: ["guardks.*", "guardks2.kv"]
      - actions: [write]
        tables: ["guardks.open", "guardks.big"]
"""

#: The same, plus writes to ``guardks.kv`` (used by the reload test).
POLICY_KV_WRITABLE = POLICY + """
      - actions: [insert]
        tables: ["guardks.kv"]
"""

SCHEMA = [
    "CREATE KEYSPACE IF NOT EXISTS guardks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE KEYSPACE IF NOT EXISTS guardks2 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE KEYSPACE IF NOT EXISTS secretks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE IF NOT EXISTS guardks.kv (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS guardks.open (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS guardks.big (p int, c int, v text, PRIMARY KEY (p, c))",
    "CREATE TABLE IF NOT EXISTS guardks2.kv (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS guardks2.open (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS secretks.secrets (k int PRIMARY KEY, v text)",
]
BIG_ROWS = 500


@pytest.fixture(scope="session")
def guard_schema(cassandra_node: CassandraNode) -> CassandraNode:
    session = cassandra_node.session()
    for statement in SCHEMA:
        session.execute(statement)
    session.execute("INSERT INTO guardks.kv (k, v) VALUES (1, 'one')")
    session.execute("INSERT INTO guardks2.kv (k, v) VALUES (1, 'two')")
    session.execute("INSERT INTO secretks.secrets (k, v) VALUES (1, 'secret')")
    insert = session.prepare("INSERT INTO guardks.big (p, c, v) VALUES (0, ?, ?)")
    for c in range(BIG_ROWS):
        session.execute(insert, (c, f"row-{c}"))
    return cassandra_node


@dataclass
class RunningGuard:
    """A guard serving in a background thread; ``call`` runs a coroutine on its loop."""

    server: GuardServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    policy_path: Path
    flows_path: Path
    upstream: Any  # a CassandraNode in the integration tests
    clusters: list[Any] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.server.address.host

    @property
    def port(self) -> int:
        return self.server.address.port

    @property
    def metrics_url(self) -> str:
        assert self.server.metrics_address is not None
        return f"http://{self.server.metrics_address}/metrics"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper(), timeout)

    def flows(self) -> list[dict[str, Any]]:
        self.run(lambda: self.server.flows.flush() if self.server.flows else None)
        if not self.flows_path.exists():
            return []
        return [json.loads(line) for line in self.flows_path.read_text().splitlines() if line.strip()]

    def connect(
        self,
        *,
        protocol_version: int = 5,
        compression: bool | str = False,
        keyspace: str | None = None,
        auth: tuple[str, str] | None = None,
        ssl_context: Any = None,
        fetch_size: int | None = None,
    ) -> Any:
        """A driver session through the guard (its cluster is shut down with the guard)."""
        cluster = driver_cluster(self.host, self.port, protocol_version=protocol_version, compression=compression,
                                 auth=auth, ssl_context=ssl_context)
        self.clusters.append(cluster)
        session = cluster.connect(keyspace)
        if fetch_size is not None:
            session.default_fetch_size = fetch_size
        return session


def driver_cluster(
    host: str,
    port: int,
    *,
    protocol_version: int = 5,
    compression: bool | str = False,
    auth: tuple[str, str] | None = None,
    ssl_context: Any = None,
) -> Any:
    """A cassandra-driver Cluster that talks to ``host:port`` alone; the caller shuts it down."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=20.0)
    return Cluster(
        contact_points=[host],
        port=port,
        protocol_version=protocol_version,
        compression=compression,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=PlainTextAuthProvider(*auth) if auth else None,
        ssl_context=ssl_context,
        connect_timeout=10.0,
        control_connection_timeout=10.0,
    )


@contextlib.contextmanager
def running_guard(
    node: Upstream,
    tmp_path: Path,
    *,
    policy: str = POLICY,
    limits: Limits | None = None,
    tls: Any = None,
    poll_s: float = 0.2,
    flows_max_bytes: int = 0,
    flush_s: float = 1.0,
) -> Iterator[RunningGuard]:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy)
    flows_path = tmp_path / "flows.jsonl"
    settings = GuardSettings(
        listen=(Endpoint("127.0.0.1", 0),),
        upstream=Endpoint(node.host, node.port),
        policy_path=policy_path,
        flows_path=flows_path,
        metrics=Endpoint("127.0.0.1", 0),
        limits=limits or Limits(),
        tls=tls,
        policy_poll_interval_s=poll_s,
        flows_max_bytes=flows_max_bytes,
        flows_flush_interval_s=flush_s,
    )
    loop = event_loop_factory()()
    server = GuardServer(settings)
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="cqlguard-test", daemon=True)
    thread.start()
    assert started.wait(10), "the guard did not start"
    guard = RunningGuard(server, loop, thread, policy_path, flows_path, node)
    try:
        yield guard
    finally:
        for cluster in guard.clusters:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        guard.call(server.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def guard(guard_schema: CassandraNode, tmp_path: Path) -> Iterator[RunningGuard]:
    with running_guard(guard_schema, tmp_path) as running:
        yield running
