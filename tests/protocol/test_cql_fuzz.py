"""Arbitrary bytes into every decoder: only ProtocolError (or nothing) may come out."""

from __future__ import annotations

import contextlib

import cqlwire as w
from hypothesis import given, settings
from hypothesis import strategies as st

from isthmus.cqlguard.protocol import ConnectionConfig, CQLConnection, ProtocolError, ProxyReply
from isthmus.cqlguard.protocol.constants import HeaderFlag, Opcode
from isthmus.cqlguard.protocol.messages import parse_request, parse_response
from isthmus.cqlguard.protocol.segments import SegmentBuffer

LIMIT = ConnectionConfig(max_frame_body=1 << 16)
chunks = st.lists(st.binary(max_size=300), max_size=6)


def feed(conn: CQLConnection, parts: list[bytes], *, server: bool) -> None:
    try:
        for part in parts:
            if server:
                conn.receive_server_data(part)
            else:
                conn.receive_client_data(part)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(chunks)
def test_fresh_connection_client_side(parts: list[bytes]) -> None:
    feed(CQLConnection(LIMIT), parts, server=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 5]), st.sampled_from([None, "lz4"]), chunks, st.booleans())
def test_established_connection(version: int, compression: str | None, parts: list[bytes], server: bool) -> None:
    conn = CQLConnection(LIMIT)
    [req] = conn.receive_client_data(w.startup(version, compression=compression))
    assert not isinstance(req, bytes)
    conn.forward_to_server(req)  # type: ignore[arg-type]
    [ready] = conn.receive_server_data(w.ready(version))
    conn.forward_to_client(ready)
    feed(conn, parts, server=server)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(Opcode)), st.integers(0, 0x1F), st.binary(max_size=200), st.sampled_from([4, 5]))
def test_message_parsers(opcode: Opcode, flags: int, body: bytes, version: int) -> None:
    for parse in (parse_request, parse_response):
        with contextlib.suppress(ProtocolError):
            parse(opcode, HeaderFlag(flags), body, version)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.binary(max_size=400))
def test_segment_buffer(compressed: bool, data: bytes) -> None:
    buf = SegmentBuffer(compressed=compressed, initial=data)
    try:
        while buf.next() is not None:
            pass
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_valid_segment_with_garbage_payload(payload: bytes, self_contained: bool) -> None:
    conn = CQLConnection(LIMIT)
    conn.forward_to_server(conn.receive_client_data(w.startup(5))[0])  # type: ignore[arg-type]
    conn.forward_to_client(conn.receive_server_data(w.ready(5))[0])
    feed(conn, [w.segment(payload, self_contained=self_contained)], server=False)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 300_000), min_size=1, max_size=4),
    st.sampled_from([None, "lz4"]),
)
def test_frame_envelopes_round_trip(sizes: list[int], compression: str | None) -> None:
    """Whatever the envelope sizes, re-framing then decoding gives the same envelopes back."""
    conn = CQLConnection()
    conn.forward_to_server(conn.receive_client_data(w.startup(5, compression=compression))[0])  # type: ignore[arg-type]
    conn.forward_to_client(conn.receive_server_data(w.ready(5))[0])
    envs = [w.frame(5, i, 0x07, w.query_body("SELECT * FROM ks.t" + " " * n, 5)) for i, n in enumerate(sizes)]
    from isthmus.cqlguard.protocol.segments import frame_envelopes

    events = conn.receive_client_data(frame_envelopes(envs, compressed=compression == "lz4"))
    assert [e.raw for e in events if not isinstance(e, ProxyReply)] == envs
