"""Cross-checks against an independent implementation: the DataStax Python driver's codecs."""

from __future__ import annotations

import io

import pytest

from isthmus.cqlguard.protocol import Batch, BatchPrepared, BatchQuery, Execute, Prepare, Query
from isthmus.cqlguard.protocol.frames import EnvelopeHeader
from isthmus.cqlguard.protocol.messages import parse_request
from isthmus.cqlguard.protocol.segments import SegmentBuffer, crc24, encode_segment

protocol = pytest.importorskip("cassandra.protocol")
segment_mod = pytest.importorskip("cassandra.segment")
connection_mod = pytest.importorskip("cassandra.connection")
ConsistencyLevel = pytest.importorskip("cassandra").ConsistencyLevel
BatchType = pytest.importorskip("cassandra.query").BatchType


def decode(msg: object, version: int) -> object:
    raw = bytes(protocol.ProtocolHandler.encode_message(msg, 1, version, None, False))
    header = EnvelopeHeader.parse(raw[:9], max_body=1 << 20)
    return parse_request(header.opcode, header.flags, raw[9:], version)


@pytest.mark.parametrize("version", [4, 5])
def test_driver_query_prepare_execute_batch(version: int) -> None:
    ks = "ks" if version >= 5 else None
    q = protocol.QueryMessage(
        "SELECT * FROM t",
        ConsistencyLevel.ONE,
        serial_consistency_level=ConsistencyLevel.SERIAL,
        fetch_size=100,
        paging_state=b"ps",
        timestamp=12345,
        keyspace=ks,
    )
    assert decode(q, version) == Query("SELECT * FROM t", keyspace=ks)
    assert decode(protocol.PrepareMessage("SELECT 1", keyspace=ks), version) == Prepare("SELECT 1", keyspace=ks)
    e = protocol.ExecuteMessage(b"\x01\x02", [b"v"], ConsistencyLevel.ONE, result_metadata_id=b"\x03")
    assert decode(e, version) == Execute(b"\x01\x02", b"\x03" if version >= 5 else None)
    b = protocol.BatchMessage(
        BatchType.LOGGED,
        [(False, "INSERT INTO t (a) VALUES (1)", ()), (True, b"\x07", (b"x",))],
        ConsistencyLevel.ONE,
        serial_consistency_level=ConsistencyLevel.SERIAL,
        timestamp=99,
        keyspace=ks,
    )
    assert decode(b, version) == Batch(
        0, (BatchQuery("INSERT INTO t (a) VALUES (1)"), BatchPrepared(b"\x07")), keyspace=ks
    )


def test_crc24_matches_driver() -> None:
    for value, n in [(0, 3), (0x2ABCD, 3), (0x3FFFF, 3), (0x1234567890, 5), (1 << 34, 5)]:
        assert crc24(value, n) == segment_mod.compute_crc24(value, n)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("payload", [b"", b"x", b"abc" * 1000, bytes(range(256)) * 200])
def test_segments_interoperate_with_driver(compressed: bool, payload: bytes) -> None:
    payload = payload[: segment_mod.Segment.MAX_PAYLOAD_LENGTH]
    codec = (
        segment_mod.SegmentCodec(connection_mod.lz4_compress, connection_mod.lz4_decompress)
        if compressed
        else segment_mod.SegmentCodec()
    )
    # ours -> driver
    buf = io.BytesIO(encode_segment(payload, self_contained=True, compressed=compressed))
    header = codec.decode_header(buf)
    seg = codec.decode(buf, header)
    assert seg.payload == payload and seg.is_self_contained
    # driver -> ours
    out = io.BytesIO()
    codec.encode(out, payload)
    ours = SegmentBuffer(compressed=compressed)
    ours.feed(out.getvalue())
    got = ours.next()
    assert got is not None and got.payload == payload and got.self_contained
