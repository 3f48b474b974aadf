"""The pump fails closed: a request the guard will not read is answered with Cassandra's
``Protocol error`` on its own stream, recorded in the flow log with the reason, never forwarded,
and its connection is closed; the guard itself keeps serving (issue 16)."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from protocol import cqlwire as w

from .conftest import running_guard
from .test_hostile_clients import _closed_by_peer, _recv_exact, _startup_v4, recording_upstream

REFUSED = [
    pytest.param(w.query("USE secretks", 4, stream=-5), -5, "negative", id="negative-stream"),
    pytest.param(
        w.frame(4, 6, 0x07, w.long_string("SELECT * FROM guardks.kv") + struct.pack(">HB", 1, 0x04)
                + struct.pack(">i", 10) + b"trailing"),
        6, "bytes after", id="leftover-bytes",
    ),
    pytest.param(w.auth_response("admin", "pw", stream=8), 8, "not allowed while established",
                 id="auth-when-established"),
]


@pytest.mark.parametrize(("request_bytes", "stream", "why"), REFUSED)
def test_a_refused_request_is_answered_recorded_and_closes_its_connection(
    tmp_path: Path, request_bytes: bytes, stream: int, why: str
) -> None:
    with recording_upstream(answer_startup=True) as upstream, running_guard(upstream, tmp_path) as guard:
        with socket.create_connection((guard.host, guard.port)) as sock:
            _startup_v4(sock)
            sock.settimeout(5)
            sock.sendall(request_bytes)
            header = _recv_exact(sock, 9)
            version, _flags, got_stream, opcode, length = struct.unpack(">BBhBi", header)
            body = _recv_exact(sock, length)
            assert (version, got_stream, opcode) == (0x84, stream, 0x00)
            code, n = struct.unpack(">iH", body[:6])
            assert code == 0x000A and why in body[6 : 6 + n].decode()
            assert _closed_by_peer(sock)
        assert bytes(upstream.received) == w.startup(4)  # the refused request never went on
        deadline = time.monotonic() + 5
        while not (refused := [f for f in guard.flows() if f["verdict"] == "ERROR"]):
            assert time.monotonic() < deadline, guard.flows()
            time.sleep(0.05)
        [flow] = refused
        assert flow["l7"]["stream"] == stream and why in flow["reason"]
        # The guard lives on: a new connection is served.
        with socket.create_connection((guard.host, guard.port)) as sock:
            _startup_v4(sock)
