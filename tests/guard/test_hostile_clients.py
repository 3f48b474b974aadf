"""Hostile and broken clients close only their own connection; other clients keep working.

Raw sockets speak (or mangle) the protocol with ``cqlwire``'s handcrafted frames; a real
driver session through the same guard must keep answering. Where the test must prove that
nothing reached the upstream, the upstream is a recording fake server instead of Cassandra.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from isthmus.cqlguard.settings import Limits
from protocol import cqlwire as w

from .conftest import RunningGuard, running_guard

GARBAGE = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(b"\x00" * 64, id="zeros"),
    pytest.param(bytes(range(256)) * 4, id="all-bytes"),
    pytest.param(struct.pack(">BBhBi", 4, 0, 0, 0x01, 0x7FFFFFFF), id="oversized-frame-header"),
    pytest.param(struct.pack(">BBhBi", 4, 0, 0, 0x07, 10) + b"x" * 10, id="query-before-startup"),
    pytest.param(struct.pack(">BBhBi", 4, 0, 0, 0x42, 0), id="unknown-opcode"),
    pytest.param(struct.pack(">BBhBi", 0x84, 0, 0, 0x02, 0), id="response-from-client"),
]


def _closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the guard has closed ``sock`` (EOF or reset); reads and discards anything else."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _startup_v4(sock: socket.socket) -> None:
    sock.sendall(w.startup(4))
    header = _recv_exact(sock, 9)
    assert header[4] == 0x02, f"expected READY, got opcode {header[4]:#x}"
    _recv_exact(sock, struct.unpack(">i", header[5:9])[0])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


# ------------------------------------------------------------------ a recording fake upstream


@dataclass
class RecordingUpstream:
    """A TCP server that records every byte it receives and answers nothing (or, with ``answer_startup``, only
    the first frame: READY, as to a STARTUP)."""

    host: str = "127.0.0.1"
    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0


@contextlib.contextmanager
def recording_upstream(*, answer_startup: bool = False) -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.connections += 1
        if answer_startup:
            startup = await reader.readexactly(9)
            upstream.received += startup + await reader.readexactly(struct.unpack(">i", startup[5:9])[0])
            writer.write(w.frame(startup[0] & 0x7F, struct.unpack(">h", startup[2:4])[0], 0x02, b"", response=True))
        while data := await reader.read(65536):
            upstream.received += data
        writer.close()

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        return server

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_never_reaches_the_upstream(tmp_path: Path, garbage: bytes) -> None:
    with recording_upstream() as upstream, running_guard(upstream, tmp_path) as guard:
        with socket.create_connection((guard.host, guard.port)) as sock:
            sock.sendall(garbage)
            assert _closed_by_peer(sock)
        assert upstream.received == b""
        assert guard.server.metrics.protocol_errors.labels(peer="client")._value.get() == 1


def test_garbage_after_a_valid_startup_forwards_only_the_startup(tmp_path: Path) -> None:
    with recording_upstream() as upstream, running_guard(upstream, tmp_path) as guard:
        with socket.create_connection((guard.host, guard.port)) as sock:
            sock.sendall(w.startup(4))
            time.sleep(0.3)  # a separate read: garbage in the same read would drop the STARTUP too
            sock.sendall(b"\xff" * 32)
            assert _closed_by_peer(sock)
        assert bytes(upstream.received) == w.startup(4)


def test_requests_left_unanswered_are_logged_by_their_own_stream(tmp_path: Path) -> None:
    """The second QUERY repeats the first, so it is decided on the fast path; when the client goes away
    before the server answers either, each flow still names its own stream."""
    select = "SELECT v FROM guardks.kv WHERE k = 1"
    with recording_upstream(answer_startup=True) as upstream, running_guard(upstream, tmp_path) as guard:
        with socket.create_connection((guard.host, guard.port)) as sock:
            _startup_v4(sock)
            sock.sendall(w.query(select, 4, stream=5))
            time.sleep(0.3)  # a read of its own, so the second is not decoded in the same batch
            sock.sendall(w.query(select, 4, stream=9))
            deadline = time.monotonic() + 5
            while upstream.received.count(select.encode()) < 2:
                assert time.monotonic() < deadline, "the guard did not forward both queries"
                time.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(abandoned := [f for f in guard.flows() if "closed before the server answered" in f["reason"]]) < 2:
            assert time.monotonic() < deadline, guard.flows()
            time.sleep(0.1)
        assert sorted(f["l7"]["stream"] for f in abandoned) == [5, 9]
        assert {f["verdict"] for f in abandoned} == {"ALLOWED"}


# ------------------------------------------------------------------------- with Cassandra


@pytest.mark.cassandra
@pytest.mark.slow
@pytest.mark.parametrize("garbage", GARBAGE[:4])
def test_hostile_bytes_close_that_connection_only(guard: RunningGuard, garbage: bytes) -> None:
    session = guard.connect(protocol_version=5, compression="lz4")
    assert session.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
    with socket.create_connection((guard.host, guard.port)) as sock:
        _startup_v4(sock)
        sock.sendall(garbage)
        assert _closed_by_peer(sock)
    with socket.create_connection((guard.host, guard.port)) as sock:
        sock.sendall(garbage)
        assert _closed_by_peer(sock)
    for _ in range(5):
        assert session.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
    assert guard.server.metrics.protocol_errors.labels(peer="client")._value.get() == 2


@pytest.mark.cassandra
@pytest.mark.slow
def test_bad_v5_segment_checksum_closes_the_connection(guard: RunningGuard) -> None:
    with socket.create_connection((guard.host, guard.port)) as sock:
        sock.sendall(w.startup(5))
        header = _recv_exact(sock, 9)
        _recv_exact(sock, struct.unpack(">i", header[5:9])[0])
        segment = bytearray(w.segment(w.query("SELECT * FROM guardks.kv", version=5)))
        segment[-1] ^= 0xFF  # corrupt the payload CRC32
        sock.sendall(bytes(segment))
        assert _closed_by_peer(sock)


@pytest.mark.cassandra
@pytest.mark.slow
def test_limits_slowloris_idle_and_connection_count(guard_schema: Any, tmp_path: Path) -> None:
    limits = Limits(max_connections=3, idle_timeout_s=1.0, slow_client_timeout_s=1.0)
    with running_guard(guard_schema, tmp_path, limits=limits) as guard:
        metrics = guard.server.metrics
        # Slowloris: half a frame header, then nothing.
        with socket.create_connection((guard.host, guard.port)) as sock:
            sock.sendall(w.startup(4)[:5])
            started = time.monotonic()
            assert _closed_by_peer(sock, timeout=5)
            assert time.monotonic() - started < 3
        # Idle: a finished handshake, then silence.
        with socket.create_connection((guard.host, guard.port)) as sock:
            _startup_v4(sock)
            assert _closed_by_peer(sock, timeout=5)
        assert metrics.timeouts.labels(kind="slow_client")._value.get() == 1
        assert metrics.timeouts.labels(kind="idle")._value.get() == 1
        # Connection limit: three held open, the fourth is closed at once.
        held = [socket.create_connection((guard.host, guard.port)) for _ in range(3)]
        try:
            time.sleep(0.3)
            with socket.create_connection((guard.host, guard.port)) as extra:
                assert _closed_by_peer(extra, timeout=2)
            assert metrics.rejected_connections.labels(reason="limit")._value.get() == 1
        finally:
            for sock in held:
                sock.close()


@pytest.mark.cassandra
@pytest.mark.slow
def test_a_client_that_does_not_read_is_bounded_then_closed(guard_schema: Any, tmp_path: Path) -> None:
    """Pipelined big reads, never read back: the guard stops reading Cassandra at the high-water
    mark (memory stays bounded), then closes the slow client; others are unaffected."""
    high = 64 * 1024
    limits = Limits(buffer_high_water=high, slow_client_timeout_s=3.0, read_chunk=16 * 1024)
    with running_guard(guard_schema, tmp_path, limits=limits) as guard:
        session = guard.connect(protocol_version=4)
        sock = socket.create_connection((guard.host, guard.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            _startup_v4(sock)
            requests = b"".join(w.query("SELECT * FROM guardks.big", version=4, stream=i) for i in range(1, 400))
            sock.sendall(requests)

            def stopped_reading_upstream() -> bool:
                return any(not p._upstream_reading for p in guard.server._pumps)

            deadline = time.monotonic() + 10
            while not guard.run(stopped_reading_upstream):  # the client's buffer passed the mark
                assert time.monotonic() < deadline, "the guard did not stop reading Cassandra for the slow client"
                time.sleep(0.05)

            def buffered() -> list[int]:
                return [p.client_transport.get_write_buffer_size() for p in guard.server._pumps]

            sizes = guard.run(buffered)
            # Writes stop once above the mark; at most one read chunk's responses overshoot it.
            assert sizes and max(sizes) <= high + 128 * 1024
            assert session.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
            slow = guard.server.metrics.timeouts.labels(kind="slow_client")
            deadline = time.monotonic() + 15
            while slow._value.get() < 1:  # do not read: reading would make it a fast client
                assert time.monotonic() < deadline, "the slow client was not closed"
                time.sleep(0.2)
            port = sock.getsockname()[1]
            while port in (ports := guard.run(lambda: [p.port for p in guard.server._pumps])):
                assert time.monotonic() < deadline + 5, "the slow client's connection was not closed"
                time.sleep(0.2)
            assert ports  # the driver's connections are still open
        finally:
            sock.close()
