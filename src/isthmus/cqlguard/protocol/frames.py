"""v4 frames and v5 envelopes: the 9-byte header and an incremental splitter.

A v4 frame and a v5 envelope share one layout (v4 §2, v5 §2.4)::

    version(1, bit 0x80 = response) flags(1) stream(2, signed) opcode(1) length(4) body

This module only cuts bytes into ``(header, raw)`` pairs and builds new ones; it does not
look inside bodies (see :mod:`.messages`) and knows nothing of connection state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from isthmus.cqlguard.protocol.constants import ENVELOPE_HEADER_LENGTH, RESPONSE_BIT, HeaderFlag
from isthmus.cqlguard.protocol.errors import FrameTooLarge, ProtocolError

__all__ = ["EnvelopeBuffer", "EnvelopeHeader", "body_length", "encode_envelope", "split_raw"]

_HEADER = struct.Struct(">BBhBi")
_VERSION_AND_LENGTH = struct.Struct(">B4xi")


def body_length(data: bytes | bytearray, pos: int, *, max_body: int) -> int:
    """The body length of the header at ``data[pos:pos+9]``, validated as :meth:`EnvelopeHeader.parse`
    does (readable version, length in ``0..max_body``), without building a header object."""
    version_byte, length = _VERSION_AND_LENGTH.unpack_from(data, pos)
    if version_byte & ~RESPONSE_BIT < 3:
        raise ProtocolError(f"protocol version {version_byte & ~RESPONSE_BIT} has a header this codec cannot read")
    if length < 0:
        raise ProtocolError(f"negative body length {length}")
    if length > max_body:
        raise FrameTooLarge(f"body of {length} bytes exceeds the {max_body}-byte limit")
    return int(length)


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The decoded 9-byte header of one frame (v4) or envelope (v5)."""

    version: int
    is_response: bool
    flags: HeaderFlag
    stream: int
    opcode: int
    length: int

    @classmethod
    def parse(cls, data: bytes, *, max_body: int) -> EnvelopeHeader:
        if len(data) < ENVELOPE_HEADER_LENGTH:
            raise ProtocolError("envelope header shorter than 9 bytes")
        version_byte, flags, stream, opcode, length = _HEADER.unpack_from(data)
        version = version_byte & ~RESPONSE_BIT
        if version < 3:
            # v1/v2 used an 8-byte header with a 1-byte stream: we cannot even frame them.
            raise ProtocolError(f"protocol version {version} has a header this codec cannot read")
        if length < 0:
            raise ProtocolError(f"negative body length {length}")
        if length > max_body:
            raise FrameTooLarge(f"body of {length} bytes exceeds the {max_body}-byte limit")
        return cls(
            version=version,
            is_response=bool(version_byte & RESPONSE_BIT),
            flags=HeaderFlag(flags),
            stream=stream,
            opcode=opcode,
            length=length,
        )

    def encode(self) -> bytes:
        version = self.version | (RESPONSE_BIT if self.is_response else 0)
        return _HEADER.pack(version, int(self.flags) & 0xFF, self.stream, self.opcode, self.length)


def encode_envelope(
    *, version: int, is_response: bool, flags: HeaderFlag, stream: int, opcode: int, body: bytes
) -> bytes:
    """Header + body (the body already compressed if ``flags`` says so)."""
    header = EnvelopeHeader(
        version=version, is_response=is_response, flags=flags, stream=stream, opcode=opcode, length=len(body)
    )
    return header.encode() + body


class EnvelopeBuffer:
    """Accumulates a byte stream and yields complete ``(header, raw_envelope)`` pairs.

    The size limit is enforced as soon as the 9 header bytes are in, before the body is
    buffered, so an oversized length never makes the proxy wait for (or hold) the body.
    """

    __slots__ = ("_buf", "_header", "_max_body")

    def __init__(self, *, max_body: int) -> None:
        self._buf = bytearray()
        self._header = False  # True while a header is in but its body is not
        self._max_body = max_body

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def take_rest(self) -> bytes:
        """Hand back unconsumed bytes (used when a direction switches to segment framing)."""
        if self._header:
            raise ProtocolError("framing switched in the middle of an envelope")
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def take_all(self) -> bytes:
        """Hand back every unconsumed byte, a partial envelope included."""
        rest = bytes(self._buf)
        self._buf.clear()
        self._header = False
        return rest

    def next(self) -> tuple[EnvelopeHeader, bytes] | None:
        raw = self.next_raw()
        if raw is None:
            return None
        return EnvelopeHeader.parse(raw, max_body=self._max_body), raw

    def next_raw(self) -> bytes | None:
        """The next whole envelope (header + body), its header validated; None: need more bytes."""
        buf = self._buf
        if len(buf) < ENVELOPE_HEADER_LENGTH:
            return None
        total = ENVELOPE_HEADER_LENGTH + body_length(buf, 0, max_body=self._max_body)
        if len(buf) < total:
            self._header = True
            return None
        raw = bytes(buf[:total])
        del buf[:total]
        self._header = False
        return raw


def split_raw(payload: bytes, *, max_body: int) -> list[bytes]:
    """Cut a self-contained v5 segment payload into whole envelopes (no partial tail allowed; each header's
    body length is validated)."""
    out: list[bytes] = []
    pos = 0
    size = len(payload)
    while pos < size:
        if size - pos < ENVELOPE_HEADER_LENGTH:
            raise ProtocolError("envelope header shorter than 9 bytes")
        end = pos + ENVELOPE_HEADER_LENGTH + body_length(payload, pos, max_body=max_body)
        if end > size:
            raise ProtocolError("self-contained segment ends inside an envelope")
        out.append(payload[pos:end])
        pos = end
    return out
