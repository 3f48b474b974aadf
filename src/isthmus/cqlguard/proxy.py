"""The guard server: listening sockets, one pump per client connection, policy reload, flows and metrics.

Owns: :class:`GuardServer` (binds every ``listen`` address, with TLS when configured, admits
connections up to ``Limits.max_connections``, polls the policy file and swaps the policy
without dropping connections, starts the flow log's writer thread and the metrics endpoint)
and :func:`run_guard`. Must not: parse bytes or decide; each connection's bytes go through
its :class:`~isthmus.cqlguard.session.GuardSession`, moved by a
:class:`~isthmus.cqlguard.pump.Pump`.

Cost per request (the hot case: a prepared EXECUTE or a repeated QUERY): no request or
response is re-encoded; the client's v4 frame or v5 segment is forwarded as it came, and
the server's bytes likewise; flow lines come from a per-decision template and are written
in batches by the flow log's own thread, never on the event loop; metrics are plain counters
read at scrape time.

Run a guard with :func:`run_guard` (blocking; uvloop when installed; SIGHUP reloads the
policy, SIGTERM/SIGINT stop), or ``await GuardServer(settings).start()`` inside a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from isthmus.cqlguard.flowlog import FlowLog
from isthmus.cqlguard.guard import Guard, PreparedStatements
from isthmus.cqlguard.metrics import GuardMetrics, serve_metrics
from isthmus.cqlguard.peer import tls_principal, tls_subject
from isthmus.cqlguard.policy import Policy, PolicyError
from isthmus.cqlguard.pump import CLOSE_GRACE_S, Pump, Side
from isthmus.cqlguard.settings import Endpoint, GuardSettings

__all__ = ["GuardServer", "event_loop_factory", "loop_name", "run_guard", "tls_principal", "tls_subject"]

log = logging.getLogger("isthmus.cqlguard")


class GuardServer:
    """One listening guard in front of one upstream node. See the module docstring."""

    def __init__(
        self,
        settings: GuardSettings,
        *,
        metrics: GuardMetrics | None = None,
        prepared: PreparedStatements | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else GuardMetrics()
        self.clock = clock
        self._policy_stamp: tuple[int, int, int] | None = None
        self.guard = Guard(self._load_policy(), upstream=str(settings.upstream), prepared=prepared)
        self.flows: FlowLog | None = None
        self._servers: list[asyncio.Server] = []
        #: Open connections (insertion-ordered; the values are unused).
        self._pumps: dict[Pump, None] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._metrics_server: Any = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind, serve metrics, start the policy watcher (and the flow log's writer thread)."""
        if self.settings.flows_path is not None:
            self.flows = FlowLog(self.settings.flows_path, max_bytes=self.settings.flows_max_bytes,
                                 flush_interval_s=self.settings.flows_flush_interval_s)
        tls = self.settings.tls.server_context() if self.settings.tls is not None else None
        loop = asyncio.get_running_loop()
        try:
            for listen in self.settings.listen:
                self._servers.append(await loop.create_server(
                    lambda: Side(Pump(self), client=True),
                    listen.host,
                    listen.port,
                    ssl=tls,
                    ssl_handshake_timeout=self.settings.limits.slow_client_timeout_s if tls else None,
                    backlog=min(self.settings.limits.max_connections, 4096),
                ))
        except BaseException:
            await self.close()
            raise
        if self.settings.metrics is not None:
            where = self.settings.metrics
            self._metrics_server, _ = serve_metrics(self.metrics, where.host, where.port)
        self._watcher = asyncio.create_task(self._watch_policy(), name="cqlguard policy watcher")

    @property
    def address(self) -> Endpoint:
        """Where the guard listens first (the real port when the settings said 0)."""
        return self.addresses[0]

    @property
    def addresses(self) -> tuple[Endpoint, ...]:
        """Every address the guard listens on, in the settings' order."""
        assert self._servers, "start() first"
        out = []
        for server in self._servers:
            host, port = server.sockets[0].getsockname()[:2]
            out.append(Endpoint(str(host), int(port)))
        return tuple(out)

    @property
    def metrics_address(self) -> Endpoint | None:
        if self._metrics_server is None:
            return None
        host, port = self._metrics_server.server_address[:2]
        return Endpoint(str(host), int(port))

    @property
    def open_connections(self) -> int:
        return len(self._pumps)

    async def serve_forever(self) -> None:
        assert self._servers, "start() first"
        await asyncio.gather(*(server.serve_forever() for server in self._servers))

    async def close(self) -> None:
        """Stop accepting, close every connection, flush flows, stop the metrics endpoint."""
        for server in self._servers:
            server.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        pumps = list(self._pumps)
        for pump in pumps:
            pump.close(abort=True)
        if pumps:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await asyncio.gather(*(pump.done for pump in pumps), return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await server.wait_closed()
        if self.flows is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.flows.close)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def admit(self, pump: Pump) -> bool:
        """A new client connection: count it, or refuse it over the limit."""
        if len(self._pumps) >= self.settings.limits.max_connections:
            self.metrics.rejected_connections.labels(reason="limit").inc()
            log.warning("refusing %s: %d connections open", pump.name, len(self._pumps))
            return False
        self._pumps[pump] = None
        self.metrics.connections.inc()
        self.metrics.open_connections.inc()
        return True

    def release(self, pump: Pump) -> None:
        """A connection is gone (both sides closed)."""
        if pump in self._pumps:
            del self._pumps[pump]
            self.metrics.open_connections.dec()
        log.debug("client %s: closed", pump.name)

    # ------------------------------------------------------------------- policy

    def _stamp(self) -> tuple[int, int, int]:
        st = self.settings.policy_path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load_policy(self) -> Policy:
        self._policy_stamp = self._stamp()
        return Policy.from_file(self.settings.policy_path)

    def reload_policy(self) -> bool:
        """Read the policy file again; a bad file keeps the current policy (logged, counted)."""
        try:
            policy = self._load_policy()
        except (PolicyError, OSError, UnicodeDecodeError) as exc:
            log.error("policy %s not reloaded, keeping the current one: %s", self.settings.policy_path, exc)
            self.metrics.policy_reloads.labels(result="failure").inc()
            return False
        self.guard.policy = policy
        self.metrics.policy_reloads.labels(result="success").inc()
        log.info("policy %s reloaded (%d rules)", self.settings.policy_path, len(policy.document.rules))
        return True

    async def _watch_policy(self) -> None:
        while True:
            await asyncio.sleep(self.settings.policy_poll_interval_s)
            try:
                stamp = self._stamp()
            except OSError as exc:
                if self._policy_stamp is not None:
                    log.error("policy %s unreadable, keeping the current one: %s", self.settings.policy_path, exc)
                    self.metrics.policy_reloads.labels(result="failure").inc()
                    self._policy_stamp = None
                self.metrics.policy_checks.inc()
                continue
            if stamp != self._policy_stamp:
                self.reload_policy()
                self._policy_stamp = stamp
            self.metrics.policy_checks.inc()  # after any reload: a test that sees it sees the reload's outcome

    # -------------------------------------------------------------------- flows

    def record_lines(self, lines: list[str]) -> None:
        """Hand rendered flow lines to the flow log (its thread writes them)."""
        if self.flows is not None:
            self.flows.add_lines(lines)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the event loop running now."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when uvloop is installed, else asyncio's default."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(settings: GuardSettings, ready: Callable[[GuardServer], None] | None) -> None:
    server = GuardServer(settings)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, server.reload_policy)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
    if ready is not None:
        ready(server)
    serving = asyncio.create_task(server.serve_forever())
    try:
        await stop.wait()
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await server.close()


def run_guard(settings: GuardSettings, *, ready: Callable[[GuardServer], None] | None = None) -> None:
    """Run a guard until SIGTERM/SIGINT (blocking); ``ready`` is called once it listens."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(_serve(settings, ready))
