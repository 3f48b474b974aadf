"""The asyncio pump: one client connection, its upstream connection, and a session between them.

Owns: :class:`Pump` (driven by asyncio protocol callbacks, :class:`_Side`: no task and no
coroutine switch per read), connecting upstream, back-pressure, time-outs, the TLS peer's
identity (:mod:`.peer`) and handing flow lines and error counts to the server. Every byte read goes to the
connection's :class:`~isthmus.cqlguard.session.GuardSession` and every byte written comes
from it. Must not: parse bytes or decide (the session does).

Back-pressure: each transport's write buffer has a high-water mark
(``Limits.buffer_high_water``). While the upstream's is above it, the client is not read;
while the client's is above it, neither side is read. Each read takes at most
``read_chunk`` bytes. While the session holds requests for a USE, the client is not read.

Time-outs: a client that sends nothing for ``idle_timeout_s`` while the session is not busy
is closed; one that does not finish a frame it started, or does not take our writes, within
``slow_client_timeout_s`` is closed. One timer per connection checks these, re-armed only
when it fires. Any protocol error closes that one connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

from isthmus.cqlguard.peer import Peer, peer_of
from isthmus.cqlguard.session import GuardSession, Output

if TYPE_CHECKING:
    from isthmus.cqlguard.proxy import GuardServer

__all__ = ["Pump", "Side"]

log = logging.getLogger("isthmus.cqlguard")

CLOSE_GRACE_S = 2.0


class Side(asyncio.BufferedProtocol):
    """One socket of a pump; reads at most ``read_chunk`` bytes at a time into its own buffer."""

    def __init__(self, pump: Pump, *, client: bool) -> None:
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


class Pump:
    """One client connection and its upstream connection. See the module docstring."""

    def __init__(self, server: GuardServer) -> None:
        self.server = server
        self.limits = server.settings.limits
        self.metrics = server.metrics
        self.clock = server.clock
        self.client_transport: asyncio.Transport | None = None
        self.upstream_transport: asyncio.Transport | None = None
        self.session: GuardSession | None = None
        self.peer = Peer()
        self.name = "?"
        self._client_reading = True
        self._upstream_reading = True
        self._holding = False  # the session holds requests for a USE (its last output said so)
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

    @property
    def port(self) -> int | None:
        """The client's port."""
        return self.peer.port

    # ------------------------------------------------------------------ lifecycle

    def client_made(self, transport: asyncio.Transport) -> None:
        self.client_transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
        self.peer = peer = peer_of(transport.get_extra_info("peername"), peercert)
        self.name = f"{peer.ip}:{peer.port}"
        if not self.server.admit(self):
            self._closing = True
            transport.abort()
            return
        settings = self.server.settings
        self.session = GuardSession(
            self.server.guard, peer=peer, upstream=settings.upstream, counters=self.metrics,
            record_flows=self.server.flows is not None, max_frame_body=self.limits.max_frame_size,
            max_held=self.limits.max_held_requests,
        )
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
                    lambda: Side(self, client=False), upstream.host, upstream.port
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
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._abort_leftovers)

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
            if self.session is not None:
                lines = self.session.abandon()
                if lines:
                    self.server.record_lines(lines)
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
            self.upstream_transport is not None and not self._upstream_full and not client_full and not self._holding
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
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(max(at - self.clock(), 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        if self._closing:
            return
        now = self.clock()
        slow = self.limits.slow_client_timeout_s
        idle = self.limits.idle_timeout_s
        if self._client_full_since is not None and now - self._client_full_since >= slow:
            log.info("client %s: does not read its responses; closing", self.name)
            return self._time_out("slow_client", abort=True)
        if self._frame_started is not None and now - self._frame_started >= slow:
            log.info("client %s: closed after slow_client timeout", self.name)
            return self._time_out("slow_client")
        idle_at = self._last_read + idle
        if now >= idle_at:
            if self.session is not None and self.session.busy:
                idle_at = now + idle  # the client waits for the server: not idle
                self._last_read = now
            else:
                log.info("client %s: closed after idle timeout", self.name)
                return self._time_out("idle")
        deadlines = [idle_at]
        if self._frame_started is not None:
            deadlines.append(self._frame_started + slow)
        if self._client_full_since is not None:
            deadlines.append(self._client_full_since + slow)
        self._arm(min(deadlines))

    def _time_out(self, kind: str, *, abort: bool = False) -> None:
        self.metrics.timeouts.labels(kind=kind).inc()
        self.close(abort=abort)

    # ------------------------------------------------------------------- the data

    def client_data(self, data: bytes) -> None:
        if self._closing:
            return
        if self.upstream_transport is None:  # read before the upstream is connected
            self._early.append(data)
            self._client_reading = True
            self._set_client_reading(False)
            return
        session = self.session
        assert session is not None
        self._last_read = now = self.clock()
        try:
            out = session.receive_client(data, now, time.time())
        except Exception:
            log.exception("client %s: pump failed", self.name)
            self.close(abort=True)
            return
        if out.progress:
            self._frame_started = None
        elif self._frame_started is None:
            self._frame_started = now
            self._arm(now + self.limits.slow_client_timeout_s)
        self._write(out, "client")
        if out.holding:
            self._set_client_reading(False)  # a USE is unanswered: read nothing more until it is

    def upstream_data(self, data: bytes) -> None:
        if self._closing:
            return
        session = self.session
        assert session is not None
        holding = self._holding
        try:
            out = session.receive_upstream(data, self.clock(), time.time())
        except Exception:
            log.exception("client %s: pump failed", self.name)
            self.close(abort=True)
            return
        self._write(out, "upstream")
        if holding and not out.holding:
            self._update_reading()

    def _write(self, out: Output, peer: str) -> None:
        """Write a session's output; close after a protocol error from ``peer``."""
        self._holding = out.holding
        if out.upstream:
            assert self.upstream_transport is not None
            self.upstream_transport.write(out.upstream)
        if out.client:
            assert self.client_transport is not None
            self.client_transport.write(out.client)
        if out.flows:
            self.server.record_lines(out.flows)
        if out.error is not None:
            self.metrics.protocol_errors.labels(peer=peer).inc()
            what = "protocol error" if peer == "client" else "protocol error from upstream"
            log.warning("client %s: %s, closing: %s", self.name, what, out.error)
            self.close()
