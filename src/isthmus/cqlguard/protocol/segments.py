"""v5 segment framing (v5 §2.1, §2.2; Cassandra ``FrameEncoderCrc``/``FrameEncoderLZ4``).

All integers of the outer framing are **little-endian** (the envelopes inside stay big-endian)::

    uncompressed: header3 = length(17) | self_contained << 17     (6 padding bits)
                  [header3 LE: 3][crc24(header3): 3 LE][payload][crc32(payload): 4 LE]
    lz4:          header5 = compressed(17) | uncompressed << 17 | self_contained << 34
                  [header5 LE: 5][crc24(header5): 3 LE][payload][crc32(payload): 4 LE]

CRC24 (``Crc.crc24``): init 0x875060, polynomial 0x1974F0B, fed the header bytes in wire
order. CRC32 (``Crc.crc32``): the standard CRC32 after first feeding ``FA 2D 55 CA``; in the
lz4 format it covers the *compressed* payload. An uncompressed length of 0 in the lz4 header
means "payload stored as is". A self-contained segment holds one or more whole envelopes; an
envelope too large for one segment is split over consecutive non-self-contained segments.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from isthmus.cqlguard.protocol.compression import compress_block, decompress_block
from isthmus.cqlguard.protocol.constants import MAX_SEGMENT_PAYLOAD
from isthmus.cqlguard.protocol.errors import ChecksumMismatch, FrameTooLarge

__all__ = [
    "Segment",
    "SegmentBuffer",
    "crc24",
    "crc32",
    "encode_segment",
    "frame_envelopes",
]

CRC24_INIT = 0x875060
CRC24_POLY = 0x1974F0B
_CRC32_SEED = zlib.crc32(bytes((0xFA, 0x2D, 0x55, 0xCA)))
_PLAIN_HEADER = 3
_LZ4_HEADER = 5
_CRC24_LEN = 3
_CRC32_LEN = 4
_MASK17 = 0x1FFFF


def _crc24_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= CRC24_POLY
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


@lru_cache(maxsize=4096)
def crc24(value: int, length: int) -> int:
    """Cassandra's CRC24 of the ``length`` low bytes of ``value``, least significant first.

    Byte-at-a-time with a 256-entry table (the bitwise loop is ~20x slower in Python), and
    memoized: segment headers repeat (they hold little more than a length).
    """
    crc = CRC24_INIT
    table = _CRC24_TABLE
    for _ in range(length):
        crc = ((crc << 8) & 0xFFFFFF) ^ table[((crc >> 16) ^ value) & 0xFF]
        value >>= 8
    return crc


def crc32(payload: bytes) -> int:
    """Cassandra's CRC32: zlib's CRC32 seeded by the bytes FA 2D 55 CA."""
    return zlib.crc32(payload, _CRC32_SEED)


@dataclass(frozen=True, slots=True)
class Segment:
    """One decoded segment: its payload (decompressed) and the self-contained flag."""

    payload: bytes
    self_contained: bool


def encode_segment(payload: bytes, *, self_contained: bool, compressed: bool) -> bytes:
    """One segment; with ``compressed`` the payload is lz4'd unless that does not shrink it."""
    if len(payload) > MAX_SEGMENT_PAYLOAD:
        raise FrameTooLarge(f"segment payload of {len(payload)} bytes exceeds {MAX_SEGMENT_PAYLOAD}")
    flag = 1 if self_contained else 0
    if compressed:
        body = compress_block(payload)
        uncompressed = len(payload)
        if len(body) >= len(payload):
            body, uncompressed = payload, 0
        header = len(body) | (uncompressed << 17) | (flag << 34)
        head = header.to_bytes(_LZ4_HEADER, "little") + crc24(header, _LZ4_HEADER).to_bytes(3, "little")
    else:
        body = payload
        header = len(body) | (flag << 17)
        head = header.to_bytes(_PLAIN_HEADER, "little") + crc24(header, _PLAIN_HEADER).to_bytes(3, "little")
    return head + body + crc32(body).to_bytes(_CRC32_LEN, "little")


def frame_envelopes(envelopes: Sequence[bytes], *, compressed: bool) -> bytes:
    """Pack whole envelopes into self-contained segments; split any too large for one."""
    out: list[bytes] = []
    batch: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if batch:
            out.append(encode_segment(b"".join(batch), self_contained=True, compressed=compressed))
            batch.clear()
            size = 0

    for env in envelopes:
        if len(env) > MAX_SEGMENT_PAYLOAD:
            flush()
            for start in range(0, len(env), MAX_SEGMENT_PAYLOAD):
                chunk = env[start : start + MAX_SEGMENT_PAYLOAD]
                out.append(encode_segment(chunk, self_contained=False, compressed=compressed))
            continue
        if size + len(env) > MAX_SEGMENT_PAYLOAD:
            flush()
        batch.append(env)
        size += len(env)
    flush()
    return b"".join(out)


class SegmentBuffer:
    """Accumulates a byte stream and yields verified, decompressed :class:`Segment` objects."""

    __slots__ = ("_buf", "_compressed")

    def __init__(self, *, compressed: bool, initial: bytes = b"") -> None:
        self._compressed = compressed
        self._buf = bytearray(initial)

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def compressed(self) -> bool:
        return self._compressed

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_all(self) -> bytes:
        """Hand back every unconsumed byte, a partial segment included."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def next(self) -> Segment | None:
        item = self.next_raw()
        return None if item is None else Segment(payload=item[0], self_contained=item[1])

    def next_raw(self) -> tuple[bytes, bool, bytes] | None:
        """``(payload, self_contained, wire)`` of the next verified segment (``wire``: its bytes
        exactly as they arrived, header and CRCs included); None: need more bytes."""
        buf = self._buf
        head_len = _LZ4_HEADER if self._compressed else _PLAIN_HEADER
        start = head_len + _CRC24_LEN
        if len(buf) < start:
            return None
        header = int.from_bytes(buf[:head_len], "little")
        if crc24(header, head_len) != int.from_bytes(buf[head_len:start], "little"):
            raise ChecksumMismatch("segment header CRC24 mismatch")
        length = header & _MASK17
        end = start + length + _CRC32_LEN
        if len(buf) < end:
            return None
        wire = bytes(buf[:end])
        del buf[:end]
        body = wire[start : start + length]
        if crc32(body) != int.from_bytes(wire[start + length :], "little"):
            raise ChecksumMismatch("segment payload CRC32 mismatch")
        if self._compressed:
            uncompressed = (header >> 17) & _MASK17
            if uncompressed:
                body = decompress_block(body, uncompressed, limit=MAX_SEGMENT_PAYLOAD)
            return body, bool(header >> 34 & 1), wire
        return body, bool(header >> 17 & 1), wire
