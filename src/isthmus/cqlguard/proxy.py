"""The asyncio pump: a thin loop around :class:`~isthmus.cqlguard.protocol.CQLConnection`.

Owns: one asyncio server (:class:`GuardServer`), one upstream connection and one task pair
per client connection (client->upstream, upstream->client), back-pressure, time-outs, the
connection limit, policy hot reload, and handing flows/metrics their records. Every
decision is :meth:`Guard.check <isthmus.cqlguard.guard.Guard.check>`; every byte is parsed
by the codec before it is forwarded, so malformed input never reaches Cassandra.
Must not: parse bytes or decide (the codec and ``guard.py`` do).

Back-pressure: each transport's write buffer has a high-water mark
(``Limits.buffer_high_water``); after writing, a task ``drain()``s the other side before it
reads again, so a slow reader stops the pump from reading its peer. Stream readers hold at
most ``2 * read_chunk`` before they pause their transport.

Time-outs: a client that sends nothing for ``idle_timeout_s`` while nothing is in flight is
closed; one that does not finish a frame it started, or does not take our writes, within
``slow_client_timeout_s`` is closed. Any protocol error closes that one connection only.

Run a guard with :func:`run_guard` (blocking; uvloop when installed; SIGHUP reloads the
policy, SIGTERM/SIGINT stop), or ``await GuardServer(settings).start()`` inside a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import signal
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from isthmus.cqlguard.flows import Flow, FlowVerdict, FlowWriter, l7_action
from isthmus.cqlguard.guard import Check, Guard, PreparedStatements, Step
from isthmus.cqlguard.metrics import GuardMetrics, serve_metrics
from isthmus.cqlguard.policy import Identity, Policy, PolicyError
from isthmus.cqlguard.protocol import (
    ConnectionConfig,
    CQLConnection,
    ProtocolError,
    ProxyReply,
    Request,
    Response,
)
from isthmus.cqlguard.settings import Endpoint, GuardSettings

__all__ = ["GuardServer", "event_loop_factory", "run_guard", "tls_principal"]

log = logging.getLogger("isthmus.cqlguard")

_CLOSE_GRACE_S = 2.0
_RDN_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "domainComponent": "DC",
}


def tls_principal(peercert: dict[str, Any] | None) -> str | None:
    """The TLS identity of a verified client certificate: its SPIFFE URI SAN, else its subject.

    The subject is written RFC 4514-style, most specific first (``CN=app,O=acme``).
    """
    if not peercert:
        return None
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and str(value).startswith("spiffe://"):
            return str(value)
    rdns = [f"{_RDN_NAMES.get(k, k)}={v}" for rdn in peercert.get("subject", ()) for k, v in rdn]
    return ",".join(reversed(rdns)) or None


def _address(peer: Any) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, str | None, int | None]:
    if isinstance(peer, tuple) and len(peer) >= 2:
        try:
            return ipaddress.ip_address(str(peer[0]).split("%")[0]), str(peer[0]), int(peer[1])
        except ValueError:
            return None, str(peer[0]), int(peer[1])
    return None, None, None


class _Closing(Exception):
    """Internal: end this connection (the reason is already logged and counted)."""


class _Pump:
    """One client connection and its upstream connection."""

    def __init__(self, server: GuardServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.limits = server.settings.limits
        self.metrics = server.metrics
        self.guard = server.guard
        self.client_reader = reader
        self.client_writer = writer
        self.upstream_reader: asyncio.StreamReader | None = None
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.conn = CQLConnection(ConnectionConfig(max_frame_body=self.limits.max_frame_size))
        self.address, self.ip, self.port = _address(writer.get_extra_info("peername"))
        ssl_object = writer.get_extra_info("ssl_object")
        self.principal = tls_principal(ssl_object.getpeercert()) if ssl_object is not None else None
        self._identity = Identity(address=self.address, user=None, principal=self.principal)
        self._inflight: dict[int, tuple[Check, float, float]] = {}
        self._held: deque[Request] = deque()
        self._unheld = asyncio.Event()
        self._unheld.set()
        self._frame_started: float | None = None
        self._client_dirty = False
        self._upstream_dirty = False
        self.name = f"{self.ip}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        upstream = self.server.settings.upstream
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s):
                self.upstream_reader, self.upstream_writer = await asyncio.open_connection(
                    upstream.host, upstream.port, limit=self.limits.read_chunk
                )
        except (OSError, TimeoutError) as exc:
            log.warning("client %s: upstream %s unavailable: %s", self.name, upstream, exc)
            self.metrics.rejected_connections.labels(reason="upstream_unavailable").inc()
            await self._close()
            return
        for w in (self.client_writer, self.upstream_writer):
            w.transport.set_write_buffer_limits(high=self.limits.buffer_high_water)
        tasks = [
            asyncio.create_task(self._client_to_upstream(), name=f"cqlguard c->u {self.name}"),
            asyncio.create_task(self._upstream_to_client(), name=f"cqlguard u->c {self.name}"),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                try:
                    await task
                except (asyncio.CancelledError, _Closing):
                    pass
                except (ConnectionError, ssl.SSLError) as exc:
                    log.info("client %s: connection lost: %s", self.name, exc)
                except Exception:
                    log.exception("client %s: pump failed", self.name)
            self._abandon_inflight()
            await self._close()

    async def _close(self) -> None:
        writers = [w for w in (self.client_writer, self.upstream_writer) if w is not None]
        log.debug("client %s: closing", self.name)
        for w in writers:
            w.close()
        for w in writers:
            try:
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await w.wait_closed()
            except (OSError, TimeoutError, ssl.SSLError):
                w.transport.abort()
        log.debug("client %s: closed", self.name)

    # ---------------------------------------------------------- client -> upstream

    def _read_timeout(self) -> tuple[float, str]:
        if self._frame_started is not None:
            left = self.limits.slow_client_timeout_s - (self.server.clock() - self._frame_started)
            return max(left, 0.0), "slow_client"
        return self.limits.idle_timeout_s, "idle"

    async def _client_to_upstream(self) -> None:
        while True:
            timeout, kind = self._read_timeout()
            try:
                async with asyncio.timeout(timeout):
                    data = await self.client_reader.read(self.limits.read_chunk)
            except TimeoutError:
                if kind == "idle" and (self.conn.in_flight or self._held):
                    continue  # the client waits for the server: not idle
                log.info("client %s: closed after %s timeout", self.name, kind)
                self.metrics.timeouts.labels(kind=kind).inc()
                return
            except (ConnectionError, ssl.SSLError) as exc:
                log.info("client %s: read failed: %s", self.name, exc)
                return
            if not data:
                return
            self.metrics.client_in.inc(len(data))
            try:
                events = self.conn.receive_client_data(data)
                if not events:
                    if self._frame_started is None:
                        self._frame_started = self.server.clock()
                else:
                    self._frame_started = None
                for event in events:
                    if isinstance(event, ProxyReply):
                        self._to_client(event.data)
                    elif self._held or not self._dispatch(event):
                        self._hold(event)
            except ProtocolError as exc:
                self.metrics.protocol_errors.labels(peer="client").inc()
                log.warning("client %s: protocol error, closing: %s", self.name, exc)
                return
            await self._drain()
            while self._held:  # a USE is unanswered: read nothing more until it is
                self._unheld.clear()
                await self._unheld.wait()
                await self._drain()

    def _identity_now(self) -> Identity:
        user = self.conn.user
        if user != self._identity.user:
            self._identity = Identity(address=self.address, user=user, principal=self.principal)
        return self._identity

    def _dispatch(self, request: Request) -> bool:
        """Check and act on one request; False if it must wait for a USE (nothing was done)."""
        conn = self.conn
        check = self.guard.check(
            request,
            self._identity_now(),
            connection_keyspace=conn.keyspace,
            keyspace_in_doubt=conn.keyspace_in_doubt,
        )
        step = check.step
        if step is Step.PASS:
            self._to_upstream(conn.forward_to_server(request))
        elif step is Step.FORWARD:
            data = conn.forward_to_server(check.request, changes_keyspace=check.changes_keyspace)
            self._to_upstream(data)
            self._inflight[request.stream] = (check, time.time(), self.server.clock())
            self.metrics.count_request("allowed", l7_action(check.classification))
        elif step is Step.DENY:
            assert check.decision is not None
            self._to_client(conn.deny(request, f"cqlguard: {check.decision.reason}"))
            self.metrics.count_request("denied", l7_action(check.classification))
            self._flow(check, FlowVerdict.DENIED, time.time(), check.decision.rule, check.decision.reason)
        elif step is Step.UNPREPARED:
            assert check.unprepared_id is not None
            self._to_client(conn.unprepared(request, check.unprepared_id))
            self.metrics.count_request("error", "unknown")
            reason = f"prepared id {check.unprepared_id.hex()} unknown to the guard: answered Unprepared"
            self._flow(check, FlowVerdict.ERROR, time.time(), None, reason)
        else:
            return False
        return True

    def _hold(self, request: Request) -> None:
        if len(self._held) >= self.limits.max_held_requests:
            reason = "too many requests waiting for a USE to complete"
            self._to_client(self.conn.deny(request, f"cqlguard: {reason}"))
            self.metrics.count_request("error", "unknown")
            kind = request.opcode.name.lower()
            self._flow(Check(Step.HOLD, request, kind), FlowVerdict.ERROR, time.time(), None, reason)
            return
        self._held.append(request)

    def _release_held(self) -> None:
        while self._held and not self.conn.keyspace_in_doubt:
            if not self._dispatch(self._held[0]):
                return  # a released USE made the keyspace doubtful again
            self._held.popleft()
        if not self._held:
            self._unheld.set()

    # ---------------------------------------------------------- upstream -> client

    async def _upstream_to_client(self) -> None:
        assert self.upstream_reader is not None
        while True:
            try:
                data = await self.upstream_reader.read(self.limits.read_chunk)
            except ConnectionError as exc:
                log.info("client %s: upstream read failed: %s", self.name, exc)
                return
            if not data:
                log.info("client %s: upstream closed the connection", self.name)
                return
            self.metrics.upstream_in.inc(len(data))
            try:
                responses = self.conn.receive_server_data(data)
                out = []
                for response in responses:
                    self.guard.learn(response)
                    self._finish(response)
                    out.append(self.conn.forward_to_client(response))
                if out:
                    self._to_client(b"".join(out))
                if self._held and not self.conn.keyspace_in_doubt:
                    self._release_held()
            except ProtocolError as exc:
                self.metrics.protocol_errors.labels(peer="upstream").inc()
                log.warning("client %s: protocol error from upstream, closing: %s", self.name, exc)
                return
            await self._drain()

    def _finish(self, response: Response) -> None:
        entry = self._inflight.pop(response.stream, None) if response.request is not None else None
        if entry is None:
            return
        check, wall, started = entry
        elapsed = self.server.clock() - started
        self.metrics.upstream_latency.observe(elapsed)
        decision = check.decision
        assert decision is not None
        self._flow(check, FlowVerdict.ALLOWED, wall, decision.rule, decision.reason, elapsed * 1000.0)

    def _abandon_inflight(self) -> None:
        for check, wall, _ in self._inflight.values():
            assert check.decision is not None
            reason = f"{check.decision.reason}; connection closed before the server answered"
            self._flow(check, FlowVerdict.ALLOWED, wall, check.decision.rule, reason)
        self._inflight.clear()

    # ----------------------------------------------------------------- plumbing

    def _to_client(self, data: bytes) -> None:
        self.client_writer.write(data)
        self.metrics.client_out.inc(len(data))
        self._client_dirty = True

    def _to_upstream(self, data: bytes) -> None:
        assert self.upstream_writer is not None
        self.upstream_writer.write(data)
        self.metrics.upstream_out.inc(len(data))
        self._upstream_dirty = True

    async def _drain(self) -> None:
        """Wait while a write buffer is above its high-water mark (the client only so long)."""
        if self._upstream_dirty:
            self._upstream_dirty = False
            assert self.upstream_writer is not None
            await self.upstream_writer.drain()
        if self._client_dirty:
            self._client_dirty = False
            try:
                async with asyncio.timeout(self.limits.slow_client_timeout_s):
                    await self.client_writer.drain()
            except TimeoutError:
                log.info("client %s: does not read its responses; closing", self.name)
                self.metrics.timeouts.labels(kind="slow_client").inc()
                raise _Closing from None

    def _flow(
        self,
        check: Check,
        verdict: FlowVerdict,
        wall: float,
        rule: str | None,
        reason: str,
        latency_ms: float | None = None,
    ) -> None:
        if self.server.flows is None:
            return
        upstream = self.server.settings.upstream
        flow = Flow(
            time=wall,
            verdict=verdict,
            source_ip=self.ip,
            source_port=self.port,
            user=self._identity.user,
            principal=self.principal,
            destination_ip=upstream.host,
            destination_port=upstream.port,
            kind=check.kind,
            stream=check.request.stream,
            classification=check.classification,
            rule=rule,
            reason=reason,
            upstream_latency_ms=latency_ms,
        )
        self.server.record(flow)


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
        self.flows: FlowWriter | None = None
        self._server: asyncio.Server | None = None
        self._pumps: dict[_Pump, asyncio.Task[Any]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind, serve metrics, start the policy watcher."""
        self._loop = asyncio.get_running_loop()
        if self.settings.flows_path is not None:
            self.flows = FlowWriter(self.settings.flows_path)
        tls = self.settings.tls.server_context() if self.settings.tls is not None else None
        listen = self.settings.listen
        self._server = await asyncio.start_server(
            self._accept,
            listen.host,
            listen.port,
            ssl=tls,
            limit=self.settings.limits.read_chunk,
            ssl_handshake_timeout=self.settings.limits.slow_client_timeout_s if tls else None,
            backlog=min(self.settings.limits.max_connections, 4096),
        )
        if self.settings.metrics is not None:
            where = self.settings.metrics
            self._metrics_server, _ = serve_metrics(self.metrics, where.host, where.port)
        self._watcher = asyncio.create_task(self._watch_policy(), name="cqlguard policy watcher")

    @property
    def address(self) -> Endpoint:
        """Where the guard listens (the real port when the settings said 0)."""
        assert self._server is not None, "start() first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return Endpoint(str(host), int(port))

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
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop accepting, close every connection, flush flows, stop the metrics endpoint."""
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        tasks = list(self._pumps.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await self._server.wait_closed()
        if self.flows is not None:
            self.flows.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._pumps) >= self.settings.limits.max_connections:
            self.metrics.rejected_connections.labels(reason="limit").inc()
            log.warning("refusing %s: %d connections open", writer.get_extra_info("peername"), len(self._pumps))
            writer.transport.abort()
            return
        try:
            pump = _Pump(self, reader, writer)
        except Exception:
            log.exception("cannot set up a connection from %s", writer.get_extra_info("peername"))
            writer.transport.abort()
            return
        self._pumps[pump] = task
        self.metrics.connections.inc()
        self.metrics.open_connections.inc()
        try:
            await pump.run()
        except asyncio.CancelledError:
            # The guard is closing. Not re-raised: this is the connection's top-level task, and
            # asyncio's stream callback would log a cancelled handler as an error.
            with contextlib.suppress(Exception):
                writer.transport.abort()
                if pump.upstream_writer is not None:
                    pump.upstream_writer.transport.abort()
        except Exception:
            log.exception("client %s: connection failed", pump.name)
            writer.transport.abort()
        finally:
            self._pumps.pop(pump, None)
            self.metrics.open_connections.dec()

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
                continue
            if stamp != self._policy_stamp:
                self.reload_policy()
                self._policy_stamp = stamp

    # -------------------------------------------------------------------- flows

    def record(self, flow: Flow) -> None:
        """Queue a flow line; queued lines are written once per loop iteration."""
        if self.flows is None:
            return
        self.flows.add(flow)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.flows is not None:
            self.flows.flush()


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
