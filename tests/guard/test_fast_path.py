"""The cheap paths of the codec, without sockets: bytes forwarded exactly as they came.

* Client -> server: an EXECUTE/QUERY decided without decoding goes on in the client's own
  v5 segment, checksums and all; a segment whose envelopes are not all forwarded is re-framed.
* Server -> client: once established, the server's bytes are relayed untouched (v5 checksums
  are not recomputed, nor checked: the client does that), cut only at envelope boundaries;
  the segments of a large envelope are held until its last one is in; answers that matter
  (to decoded requests, Set_keyspace) are still decoded.
"""

from __future__ import annotations

import itertools
import struct

import lz4.block
import pytest

from isthmus.cqlguard.protocol import CQLConnection, Opcode, ProtocolError, Request
from isthmus.cqlguard.protocol.constants import MAX_SEGMENT_PAYLOAD
from isthmus.cqlguard.protocol.segments import SegmentBuffer
from protocol import cqlwire as w

ROWS = struct.pack(">i", 2) + struct.pack(">iii", 4, 1, 0) + b"row"


def _established(version: int, compression: str | None = None) -> CQLConnection:
    conn = CQLConnection()
    [startup] = conn.receive_client_data(w.startup(version, compression=compression))
    assert isinstance(startup, Request)
    conn.forward_to_server(startup)
    out, decoded, answered = conn.relay_server_data(w.ready(version, 0))
    assert out == w.ready(version, 0) and answered == [0] and len(decoded) == 1
    return conn


def _segment(payload: bytes, compressed: bool, *, self_contained: bool = True) -> bytes:
    return w.lz4_segment(payload, self_contained=self_contained) if compressed else w.segment(
        payload, self_contained=self_contained
    )


def _rows(stream: int, version: int = 5, size: int = 0) -> bytes:
    return w.frame(version, stream, 0x08, ROWS + b"x" * size, response=True)


@pytest.mark.parametrize("compressed", [False, True], ids=["v5", "v5-lz4"])
def test_a_repeated_execute_goes_on_in_the_clients_own_segment(compressed: bool) -> None:
    conn = _established(5, "lz4" if compressed else None)
    # First time: decoded (PREPARE), answered, learnt by the caller (not shown here).
    [(wire, [raw])] = conn.receive_client_chunks(_segment(w.execute(b"id-1", 5, stream=7), compressed))
    fast = conn.fast_request(raw)
    assert fast == (7, Opcode.EXECUTE, b"id-1")
    conn.forward_fast(7)
    assert conn.chunk_for_server(wire, [raw], whole=True) is wire  # not re-framed: same bytes, same CRCs
    assert conn.fast_request(raw) is None  # stream 7 is now in flight: decode it (and refuse it)
    out, decoded, answered = conn.relay_server_data(_segment(_rows(7), compressed))
    assert answered == [7] and decoded == []
    assert out == _segment(_rows(7), compressed)


def test_a_segment_whose_envelopes_are_not_all_forwarded_is_reframed() -> None:
    conn = _established(5)
    first, second = w.execute(b"ok", 5, stream=1), w.query("SELECT * FROM secret.t", 5, stream=2)
    [(wire, envelopes)] = conn.receive_client_chunks(w.segment(first + second))
    assert envelopes == [first, second]
    conn.forward_fast(1)
    reframed = conn.chunk_for_server(wire, [first], whole=False)
    segments = SegmentBuffer(compressed=False, initial=reframed)
    segment = segments.next()
    assert segment is not None and segment.payload == first and segments.next() is None


def test_fast_requests_need_an_established_connection_and_a_plain_envelope() -> None:
    conn = CQLConnection()
    assert conn.fast_request(w.execute(b"id", 4, stream=1)) is None  # handshake not done
    conn = _established(4)
    assert conn.fast_request(w.execute(b"id", 4, stream=1)) == (1, Opcode.EXECUTE, b"id")
    assert conn.fast_request(w.query("SELECT 1", 4, stream=2)) == (2, Opcode.QUERY, b"SELECT 1")
    assert conn.fast_request(w.prepare("SELECT 1", 4, stream=3)) is None  # PREPARE: always decoded
    custom = bytearray(w.execute(b"id", 4, stream=4))
    custom[1] |= 0x04  # custom payload
    assert conn.fast_request(bytes(custom)) is None
    assert conn.fast_request(w.execute(b"id", 5, stream=5)) is None  # another version
    assert conn.fast_request(w.frame(4, 6, 0x0A, b"\x00")) is None  # truncated: decode (and refuse) it
    v5 = _established(5)
    assert v5.fast_request(w.query("SELECT * FROM t", 5, stream=1)) == (1, Opcode.QUERY, b"SELECT * FROM t")
    assert v5.fast_request(w.query("SELECT * FROM t", 5, stream=1, keyspace="other")) is None  # per-request keyspace


@pytest.mark.parametrize("compressed", [False, True], ids=["v5", "v5-lz4"])
def test_server_bytes_are_relayed_untouched_and_cut_only_between_envelopes(compressed: bool) -> None:
    conn = _established(5, "lz4" if compressed else None)
    for stream in (1, 2, 3):
        conn.forward_fast(stream)
    small = _segment(_rows(1) + _rows(2), compressed)
    big_envelope = _rows(3, size=MAX_SEGMENT_PAYLOAD + 5000)
    big = [
        _segment(big_envelope[i : i + MAX_SEGMENT_PAYLOAD], compressed, self_contained=False)
        for i in range(0, len(big_envelope), MAX_SEGMENT_PAYLOAD)
    ]
    assert len(big) == 2
    event = _segment(w.frame(5, -1, 0x0C, w.string("STATUS_CHANGE") + b"rest", response=True), compressed)
    stream_of_bytes = small + big[0] + big[1] + event
    relayed = bytearray()
    answered_all: list[int] = []
    cut_points = [0, 5, len(small) - 1, len(small) + 10, len(small) + len(big[0]) + 3, len(stream_of_bytes)]
    emitted_at: list[int] = []
    for start, end in itertools.pairwise(cut_points):
        out, decoded, answered = conn.relay_server_data(stream_of_bytes[start:end])
        assert decoded == []
        relayed += out
        answered_all += answered
        emitted_at.append(len(relayed))
    assert bytes(relayed) == stream_of_bytes
    assert answered_all == [1, 2, 3]
    # Never half an envelope: the first segment of the big one waits for the second.
    assert emitted_at == [0, 0, len(small), len(small), len(stream_of_bytes)]


def test_server_checksums_are_left_to_the_client() -> None:
    conn = _established(5)
    conn.forward_fast(1)
    corrupt = bytearray(w.segment(_rows(1)))
    corrupt[-1] ^= 0xFF
    out, _, answered = conn.relay_server_data(bytes(corrupt))
    assert out == bytes(corrupt) and answered == [1]


def test_server_framing_errors_still_close_the_connection() -> None:
    conn = _established(5)
    with pytest.raises(ProtocolError):
        conn.relay_server_data(w.segment(_rows(1)[:-2]))  # a self-contained segment ending mid-envelope
    conn = _established(4)
    with pytest.raises(ProtocolError):
        conn.relay_server_data(w.frame(4, 1, 0x07, b""))  # a request frame from the server


@pytest.mark.parametrize(("version", "compression"), [(4, None), (4, "lz4"), (5, None), (5, "lz4")])
def test_a_set_keyspace_answer_is_seen_even_on_the_fast_path(version: int, compression: str | None) -> None:
    conn = _established(version, compression)
    conn.forward_fast(9)  # a QUERY decided without decoding
    response = w.result_set_keyspace("elsewhere", version, stream=9)
    if version == 4 and compression:
        body = response[9:]
        response = w.frame(4, 9, 0x08, w.lz4_body(body), response=True, flags=0x01)
    elif version == 5:
        response = _segment(response, compression == "lz4")
    out, decoded, answered = conn.relay_server_data(response)
    assert out == response and answered == [9] and len(decoded) == 1
    assert conn.keyspace == "elsewhere"


def test_answers_to_decoded_requests_are_decoded() -> None:
    conn = _established(5, "lz4")
    [(_, [raw])] = conn.receive_client_chunks(w.lz4_segment(w.prepare("SELECT * FROM ks.t", 5, stream=4)))
    request = conn.decode_client(raw)
    assert isinstance(request, Request)
    conn.forward(request)
    out, decoded, answered = conn.relay_server_data(w.lz4_segment(w.result_prepared(b"pid", 5, stream=4)))
    assert answered == [4] and [r.request for r in decoded] == [request]
    assert conn.prepared[b"pid"].query == "SELECT * FROM ks.t"
    assert lz4.block.decompress(out[8:-4], uncompressed_size=len(w.result_prepared(b"pid", 5, stream=4))) == (
        w.result_prepared(b"pid", 5, stream=4)
    )
