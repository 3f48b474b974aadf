"""Real Apache Cassandra 5.0 nodes for the lab, each a foreground Java 17 process on its own loopback address.

Owns: the JVM command line of a lab node (Cassandra's own Java 17 options, 1 GiB heap, fast
lab start-up properties), its folder layout (``conf/``, ``data/``, ``cassandra.log``,
``cassandra.pid``), starting it, waiting until CQL answers, stopping it (SIGTERM, then
SIGKILL) and starting several nodes as one ring, one after the other.
Must not: resolve jars (:mod:`isthmus.lab.cassandra_install`) or decide what goes in
``cassandra.yaml`` (the caller does, usually with :mod:`isthmus.lab.cassandra_config`).

Typical use (``claim_addresses`` picks a free ``127.0.<b>.x`` block and locks it, so parallel
sessions never share an address)::

    with claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(name="n1", address=address, node_dir=tmp / "n1", cluster_name="lab",
                            seeds=(address,), datacenter="dc1")
        node = start_node(spec)
        rows = node.session().execute("SELECT release_version FROM system.local")
        node.stop()

``cassandra-driver`` (the ``cassandra`` extra) is imported only when CQL is used.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isthmus.lab.cassandra_addresses import AddressClaim, claim_addresses
from isthmus.lab.cassandra_config import (
    Authenticator,
    Authorizer,
    LabCassandraYaml,
    render_cassandra_yaml,
    render_logback_xml,
    render_rackdc_properties,
)
from isthmus.lab.cassandra_cql import Credentials, cql_cluster
from isthmus.lab.cassandra_install import (
    CASSANDRA_VERSION,
    CassandraLabError,
    ensure_cassandra,
    find_java,
    jamm_jar,
)

__all__ = [
    "CASSANDRA_VERSION",
    "JVM17_SERVER_OPTIONS",
    "JVM_SERVER_OPTIONS",
    "LAB_SYSTEM_PROPERTIES",
    "AddressClaim",
    "Authenticator",
    "Authorizer",
    "CassandraLabError",
    "CassandraNode",
    "Credentials",
    "JitMode",
    "LabCassandraYaml",
    "NodeSpec",
    "claim_addresses",
    "cql_cluster",
    "ensure_cassandra",
    "jvm_argv",
    "prepare_node",
    "render_cassandra_yaml",
    "render_rackdc_properties",
    "start_node",
    "start_ring",
    "stop_nodes",
]

# From apache/cassandra conf/jvm-server.options (5.0): the general flags that matter for a
# node's behaviour. Left out on purpose: -XX:+AlwaysPreTouch (slow start, 1 GiB faulted in),
# -XX:+UseNUMA, -XX:-UseBiasedLocking (obsolete on 17), -XX:+HeapDumpOnOutOfMemoryError.
JVM_SERVER_OPTIONS: tuple[str, ...] = (
    "-ea",
    "-da:net.openhft...",
    "-XX:+UseThreadPriorities",
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",
    "-Djava.net.preferIPv4Stack=true",
)

# From apache/cassandra conf/jvm17-server.options (5.0): G1 settings, the JPMS exports/opens
# Cassandra needs on Java 17, self-attach, and the Netty properties.
JVM17_SERVER_OPTIONS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

# Lab-only: a node must be up in seconds on a busy 2-core machine. No JMX port is opened
# (neither cassandra.jmx.local.port nor .remote.port is set), so nodes never clash on 7199.
LAB_SYSTEM_PROPERTIES: tuple[str, ...] = (
    "-Dcassandra-foreground=yes",
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=5000",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.available_processors=2",
    "-XX:+ExitOnOutOfMemoryError",
    "-XX:ParallelGCThreads=2",
    "-XX:ConcGCThreads=1",
)



class JitMode(enum.Enum):
    """How hard the JVM compiles: a lab node spends most of its start-up CPU in the JIT.

    ``QUICK_START`` (C1 only) halved the CPU seconds to CQL-ready on the 2-core lab machine
    (about 28 s to 15 s) at the cost of slower steady-state code; ``FULL`` is the JVM default
    (C1 then C2), for benchmarks of Cassandra itself.
    """

    QUICK_START = "-XX:TieredStopAtLevel=1"
    FULL = ""

    @property
    def jvm_options(self) -> tuple[str, ...]:
        return (self.value,) if self.value else ()


_LOG_NAME = "cassandra.log"
_PID_NAME = "cassandra.pid"
_MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"


@dataclass(frozen=True)
class NodeSpec:
    """How to run one node: its folder, address and the configuration files the caller wrote.

    ``cassandra_yaml`` and ``rackdc_properties`` may live anywhere; the rackdc file is copied
    into ``node_dir/conf`` (Cassandra reads it from the classpath).
    """

    name: str
    address: str
    node_dir: Path
    cassandra_yaml: Path
    rackdc_properties: Path
    native_port: int = 9042
    heap: str = "1G"
    version: str = CASSANDRA_VERSION
    credentials: Credentials | None = None
    jit: JitMode = JitMode.QUICK_START
    extra_jvm_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.address.startswith("127."):
            raise ValueError(f"lab node {self.name!r} must listen on 127.0.0.0/8, not {self.address!r}")

    @property
    def log_path(self) -> Path:
        return self.node_dir / _LOG_NAME

    @property
    def pid_path(self) -> Path:
        return self.node_dir / _PID_NAME


def prepare_node(
    *,
    name: str,
    address: str,
    node_dir: Path,
    cluster_name: str,
    seeds: Sequence[str],
    datacenter: str = "dc1",
    rack: str = "rack1",
    authenticator: Authenticator = Authenticator.ALLOW_ALL,
    authorizer: Authorizer = Authorizer.ALLOW_ALL,
    native_port: int = 9042,
    storage_port: int = 7000,
    num_tokens: int = 16,
    credentials: Credentials | None = None,
    version: str = CASSANDRA_VERSION,
    jit: JitMode = JitMode.QUICK_START,
) -> NodeSpec:
    """Write a minimal ``cassandra.yaml`` and ``cassandra-rackdc.properties`` under ``node_dir/conf``.

    With :attr:`Authenticator.PASSWORD` and no ``credentials``, the default superuser
    ``cassandra``/``cassandra`` is used to check that CQL answers.
    """
    conf = node_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    cfg = LabCassandraYaml(
        cluster_name=cluster_name, listen_address=address, seeds=tuple(seeds), storage_dir=node_dir,
        native_transport_port=native_port, storage_port=storage_port, num_tokens=num_tokens,
        authenticator=authenticator, authorizer=authorizer,
    )
    yaml_path = conf / "cassandra.yaml"
    yaml_path.write_text(render_cassandra_yaml(cfg))
    rackdc = conf / "cassandra-rackdc.properties"
    rackdc.write_text(render_rackdc_properties(datacenter, rack))
    if credentials is None and authenticator is Authenticator.PASSWORD:
        credentials = Credentials("cassandra", "cassandra")
    return NodeSpec(
        name=name, address=address, node_dir=node_dir, cassandra_yaml=yaml_path, rackdc_properties=rackdc,
        native_port=native_port, version=version, credentials=credentials, jit=jit,
    )


def jvm_argv(spec: NodeSpec, *, java: Path, lib: Path) -> list[str]:
    """The full command line of a node (pure, given the java binary and the jar folder)."""
    conf = spec.node_dir / "conf"
    return [
        str(java),
        f"-Xms{spec.heap}",
        f"-Xmx{spec.heap}",
        *JVM_SERVER_OPTIONS,
        *JVM17_SERVER_OPTIONS,
        f"-javaagent:{jamm_jar(lib)}",
        *LAB_SYSTEM_PROPERTIES,
        *spec.jit.jvm_options,
        f"-Dcassandra.config={spec.cassandra_yaml.resolve().as_uri()}",
        f"-Dcassandra.storagedir={spec.node_dir / 'data'}",
        f"-Dcassandra.logdir={spec.node_dir / 'logs'}",
        f"-Dlogback.configurationFile={(conf / 'logback.xml').resolve().as_uri()}",
        f"-Dcassandra.triggers_dir={conf / 'triggers'}",
        *spec.extra_jvm_options,
        "-cp",
        f"{conf}:{lib}/*",
        _MAIN_CLASS,
    ]


class CassandraNode:
    """A running lab node: its process, its CQL endpoint, and driver sessions opened on it.

    Not a value: it owns an OS process and driver connections until :meth:`stop`.
    """

    def __init__(self, spec: NodeSpec, process: subprocess.Popen[bytes], started_at: float) -> None:
        self.spec = spec
        self.process = process
        self.started_at = started_at
        self.ready_after_s: float | None = None
        self._clusters: list[Any] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CassandraNode({self.spec.name!r}, {self.host}:{self.port}, pid={self.pid})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def host(self) -> str:
        return self.spec.address

    @property
    def port(self) -> int:
        return self.spec.native_port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.spec.log_path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.spec.log_path, lines)

    def cluster(self, *, credentials: Credentials | None = None, whitelist: bool = True) -> Any:
        """A new driver ``Cluster`` pinned to this node, shut down by :meth:`stop`."""
        cluster = cql_cluster(
            [self.host], port=self.port, credentials=credentials or self.spec.credentials, whitelist=whitelist
        )
        with self._lock:
            self._clusters.append(cluster)
        return cluster

    def session(self, keyspace: str | None = None, *, credentials: Credentials | None = None) -> Any:
        """A driver ``Session`` that sends every request to this node."""
        return self.cluster(credentials=credentials).connect(keyspace)

    def stop(self, *, timeout: float = 60.0) -> None:
        """Close driver connections, SIGTERM the JVM, SIGKILL it after ``timeout``; idempotent."""
        with self._lock:
            clusters, self._clusters = self._clusters, []
        for cluster in clusters:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        _terminate(self.process, timeout)
        _RUNNING.discard(self)
        with contextlib.suppress(FileNotFoundError):
            self.spec.pid_path.unlink()


_RUNNING: set[CassandraNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    """Never leave 1 GiB JVMs behind when the interpreter exits without stopping its nodes."""
    for node in list(_RUNNING):
        with contextlib.suppress(Exception):
            node.stop(timeout=10.0)


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30.0)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


def _reap_stale(spec: NodeSpec) -> None:
    """Kill a node left running in this folder by an earlier, crashed session (found by PID file)."""
    try:
        pid = int(spec.pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    if _MAIN_CLASS in cmdline and str(spec.cassandra_yaml.resolve()) in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30.0
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def _cql_answers(node: CassandraNode) -> str | None:
    """The node's release_version if a CQL query succeeds now, else None."""
    try:
        cluster = cql_cluster([node.host], port=node.port, credentials=node.spec.credentials,
                              connect_timeout=5.0, request_timeout=10.0)
    except ImportError as exc:
        raise CassandraLabError(
            "cassandra-driver is not installed; install the `cassandra` extra"
            " (pip install 'isthmus[cassandra]')."
        ) from exc
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        return str(row.release_version)
    except Exception:
        return None
    finally:
        cluster.shutdown()


def start_node(spec: NodeSpec, *, timeout: float = 240.0, lib: Path | None = None) -> CassandraNode:
    """Start one node and return once CQL answers; on failure stop it and raise with the log tail."""
    lib = lib if lib is not None else ensure_cassandra(spec.version)
    java = find_java()
    for path in (spec.cassandra_yaml, spec.rackdc_properties):
        if not path.is_file():
            raise CassandraLabError(
                f"node {spec.name}: {path} does not exist; write it (see prepare_node)."
            )
    conf = spec.node_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (spec.node_dir / "logs").mkdir(exist_ok=True)
    (conf / "triggers").mkdir(exist_ok=True)
    rackdc = conf / "cassandra-rackdc.properties"
    if spec.rackdc_properties.resolve() != rackdc.resolve():
        shutil.copyfile(spec.rackdc_properties, rackdc)
    (conf / "logback.xml").write_text(render_logback_xml())
    _reap_stale(spec)
    if _port_open(spec.address, spec.native_port):
        raise CassandraLabError(
            f"node {spec.name}: {spec.address}:{spec.native_port} is already in use; stop whatever"
            " listens there or give this node another address."
        )
    argv = jvm_argv(spec, java=java, lib=lib)
    with spec.log_path.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {spec.name}\n".encode())
        out.flush()
        started_at = time.monotonic()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=spec.node_dir,
            start_new_session=True, close_fds=True,
        )
    spec.pid_path.write_text(f"{process.pid}\n")
    node = CassandraNode(spec, process, started_at)
    _RUNNING.add(node)
    try:
        _wait_ready(node, timeout)
    except BaseException:
        node.stop(timeout=10.0)
        raise
    return node


def _wait_ready(node: CassandraNode, timeout: float) -> None:
    deadline = node.started_at + timeout
    while True:
        code = node.process.poll()
        if code is not None:
            raise CassandraLabError(
                f"Cassandra node {node.name} ({node.host}) exited with code {code} while starting"
                f" (log: {node.log_path}). Last log lines:\n{node.log_tail()}"
            )
        if _port_open(node.host, node.port) and _cql_answers(node) is not None:
            node.ready_after_s = time.monotonic() - node.started_at
            return
        if time.monotonic() > deadline:
            raise CassandraLabError(
                f"Cassandra node {node.name} did not answer CQL on {node.host}:{node.port} within"
                f" {timeout:.0f}s (log: {node.log_path}); the machine may be overloaded. Last log lines:\n"
                f"{node.log_tail()}"
            )
        time.sleep(0.5)


def start_ring(specs: Iterable[NodeSpec], *, timeout_per_node: float = 240.0) -> list[CassandraNode]:
    """Start nodes one after the other, each once the previous answers CQL (seeds first).

    Joining one at a time is what an empty ring with ``auto_bootstrap: false`` needs: a node's
    shadow gossip round must find its seed up. On failure every node started is stopped.
    """
    specs = list(specs)
    lib = ensure_cassandra(specs[0].version) if specs else None
    nodes: list[CassandraNode] = []
    try:
        for spec in specs:
            nodes.append(start_node(spec, timeout=timeout_per_node,
                                    lib=lib if spec.version == specs[0].version else None))
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: Iterable[CassandraNode], *, timeout: float = 60.0) -> None:
    """Stop nodes in reverse start order."""
    for node in reversed(list(nodes)):
        node.stop(timeout=timeout)
