"""The one error type of the CQL codec.

Everything malformed, oversized, corrupt or out of order that reaches the codec raises a
:class:`ProtocolError` (or a subclass) and nothing else::

    ProtocolError                 malformed bytes, unknown opcode, truncated body, bad UTF-8
    ├── FrameTooLarge             a frame/envelope/segment over the configured limit
    ├── ChecksumMismatch          a v5 segment whose CRC24 (header) or CRC32 (payload) is wrong
    ├── CompressionError          an lz4 body/segment that does not decompress as declared
    └── UnexpectedMessage         a well-formed message the connection state does not allow

The asyncio pump closes the connection on any of them, after writing ``reply`` to the client
when the error carries one: a client request that arrived in a well-formed envelope but that
the guard refuses to read (unknown flags, a body Cassandra would read differently, a stream
it cannot track, a message the connection's phase does not allow) is answered with a CQL
``Protocol error`` on its own stream, as Cassandra would answer it. Messages never contain
credentials.
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatch",
    "CompressionError",
    "FrameTooLarge",
    "ProtocolError",
    "UnexpectedMessage",
]


class ProtocolError(Exception):
    """Input that the codec refuses; the connection cannot continue.

    ``reply`` (set by the connection when the offending request's envelope header was read) is
    an ERROR answering that request, framed for the client; ``stream`` and ``opcode`` name it.
    """

    reply: bytes | None = None
    stream: int | None = None
    opcode: int | None = None


class FrameTooLarge(ProtocolError):
    """A frame, envelope or segment larger than the configured or protocol limit."""


class ChecksumMismatch(ProtocolError):
    """A v5 segment header CRC24 or payload CRC32 that does not match its content."""


class CompressionError(ProtocolError):
    """A compressed body or segment that does not decompress to its declared length."""


class UnexpectedMessage(ProtocolError):
    """A message that is well formed but not allowed in the connection's current phase."""
