"""The asyncio pump: a thin loop around :class:`~isthmus.cqlguard.protocol.CQLConnection`.

Owns: one asyncio server (:class:`GuardServer`), one upstream connection per client connection
and the pump between them (:class:`_Pump`, driven by asyncio protocol callbacks: no task
and no coroutine switch per read), back-pressure, time-outs, the connection limit, policy
hot reload, and handing flows/metrics their records. Every decision is
:meth:`Guard.check <isthmus.cqlguard.guard.Guard.check>` or, for a request that repeats one
already checked on the same connection under the same policy, that check's answer (the
fast path, see :class:`_Pump`). Client bytes are framed and checked by
the codec before they are forwarded, so a malformed frame, segment or envelope header never
reaches Cassandra; a request decided on the fast path is read only as far as its key (the
prepared id, or the query text and flags), and the rest of its body is Cassandra's to parse,
as the values of an EXECUTE always were.
Must not: parse bytes or decide (the codec and ``guard.py`` do).

Cost per request (the hot case: a prepared EXECUTE or a repeated QUERY): no request or
response is re-encoded; the client's v4 frame or v5 segment is forwarded as it came, and
the server's bytes likewise; flow lines come from a per-decision template and are written
in batches; metrics are plain counters read at scrape time.

Back-pressure: each transport's write buffer has a high-water mark
(``Limits.buffer_high_water``). While the upstream's is above it, the client is not read;
while the client's is above it, neither side is read. Each read takes at most
``read_chunk`` bytes. While a USE is unanswered and requests wait for it, the client is not
read either.

Time-outs: a client that sends nothing for ``idle_timeout_s`` while nothing is in flight is
closed; one that does not finish a frame it started, or does not take our writes, within
``slow_client_timeout_s`` is closed. One timer per connection checks these, re-armed only
when it fires. Any protocol error closes that one connection only.

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
import socket
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

from isthmus.cqlguard.classify import Classification
from isthmus.cqlguard.flows import Flow, FlowTemplate, FlowVerdict, FlowWriter, l7_action
from isthmus.cqlguard.guard import Check, Guard, PreparedStatements, Step
from isthmus.cqlguard.metrics import LATENCY_BUCKETS, GuardMetrics, serve_metrics
from isthmus.cqlguard.policy import Identity, Policy, PolicyError
from isthmus.cqlguard.protocol import (
    Chunk,
    ConnectionConfig,
    CQLConnection,
    Execute,
    Opcode,
    ProtocolError,
    ProxyReply,
    Query,
    Request,
)
from isthmus.cqlguard.settings import Endpoint, GuardSettings

__all__ = ["GuardServer", "event_loop_factory", "loop_name", "run_guard", "tls_principal", "tls_subject"]

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
    return tls_subject(peercert)


def tls_subject(peercert: dict[str, Any] | None) -> str | None:
    """The subject of a verified client certificate, RFC 4514-style (``CN=app,O=acme``)."""
    if not peercert:
        return None
    rdns = [f"{_RDN_NAMES.get(k, k)}={v}" for rdn in peercert.get("subject", ()) for k, v in rdn]
    return ",".join(reversed(rdns)) or None


def _address(peer: Any) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, str | None, int | None]:
    if isinstance(peer, tuple) and len(peer) >= 2:
        try:
            return ipaddress.ip_address(str(peer[0]).split("%")[0]), str(peer[0]), int(peer[1])
        except ValueError:
            return None, str(peer[0]), int(peer[1])
    return None, None, None


class _Known:
    """A forwarded decision, rendered once: its check, flow line template and metric label.

    One per decision on a connection; kept in the connection's fast-path maps when the same
    request may come again (an EXECUTE of a prepared id, a QUERY text in a keyspace).
    """

    __slots__ = ("action", "classification", "counter", "decision", "kind", "template")

    def __init__(self, check: Check, template: FlowTemplate | None, metrics: GuardMetrics) -> None:
        # Not the check itself: its request holds the whole frame (bound values and all), and up to
        # _HOT_ENTRIES of these stay per connection.
        assert check.decision is not None
        self.kind, self.classification, self.decision = check.kind, check.classification, check.decision
        self.template = template
        self.action = l7_action(check.classification)
        #: Its key in ``GuardMetrics.requests`` (present: the fast path adds to it directly).
        self.counter = ("allowed", self.action)
        metrics.requests.setdefault(self.counter, 0)


#: Fast-path maps per connection: at most this many entries each (then they start afresh),
#: and QUERY texts up to this long.
_HOT_ENTRIES = 4096
_HOT_QUERY_CHARS = 4096
_EXECUTE = int(Opcode.EXECUTE)


class _Side(asyncio.BufferedProtocol):
    """One socket of a pump; reads at most ``read_chunk`` bytes at a time into its own buffer."""

    def __init__(self, pump: _Pump, *, client: bool) -> None:
        self.pump = pump
        self.client = client
        self._buffer = bytearray(pump.limits.read_chunk)
        self._view = memoryview(self._buffer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client:
            self.pump.client_made(transport)  # type: ignore[arg-type]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._view[:nbytes])
        if self.client:
            self.pump.client_data(data)
        else:
            self.pump.upstream_data(data)

    def eof_received(self) -> bool:
        self.pump.eof(self.client)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pump.gone(self.client, exc)

    def pause_writing(self) -> None:
        self.pump.writing_paused(self.client, True)

    def resume_writing(self) -> None:
        self.pump.writing_paused(self.client, False)


class _Pump:
    """One client connection and its upstream connection.

    Client -> upstream: each chunk the client sent (a v4 frame, a v5 segment) is cut into
    envelopes. An EXECUTE of a prepared id or a QUERY this connection already had decided
    (same policy, same keyspace) is decided from its header and id/text alone (the fast
    path); anything else is decoded and checked by :class:`~isthmus.cqlguard.guard.Guard`.
    A chunk whose envelopes are all forwarded goes on byte for byte; otherwise the
    forwarded envelopes are re-framed. Upstream -> client: bytes are relayed as they came
    (:meth:`CQLConnection.relay_server_data`); only answers that matter are decoded.
    """

    def __init__(self, server: GuardServer) -> None:
        self.server = server
        self.limits = server.settings.limits
        self.metrics = server.metrics
        self.guard = server.guard
        self.clock = server.clock
        self.client_transport: asyncio.Transport | None = None
        self.upstream_transport: asyncio.Transport | None = None
        self.conn = CQLConnection(ConnectionConfig(max_frame_body=self.limits.max_frame_size))
        self.address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.ip: str | None = None
        self.port: int | None = None
        self.principal: str | None = None
        self.subject: str | None = None
        self._identity = Identity()
        self._inflight: dict[int, tuple[_Known, float, float]] = {}
        self._held: deque[Request] = deque()
        self._hot_exec: dict[bytes, _Known] = {}
        self._hot_query: dict[tuple[bytes, str | None], _Known] = {}
        self._hot_generation = self.guard.generation
        self.name = "?"
        # Reading and time-outs (see the module docstring).
        self._client_reading = True
        self._upstream_reading = True
        self._upstream_full = False  # the upstream's write buffer is above the mark
        self._client_full_since: float | None = None  # the client's is, since then
        self._last_read = 0.0
        self._frame_started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._connecting: asyncio.Task[None] | None = None
        self._closing = False
        self._client_gone = False
        self._upstream_gone = False
        self._early: list[bytes] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ lifecycle

    def client_made(self, transport: asyncio.Transport) -> None:
        self.client_transport = transport
        self.address, self.ip, self.port = _address(transport.get_extra_info("peername"))
        self.name = f"{self.ip}:{self.port}"
        if not self.server.admit(self):
            self._closing = True
            transport.abort()
            return
        ssl_object = transport.get_extra_info("ssl_object")
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
        self.principal = tls_principal(peercert)
        self.subject = tls_subject(peercert)
        self._identity = Identity(address=self.address, principal=self.principal, subject=self.subject)
        transport.set_write_buffer_limits(high=self.limits.buffer_high_water)
        self._set_client_reading(False)  # until the upstream is connected
        self._last_read = self.clock()
        task = asyncio.get_running_loop().create_task(self._connect(), name=f"cqlguard connect {self.name}")
        task.add_done_callback(self._connect_done)
        self._connecting = task

    async def _connect(self) -> None:
        upstream = self.server.settings.upstream
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s):
                transport, _ = await loop.create_connection(
                    lambda: _Side(self, client=False), upstream.host, upstream.port
                )
        except (OSError, TimeoutError) as exc:
            log.warning("client %s: upstream %s unavailable: %s", self.name, upstream, exc)
            self.metrics.rejected_connections.labels(reason="upstream_unavailable").inc()
            self.close()
            return
        self.upstream_transport = transport  # (uvloop's transports do not subclass asyncio.Transport)
        if self._closing:
            transport.abort()
            return
        transport.set_write_buffer_limits(high=self.limits.buffer_high_water)
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._last_read = self.clock()
        early, self._early = self._early, []
        for data in early:
            self.client_data(data)
        self._update_reading()
        self._arm(self._last_read + self.limits.idle_timeout_s)

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is not None:
            log.error("client %s: connecting upstream failed", self.name, exc_info=task.exception())
            self.close(abort=True)
        self._check_closed()

    def close(self, *, abort: bool = False) -> None:
        """Close both sides (after writing what is buffered, unless ``abort``)."""
        if self._closing and not abort:
            return
        self._closing = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in (self.client_transport, self.upstream_transport):
            if transport is None:
                continue
            if abort:
                transport.abort()
            elif not transport.is_closing():
                transport.close()
        if not abort:
            asyncio.get_running_loop().call_later(_CLOSE_GRACE_S, self._abort_leftovers)

    def _abort_leftovers(self) -> None:
        if not self.done.done():
            self.close(abort=True)

    def eof(self, client: bool) -> None:
        if not client and not self._closing:
            log.info("client %s: upstream closed the connection", self.name)
        self.close()

    def gone(self, client: bool, exc: Exception | None) -> None:
        """One side's connection is lost (EOF, reset, or closed by us): the other goes too."""
        if exc is not None and not self._closing:
            log.info("client %s: %s connection lost: %s", self.name, "client" if client else "upstream", exc)
        if client:
            self._client_gone = True
        else:
            self._upstream_gone = True
        self.close()
        self._check_closed()

    def _check_closed(self) -> None:
        upstream_done = self._upstream_gone or (self.upstream_transport is None and self._connecting is None)
        if self._client_gone and upstream_done and not self.done.done():
            self._abandon_inflight()
            if self._timer is not None:
                self._timer.cancel()
            self.done.set_result(None)
            self.server.release(self)

    # ------------------------------------------------------------- reading control

    def _set_client_reading(self, on: bool) -> None:
        transport = self.client_transport
        if on == self._client_reading or transport is None or transport.is_closing():
            return
        self._client_reading = on
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def _update_reading(self) -> None:
        client_full = self._client_full_since is not None
        self._set_client_reading(
            self.upstream_transport is not None and not self._upstream_full and not client_full and not self._held
        )
        upstream = self.upstream_transport
        if upstream is not None and not upstream.is_closing() and self._upstream_reading == client_full:
            self._upstream_reading = not client_full
            if client_full:
                upstream.pause_reading()
            else:
                upstream.resume_reading()

    def writing_paused(self, client: bool, paused: bool) -> None:
        if client:
            if paused:
                self._client_full_since = self.clock()
                self._arm(self._client_full_since + self.limits.slow_client_timeout_s)
            else:
                self._client_full_since = None
        else:
            self._upstream_full = paused
        self._update_reading()

    # ------------------------------------------------------------------- time-outs

    def _arm(self, at: float) -> None:
        """Have the timer fire no later than ``at`` (clock seconds)."""
        if at >= self._timer_at or self._closing:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = at
        self._timer = loop.call_later(max(at - self.clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        if self._closing:
            return
        now = self.clock()
        limits = self.limits
        if self._client_full_since is not None and now - self._client_full_since >= limits.slow_client_timeout_s:
            log.info("client %s: does not read its responses; closing", self.name)
            return self._time_out("slow_client", abort=True)
        if self._frame_started is not None and now - self._frame_started >= limits.slow_client_timeout_s:
            log.info("client %s: closed after slow_client timeout", self.name)
            return self._time_out("slow_client")
        idle_at = self._last_read + limits.idle_timeout_s
        if now >= idle_at:
            if self.conn.in_flight_count or self._held:
                idle_at = now + limits.idle_timeout_s  # the client waits for the server: not idle
                self._last_read = now
            else:
                log.info("client %s: closed after idle timeout", self.name)
                return self._time_out("idle")
        deadlines = [idle_at]
        if self._frame_started is not None:
            deadlines.append(self._frame_started + limits.slow_client_timeout_s)
        if self._client_full_since is not None:
            deadlines.append(self._client_full_since + limits.slow_client_timeout_s)
        self._arm(min(deadlines))

    def _time_out(self, kind: str, *, abort: bool = False) -> None:
        self.metrics.timeouts.labels(kind=kind).inc()
        self.close(abort=abort)

    # ---------------------------------------------------------- client -> upstream

    def client_data(self, data: bytes) -> None:
        if self._closing:
            return
        if self.upstream_transport is None:  # read before the upstream is connected
            self._early.append(data)
            self._client_reading = True
            self._set_client_reading(False)
            return
        metrics = self.metrics
        metrics.client_in += len(data)
        self._last_read = now = self.clock()
        up: list[bytes] = []
        try:
            chunks = self.conn.receive_client_chunks(data)
            if not chunks:
                if self._frame_started is None:
                    self._frame_started = now
                    self._arm(now + self.limits.slow_client_timeout_s)
            else:
                self._frame_started = None
                self._handle(chunks, up, now)
        except ProtocolError as exc:
            metrics.protocol_errors.labels(peer="client").inc()
            log.warning("client %s: protocol error, closing: %s", self.name, exc)
            self._refused(exc)
        except Exception:
            log.exception("client %s: pump failed", self.name)
            self.close(abort=True)
        finally:
            if up:  # what was decided before any error: the bad bytes themselves never go on
                self._to_upstream(up[0] if len(up) == 1 else b"".join(up))
        if self._held:
            self._set_client_reading(False)  # a USE is unanswered: read nothing more until it is

    def _refused(self, exc: ProtocolError) -> None:
        """Fail closed on a request the guard will not read: answer it with Cassandra's
        ``Protocol error`` when it can be answered, record why, and close the connection."""
        if exc.reply is not None:
            self._to_client(exc.reply)
        if exc.stream is not None:
            kind = Opcode(exc.opcode).name.lower() if exc.opcode is not None else "unknown"
            self.metrics.count_request("error", "unknown")
            if self.server.flows is not None:
                flow = self._new_flow(kind, None, exc.stream, FlowVerdict.ERROR, time.time(), None,
                                      f"refused, connection closed: {exc}")
                self.server.record_line(flow.to_line())
        self.close()

    def _handle(self, chunks: list[Chunk], up: list[bytes], now: float) -> None:
        """Decide every envelope of ``chunks``; append the bytes for the upstream to ``up``.

        ``now`` is when they were read (``clock()``): the start of their upstream latency.
        """
        conn = self.conn
        inflight = self._inflight
        requests = self.metrics.requests
        wall = time.time()
        if self._hot_generation != self.guard.generation:
            self._forget_hot()
        for wire, envelopes in chunks:
            sent: list[bytes] = []
            for raw in envelopes:
                # The fast path: a request this connection had allowed, under the same policy.
                fast = None if self._held else conn.fast_request(raw)
                if fast is not None:
                    stream, opcode, key = fast
                    if opcode == _EXECUTE:
                        known = self._hot_exec.get(key)
                    else:
                        known = None if conn.keyspace_in_doubt else self._hot_query.get((key, conn.keyspace))
                    if known is not None:
                        conn.forward_fast(stream)
                        inflight[stream] = (known, wall, now)
                        requests[known.counter] += 1
                        sent.append(raw)
                        continue
                event = conn.decode_client(raw)
                if isinstance(event, ProxyReply):
                    self._to_client(event.data)
                elif self._held or not self._dispatch(event, sent):
                    self._hold(event)
            if sent:
                up.append(conn.chunk_for_server(wire, sent, whole=len(sent) == len(envelopes)))

    def _forget_hot(self) -> None:
        self._hot_exec.clear()
        self._hot_query.clear()
        self._hot_generation = self.guard.generation

    def _remember(self, check: Check) -> _Known:
        """A :class:`_Known` for an allowed check, kept for the fast path when it may repeat."""
        if self._hot_generation != self.guard.generation:
            self._forget_hot()
        known = _Known(check, self._template(check) if self.server.flows is not None else None, self.metrics)
        message = check.request.message
        if check.changes_keyspace:
            return known
        if isinstance(message, Execute):
            if len(self._hot_exec) >= _HOT_ENTRIES:
                self._hot_exec.clear()
            self._hot_exec[message.prepared_id] = known
        elif isinstance(message, Query) and message.keyspace is None and len(message.query) <= _HOT_QUERY_CHARS:
            if len(self._hot_query) >= _HOT_ENTRIES:
                self._hot_query.clear()
            self._hot_query[(message.query.encode("utf-8"), check.request.keyspace)] = known
        return known

    def _identity_now(self) -> Identity:
        user = self.conn.user
        if user != self._identity.user:
            self._identity = Identity(address=self.address, user=user, principal=self.principal, subject=self.subject)
            self._forget_hot()
        return self._identity

    def _dispatch(self, request: Request, sent: list[bytes]) -> bool:
        """Check and act on one request; False if it must wait for a USE (nothing was done).

        A forwarded request's envelope is appended to ``sent``; the caller frames and writes it.
        """
        conn = self.conn
        check = self.guard.check(
            request,
            self._identity_now(),
            connection_keyspace=conn.keyspace,
            keyspace_in_doubt=conn.keyspace_in_doubt,
        )
        step = check.step
        if step is Step.PASS:
            conn.forward(request)
            sent.append(request.raw)
        elif step is Step.FORWARD:
            conn.forward(check.request, changes_keyspace=check.changes_keyspace)
            sent.append(check.request.raw)
            known = self._remember(check)
            self._inflight[request.stream] = (known, time.time(), self.clock())
            self.metrics.count_request("allowed", known.action)
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
        sent: list[bytes] = []
        while self._held and not self.conn.keyspace_in_doubt:
            if not self._dispatch(self._held[0], sent):
                break  # a released USE made the keyspace doubtful again
            self._held.popleft()
        if sent:
            self._to_upstream(self.conn.chunk_for_server(b"", sent, whole=False))
        if not self._held:
            self._update_reading()

    # ---------------------------------------------------------- upstream -> client

    def upstream_data(self, data: bytes) -> None:
        if self._closing:
            return
        conn = self.conn
        self.metrics.upstream_in += len(data)
        try:
            out, decoded, answered = conn.relay_server_data(data)
            for response in decoded:
                self.guard.learn(response)
            if self._inflight and answered:
                self._finish(answered)
            if out:
                self._to_client(out)
            if self._held and not conn.keyspace_in_doubt:
                self._release_held()
        except ProtocolError as exc:
            self.metrics.protocol_errors.labels(peer="upstream").inc()
            log.warning("client %s: protocol error from upstream, closing: %s", self.name, exc)
            self.close()
        except Exception:
            log.exception("client %s: pump failed", self.name)
            self.close(abort=True)

    def _finish(self, answered: list[int]) -> None:
        """Latency metrics and flow lines of the forwarded requests answered now."""
        inflight = self._inflight
        metrics = self.metrics
        counts = metrics.latency_counts
        now = self.clock()
        lines: list[str] = []
        total = 0.0
        for stream in answered:
            entry = inflight.pop(stream, None)
            if entry is None:
                continue
            known, wall, started = entry
            elapsed = now - started
            counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            total += elapsed
            if known.template is not None:
                lines.append(known.template.render(wall, stream, elapsed * 1000.0))
        metrics.latency_sum += total
        if lines:
            self.server.record_lines(lines)

    def _abandon_inflight(self) -> None:
        if self.server.flows is not None:
            for stream, (known, wall, _) in self._inflight.items():
                reason = f"{known.decision.reason}; connection closed before the server answered"
                flow = self._new_flow(known.kind, known.classification, stream, FlowVerdict.ALLOWED, wall,
                                      known.decision.rule, reason)
                self.server.record_line(flow.to_line())
        self._inflight.clear()

    # ----------------------------------------------------------------- plumbing

    def _to_client(self, data: bytes) -> None:
        assert self.client_transport is not None
        self.client_transport.write(data)
        self.metrics.client_out += len(data)

    def _to_upstream(self, data: bytes) -> None:
        assert self.upstream_transport is not None
        self.upstream_transport.write(data)
        self.metrics.upstream_out += len(data)

    def _new_flow(self, kind: str, classification: Classification | None, stream: int,
                  verdict: FlowVerdict, wall: float, rule: str | None, reason: str) -> Flow:
        upstream = self.server.settings.upstream
        return Flow(
            time=wall,
            verdict=verdict,
            source_ip=self.ip,
            source_port=self.port,
            user=self._identity.user,
            principal=self.principal,
            subject=self.subject,
            destination_ip=upstream.host,
            destination_port=upstream.port,
            kind=kind,
            stream=stream,
            classification=classification,
            rule=rule,
            reason=reason,
        )

    def _template(self, check: Check) -> FlowTemplate:
        decision = check.decision
        assert decision is not None
        return self._new_flow(check.kind, check.classification, check.request.stream, FlowVerdict.ALLOWED, 0.0,
                              decision.rule, decision.reason).template()

    def _flow(self, check: Check, verdict: FlowVerdict, wall: float, rule: str | None, reason: str) -> None:
        if self.server.flows is None:
            return
        flow = self._new_flow(check.kind, check.classification, check.request.stream, verdict, wall, rule, reason)
        self.server.record_line(flow.to_line())


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
        self._servers: list[asyncio.Server] = []
        #: Open connections (insertion-ordered; the values are unused).
        self._pumps: dict[_Pump, None] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._metrics_server: Any = None
        self._flusher: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind, serve metrics, start the policy watcher (and the flows flusher)."""
        if self.settings.flows_path is not None:
            self.flows = FlowWriter(self.settings.flows_path, max_bytes=self.settings.flows_max_bytes)
            self._flusher = asyncio.create_task(self._flush_periodically(), name="cqlguard flows flusher")
        tls = self.settings.tls.server_context() if self.settings.tls is not None else None
        loop = asyncio.get_running_loop()
        try:
            for listen in self.settings.listen:
                self._servers.append(await loop.create_server(
                    lambda: _Side(_Pump(self), client=True),
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
        for background in (self._watcher, self._flusher):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        pumps = list(self._pumps)
        for pump in pumps:
            pump.close(abort=True)
        if pumps:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await asyncio.gather(*(pump.done for pump in pumps), return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await server.wait_closed()
        if self.flows is not None:
            self.flows.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def admit(self, pump: _Pump) -> bool:
        """A new client connection: count it, or refuse it over the limit."""
        if len(self._pumps) >= self.settings.limits.max_connections:
            self.metrics.rejected_connections.labels(reason="limit").inc()
            log.warning("refusing %s: %d connections open", pump.name, len(self._pumps))
            return False
        self._pumps[pump] = None
        self.metrics.connections.inc()
        self.metrics.open_connections.inc()
        return True

    def release(self, pump: _Pump) -> None:
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
                continue
            if stamp != self._policy_stamp:
                self.reload_policy()
                self._policy_stamp = stamp

    # -------------------------------------------------------------------- flows

    def record_line(self, line: str) -> None:
        """Queue a rendered flow line; lines go out in one write every ``flows_flush_interval_s``,
        or as soon as enough are waiting."""
        self.record_lines([line])

    def record_lines(self, lines: list[str]) -> None:
        flows = self.flows
        if flows is None:
            return
        flows.add_lines(lines)
        if flows.due:
            flows.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flows_flush_interval_s)
            if self.flows is not None:
                self.flows.flush()


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
