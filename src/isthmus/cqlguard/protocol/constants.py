"""Numbers from the native protocol specs (``doc/native_protocol_v4.spec``, ``_v5.spec``).

Each constant names the spec section it comes from, so a reviewer can check it in one place.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "DEFAULT_MAX_FRAME_BODY",
    "ENVELOPE_HEADER_LENGTH",
    "MAX_SEGMENT_PAYLOAD",
    "REQUEST_OPCODES",
    "RESPONSE_BIT",
    "RESPONSE_OPCODES",
    "SUPPORTED_VERSIONS",
    "BatchFlag",
    "ErrorCode",
    "HeaderFlag",
    "Opcode",
    "PrepareFlag",
    "QueryFlag",
    "ResultKind",
]

#: v4 §2 / v5 §2.4: version(1) flags(1) stream(2) opcode(1) length(4).
ENVELOPE_HEADER_LENGTH = 9
#: v4 §2.1: the most significant bit of the version byte marks a response.
RESPONSE_BIT = 0x80
#: v4 §2.5: "currently a frame is limited to 256MB in length" (Cassandra's default cap).
DEFAULT_MAX_FRAME_BODY = 256 * 1024 * 1024
#: v5 §2.1: the payload length is a 17-bit field, so at most 2**17 - 1 bytes.
MAX_SEGMENT_PAYLOAD = (1 << 17) - 1
#: Protocol versions whose bodies this codec parses; anything else is refused in the handshake.
SUPPORTED_VERSIONS = frozenset({4, 5})


class Opcode(IntEnum):
    """v4 §2.4 / v5 §2.4.1.4."""

    ERROR = 0x00
    STARTUP = 0x01
    READY = 0x02
    AUTHENTICATE = 0x03
    OPTIONS = 0x05
    SUPPORTED = 0x06
    QUERY = 0x07
    RESULT = 0x08
    PREPARE = 0x09
    EXECUTE = 0x0A
    REGISTER = 0x0B
    EVENT = 0x0C
    BATCH = 0x0D
    AUTH_CHALLENGE = 0x0E
    AUTH_RESPONSE = 0x0F
    AUTH_SUCCESS = 0x10


REQUEST_OPCODES = frozenset(
    {
        Opcode.STARTUP,
        Opcode.AUTH_RESPONSE,
        Opcode.OPTIONS,
        Opcode.QUERY,
        Opcode.PREPARE,
        Opcode.EXECUTE,
        Opcode.REGISTER,
        Opcode.BATCH,
    }
)
RESPONSE_OPCODES = frozenset(set(Opcode) - REQUEST_OPCODES)


class HeaderFlag(IntFlag):
    """v4 §2.2 / v5 §2.4.1.2 (in v5 envelopes COMPRESSION is deprecated and ignored)."""

    NONE = 0x00
    COMPRESSION = 0x01
    TRACING = 0x02
    CUSTOM_PAYLOAD = 0x04
    WARNING = 0x08
    USE_BETA = 0x10


class QueryFlag(IntFlag):
    """v4 §4.1.4 (a [byte]) / v5 §4.1.4 (an [int])."""

    VALUES = 0x0001
    SKIP_METADATA = 0x0002
    PAGE_SIZE = 0x0004
    PAGING_STATE = 0x0008
    SERIAL_CONSISTENCY = 0x0010
    DEFAULT_TIMESTAMP = 0x0020
    NAMES_FOR_VALUES = 0x0040
    KEYSPACE = 0x0080  # v5 only
    NOW_IN_SECONDS = 0x0100  # v5 only


class BatchFlag(IntFlag):
    """v4 §4.1.7 / v5 §4.1.7 (same masks as QUERY; the four low bits must be zero)."""

    SERIAL_CONSISTENCY = 0x0010
    DEFAULT_TIMESTAMP = 0x0020
    NAMES_FOR_VALUES = 0x0040
    KEYSPACE = 0x0080  # v5 only
    NOW_IN_SECONDS = 0x0100  # v5 only


class PrepareFlag(IntFlag):
    """v5 §4.1.5."""

    KEYSPACE = 0x01


class ResultKind(IntEnum):
    """v4 §4.2.5."""

    VOID = 0x0001
    ROWS = 0x0002
    SET_KEYSPACE = 0x0003
    PREPARED = 0x0004
    SCHEMA_CHANGE = 0x0005


class ErrorCode(IntEnum):
    """v4 §9 / v5 §8 (the codes this package produces or inspects)."""

    SERVER_ERROR = 0x0000
    PROTOCOL_ERROR = 0x000A
    AUTHENTICATION_ERROR = 0x0100
    SYNTAX_ERROR = 0x2000
    UNAUTHORIZED = 0x2100
    INVALID = 0x2200
    CONFIG_ERROR = 0x2300
    ALREADY_EXISTS = 0x2400
    UNPREPARED = 0x2500
