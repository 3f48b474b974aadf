"""Cutting the server's byte stream at envelope boundaries without decoding or re-encoding it.

Once a connection is established, the proxy never changes a response: it needs only to know
where each envelope starts (to see which stream it answers) and to forward whole envelopes,
so that its own replies (Unauthorized, Unprepared) never land inside one. A
:class:`ServerRelay` does exactly that and hands back the bytes as they arrived:

* v4 frames: the 9-byte headers are read in place; complete frames are forwarded as one slice.
* v5 segments: the segment header is read (its CRC24 and the payload CRC32 are *not* checked:
  the bytes are forwarded unchanged and the client verifies them), an lz4 payload is
  decompressed only to find the envelopes in it, and a segment is forwarded unchanged.
  The segments of an envelope too large for one are held until its last one has arrived,
  then forwarded together.

Each :meth:`ServerRelay.feed` returns ``(wire, envelopes)``: the bytes to forward now and the
location ``(container, start, end)`` of every envelope completed, in order, for the caller to
peek at (``container[start:start + 9]`` is its header).
"""

from __future__ import annotations

from isthmus.cqlguard.protocol.compression import decompress_block
from isthmus.cqlguard.protocol.constants import ENVELOPE_HEADER_LENGTH, MAX_SEGMENT_PAYLOAD
from isthmus.cqlguard.protocol.errors import ProtocolError
from isthmus.cqlguard.protocol.frames import body_length

__all__ = ["EnvelopeAt", "ServerRelay"]

#: Where one complete envelope is: ``container[start:end]``.
EnvelopeAt = tuple[bytes, int, int]

_MASK17 = 0x1FFFF
_CRC24_LEN = 3
_CRC32_LEN = 4


class ServerRelay:
    """One direction's pass-through framer (see the module docstring)."""

    __slots__ = ("_buf", "_compressed", "_head", "_max_body", "_partial", "_partial_total", "_scanned", "_segments")

    def __init__(self, *, segments: bool, compressed: bool, max_body: int, initial: bytes = b"") -> None:
        self._segments = segments
        self._compressed = compressed
        self._head = 5 if compressed else 3
        self._max_body = max_body
        self._buf = bytearray(initial)
        #: v5: bytes at the front of ``_buf`` already read as segments of the open envelope.
        self._scanned = 0
        self._partial = bytearray()
        self._partial_total = -1

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> tuple[bytes, list[EnvelopeAt]]:
        if data:
            self._buf += data
        if self._segments:
            return self._feed_segments()
        return self._feed_frames()

    def _feed_frames(self) -> tuple[bytes, list[EnvelopeAt]]:
        buf = self._buf
        size = len(buf)
        pos = 0
        ends: list[tuple[int, int]] = []
        while size - pos >= ENVELOPE_HEADER_LENGTH:
            end = pos + ENVELOPE_HEADER_LENGTH + body_length(buf, pos, max_body=self._max_body)
            if end > size:
                break
            ends.append((pos, end))
            pos = end
        if not pos:
            return b"", []
        wire = bytes(buf[:pos]) if pos < size else bytes(buf)
        del buf[:pos]
        return wire, [(wire, start, end) for start, end in ends]

    def _feed_segments(self) -> tuple[bytes, list[EnvelopeAt]]:
        buf = self._buf
        size = len(buf)
        head = self._head
        pos = self._scanned
        emit = 0  # forward up to here: the end of the last segment that leaves no envelope open
        found: list[EnvelopeAt] = []
        while size - pos >= head + _CRC24_LEN:
            header = int.from_bytes(buf[pos : pos + head], "little")
            length = header & _MASK17
            if self._compressed:
                uncompressed = (header >> 17) & _MASK17
                self_contained = bool(header >> 34 & 1)
            else:
                uncompressed = 0
                self_contained = bool(header >> 17 & 1)
            start = pos + head + _CRC24_LEN
            end = start + length + _CRC32_LEN
            if end > size:
                break
            payload = bytes(buf[start : start + length])
            if uncompressed:
                payload = decompress_block(payload, uncompressed, limit=MAX_SEGMENT_PAYLOAD)
            if self_contained:
                if self._partial_total >= 0 or self._partial:
                    raise ProtocolError("self-contained segment inside a multi-segment envelope")
                self._split(payload, found)
                emit = end
            elif self._accumulate(payload, found):
                emit = end
            pos = end
        if not emit:
            self._scanned = pos
            return b"", found
        wire = bytes(buf[:emit]) if emit < size else bytes(buf)
        del buf[:emit]
        self._scanned = pos - emit
        return wire, found

    def _split(self, payload: bytes, found: list[EnvelopeAt]) -> None:
        pos = 0
        size = len(payload)
        while pos < size:
            if size - pos < ENVELOPE_HEADER_LENGTH:
                raise ProtocolError("self-contained segment ends inside an envelope header")
            end = pos + ENVELOPE_HEADER_LENGTH + body_length(payload, pos, max_body=self._max_body)
            if end > size:
                raise ProtocolError("self-contained segment ends inside an envelope")
            found.append((payload, pos, end))
            pos = end

    def _accumulate(self, payload: bytes, found: list[EnvelopeAt]) -> bool:
        """Add one non-self-contained segment; True once it completed its envelope."""
        partial = self._partial
        partial += payload
        if self._partial_total < 0 and len(partial) >= ENVELOPE_HEADER_LENGTH:
            self._partial_total = ENVELOPE_HEADER_LENGTH + body_length(partial, 0, max_body=self._max_body)
        if self._partial_total < 0 or len(partial) < self._partial_total:
            return False
        if len(partial) > self._partial_total:
            raise ProtocolError("multi-segment envelope followed by extra bytes in its last segment")
        envelope = bytes(partial)
        partial.clear()
        self._partial_total = -1
        found.append((envelope, 0, len(envelope)))
        return True
