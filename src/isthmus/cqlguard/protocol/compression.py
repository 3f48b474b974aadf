"""lz4, the only compression the proxy speaks (snappy is refused in the handshake).

Two layouts from the specs:

* v4 §5 (frame body): a 4-byte **big-endian** uncompressed length, then a raw lz4 block.
  (``lz4.block``'s own size prefix is little-endian, hence ``store_size=False``.)
* v5 §2.2 (segment payload): a raw lz4 block; the uncompressed length lives in the segment
  header (and 0 there means "stored uncompressed").

A declared uncompressed length is checked against the configured limit *and* against lz4's
maximum expansion ratio (a block expands at most ~255x) before anything is allocated, so a
small malicious frame cannot make the proxy allocate 256 MiB.
"""

from __future__ import annotations

import struct

import lz4.block

from isthmus.cqlguard.protocol.errors import CompressionError, FrameTooLarge

__all__ = ["compress_block", "compress_body", "decompress_block", "decompress_body"]

_BE_LENGTH = struct.Struct(">I")
#: lz4 encodes a run of n literals/matches in at least n/255 bytes; 255x (+ slack) bounds it.
_MAX_EXPANSION = 255


def compress_block(data: bytes) -> bytes:
    """A raw lz4 block, no size prefix."""
    compressed: bytes = lz4.block.compress(data, store_size=False)
    return compressed


def decompress_block(data: bytes, uncompressed_length: int, *, limit: int) -> bytes:
    """Decompress a raw lz4 block that must expand to exactly ``uncompressed_length`` bytes."""
    if uncompressed_length > limit:
        raise FrameTooLarge(f"declared uncompressed length {uncompressed_length} exceeds limit {limit}")
    if uncompressed_length > len(data) * _MAX_EXPANSION + 16:
        raise CompressionError(
            f"declared uncompressed length {uncompressed_length} is impossible for {len(data)} lz4 bytes"
        )
    if uncompressed_length == 0:
        if data not in (b"", b"\x00"):
            raise CompressionError("lz4 block declared empty but carries data")
        return b""
    try:
        out: bytes = lz4.block.decompress(data, uncompressed_size=uncompressed_length)
    except Exception as exc:  # lz4 raises LZ4BlockError (a RuntimeError subclass) or ValueError
        raise CompressionError(f"lz4 block does not decompress: {exc}") from exc
    if len(out) != uncompressed_length:
        raise CompressionError(f"lz4 block expanded to {len(out)} bytes, header said {uncompressed_length}")
    return out


def compress_body(body: bytes) -> bytes:
    """v4 frame-body layout: big-endian uncompressed length + raw lz4 block."""
    return _BE_LENGTH.pack(len(body)) + compress_block(body)


def decompress_body(body: bytes, *, limit: int) -> bytes:
    """Inverse of :func:`compress_body`."""
    if len(body) < 4:
        raise CompressionError("lz4 frame body shorter than its 4-byte length prefix")
    (length,) = _BE_LENGTH.unpack_from(body)
    return decompress_block(body[4:], length, limit=limit)
