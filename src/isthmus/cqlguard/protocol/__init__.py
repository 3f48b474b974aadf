"""Sans-IO codec and connection state machine for the Cassandra native protocol (v4, v5).

Owns: v4 frames (with lz4 body compression), v5 segments (CRC24/CRC32, lz4, multi-segment
envelopes), the message fields a policy needs, and :class:`CQLConnection`, which turns bytes
into immutable events and events back into correctly framed bytes.

Must not: open sockets, import asyncio, log, or keep credentials (an import-linter contract
forbids I/O modules here). Every malformed input raises :class:`ProtocolError`.
"""

from isthmus.cqlguard.protocol.connection import (
    Chunk,
    ConnectionConfig,
    ConnectionPhase,
    CQLConnection,
    FastRequest,
    Framing,
    PreparedStatement,
)
from isthmus.cqlguard.protocol.constants import ErrorCode, HeaderFlag, Opcode
from isthmus.cqlguard.protocol.errors import (
    ChecksumMismatch,
    CompressionError,
    FrameTooLarge,
    ProtocolError,
    UnexpectedMessage,
)
from isthmus.cqlguard.protocol.events import Event, ProxyReply, Request, Response
from isthmus.cqlguard.protocol.messages import (
    AuthChallenge,
    Authenticate,
    AuthResponse,
    AuthSuccess,
    Batch,
    BatchPrepared,
    BatchQuery,
    Error,
    Execute,
    Options,
    Prepare,
    PreparedResult,
    Query,
    Ready,
    Register,
    RequestMessage,
    ResponseMessage,
    Result,
    RowsResult,
    SchemaChangeResult,
    SetKeyspaceResult,
    Startup,
    Supported,
    VoidResult,
)

__all__ = [
    "AuthChallenge",
    "AuthResponse",
    "AuthSuccess",
    "Authenticate",
    "Batch",
    "BatchPrepared",
    "BatchQuery",
    "CQLConnection",
    "ChecksumMismatch",
    "Chunk",
    "CompressionError",
    "ConnectionConfig",
    "ConnectionPhase",
    "Error",
    "ErrorCode",
    "Event",
    "Execute",
    "FastRequest",
    "FrameTooLarge",
    "Framing",
    "HeaderFlag",
    "Opcode",
    "Options",
    "Prepare",
    "PreparedResult",
    "PreparedStatement",
    "ProtocolError",
    "ProxyReply",
    "Query",
    "Ready",
    "Register",
    "Request",
    "RequestMessage",
    "Response",
    "ResponseMessage",
    "Result",
    "RowsResult",
    "SchemaChangeResult",
    "SetKeyspaceResult",
    "Startup",
    "Supported",
    "UnexpectedMessage",
    "VoidResult",
]
