"""Message bodies: the fields a policy needs, decoded; everything else left in the raw bytes.

Requests (v4/v5 §4.1) and responses (§4.2) are frozen dataclasses. ``parse_request`` and
``parse_response`` take the *uncompressed* body and the protocol version. Request bodies may
start with a custom payload ([bytes map], flag 0x04); response bodies with a tracing id
([uuid], 0x02), warnings ([string list], 0x08) and a custom payload, in that order.

Credentials: :class:`AuthResponse` keeps only the SASL PLAIN *user*; the token itself is never
stored on a message (it stays in the event's raw bytes, which are excluded from ``repr``).
"""

from __future__ import annotations

from dataclasses import dataclass

from isthmus.cqlguard.protocol.constants import (
    ErrorCode,
    HeaderFlag,
    Opcode,
    PrepareFlag,
    QueryFlag,
    ResultKind,
)
from isthmus.cqlguard.protocol.errors import ProtocolError
from isthmus.cqlguard.protocol.wire import (
    Reader,
    write_int,
    write_short_bytes,
    write_string,
)

__all__ = [
    "AuthChallenge",
    "AuthResponse",
    "AuthSuccess",
    "Authenticate",
    "Batch",
    "BatchPrepared",
    "BatchQuery",
    "Error",
    "Event",
    "Execute",
    "Options",
    "Prepare",
    "PreparedResult",
    "Query",
    "Ready",
    "Register",
    "RequestMessage",
    "ResponseMessage",
    "Result",
    "RowsResult",
    "SchemaChangeResult",
    "SetKeyspaceResult",
    "Startup",
    "Supported",
    "VoidResult",
    "encode_error_body",
    "parse_request",
    "parse_response",
    "sasl_plain_user",
]


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Startup:
    """§4.1.1. ``compression`` is the COMPRESSION option lower-cased (None when absent)."""

    options: tuple[tuple[str, str], ...]
    compression: str | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """§4.1.2. ``user`` is the SASL PLAIN authentication id, parsed exactly as Cassandra does."""

    user: str | None


@dataclass(frozen=True, slots=True)
class Options:
    """§4.1.3."""


@dataclass(frozen=True, slots=True)
class Query:
    """§4.1.4. ``keyspace`` is the v5 per-request keyspace (flag 0x80)."""

    query: str
    keyspace: str | None


@dataclass(frozen=True, slots=True)
class Prepare:
    """§4.1.5. ``keyspace`` is the v5 per-request keyspace (PREPARE flag 0x01)."""

    query: str
    keyspace: str | None


@dataclass(frozen=True, slots=True)
class Execute:
    """§4.1.6. ``result_metadata_id`` exists from v5 on."""

    prepared_id: bytes
    result_metadata_id: bytes | None


@dataclass(frozen=True, slots=True)
class BatchQuery:
    """A BATCH child of kind 0: a query string."""

    query: str


@dataclass(frozen=True, slots=True)
class BatchPrepared:
    """A BATCH child of kind 1: a prepared statement id."""

    prepared_id: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """§4.1.7. ``batch_type`` 0 logged, 1 unlogged, 2 counter."""

    batch_type: int
    statements: tuple[BatchQuery | BatchPrepared, ...]
    keyspace: str | None


@dataclass(frozen=True, slots=True)
class Register:
    """§4.1.8."""

    event_types: tuple[str, ...]


RequestMessage = Startup | AuthResponse | Options | Query | Prepare | Execute | Batch | Register


# -------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class Error:
    """§4.2.1; ``unprepared_id`` is set for code 0x2500."""

    code: int
    message: str
    unprepared_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    """§4.2.2."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    """§4.2.3."""

    authenticator: str


@dataclass(frozen=True, slots=True)
class Supported:
    """§4.2.4."""

    options: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class VoidResult:
    """§4.2.5.1."""


@dataclass(frozen=True, slots=True)
class RowsResult:
    """§4.2.5.2 (rows are passed through, never decoded)."""


@dataclass(frozen=True, slots=True)
class SetKeyspaceResult:
    """§4.2.5.3."""

    keyspace: str


@dataclass(frozen=True, slots=True)
class PreparedResult:
    """§4.2.5.4; ``result_metadata_id`` exists from v5 on."""

    prepared_id: bytes
    result_metadata_id: bytes | None


@dataclass(frozen=True, slots=True)
class SchemaChangeResult:
    """§4.2.5.5."""

    change_type: str
    target: str
    keyspace: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Result:
    """A RESULT of a kind this codec does not know (future protocol extensions)."""

    kind: int


@dataclass(frozen=True, slots=True)
class Event:
    """§4.2.6 (only the event type is decoded)."""

    event_type: str


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """§4.2.7 (the token is not kept)."""


@dataclass(frozen=True, slots=True)
class AuthSuccess:
    """§4.2.8 (the token is not kept)."""


ResponseMessage = (
    Error
    | Ready
    | Authenticate
    | Supported
    | VoidResult
    | RowsResult
    | SetKeyspaceResult
    | PreparedResult
    | SchemaChangeResult
    | Result
    | Event
    | AuthChallenge
    | AuthSuccess
)


# ---------------------------------------------------------------------------- parsing


def sasl_plain_user(token: bytes | None) -> str | None:
    """The authentication id of a SASL PLAIN token ``authzid NUL authcid NUL passwd``.

    Mirrors Cassandra 5.0's ``PasswordAuthenticator.PlainTextSaslAuthenticator.decodeCredentials``:
    scanning from the end, the password follows the last NUL and the user sits between the two
    last NULs; a third NUL, an empty user or an empty password make Cassandra refuse the token.
    Returns None whenever Cassandra would refuse it.
    """
    if token is None or token.count(b"\x00") != 2:
        return None
    _authzid, user, password = token.split(b"\x00")
    if not user or not password:
        return None
    try:
        return user.decode("utf-8")
    except UnicodeDecodeError:
        return None


#: Every QueryOptions flag Cassandra 5.0 knows (``cql3/QueryOptions.java``, ``Codec.Flag``: bit n
#: is the n-th enum constant, VALUES .. NOW_IN_SECONDS). Any other bit is refused.
_KNOWN_QUERY_FLAGS = int(
    QueryFlag.VALUES
    | QueryFlag.SKIP_METADATA
    | QueryFlag.PAGE_SIZE
    | QueryFlag.PAGING_STATE
    | QueryFlag.SERIAL_CONSISTENCY
    | QueryFlag.DEFAULT_TIMESTAMP
    | QueryFlag.NAMES_FOR_VALUES
    | QueryFlag.KEYSPACE
    | QueryFlag.NOW_IN_SECONDS
)
#: Request header flags a client may set (v4 §2.2, v5 §2.4.1.2); WARNING is the server's, and
#: USE_BETA is refused during the handshake already.
_REQUEST_HEADER_FLAGS = int(HeaderFlag.COMPRESSION | HeaderFlag.TRACING | HeaderFlag.CUSTOM_PAYLOAD)
_LONG_MIN = -(1 << 63)


def _query_options(reader: Reader, version: int) -> str | None:
    """Read ``<query_parameters>`` exactly as Cassandra 5.0's ``QueryOptions.Codec.decode`` does and
    return the per-request keyspace (or None).

    The same decoder serves QUERY, EXECUTE and BATCH (``QueryMessage``, ``ExecuteMessage`` and
    ``BatchMessage`` all call ``QueryOptions.codec.decode``), so BATCH options carry values, a
    page size and a paging state exactly where a QUERY's would, and the KEYSPACE flag (0x80) is
    honoured on *every* protocol version: Cassandra reads the flags as an [int] from v5 on and
    as a [byte] before, then tests ``Flag.KEYSPACE`` without looking at the version. Reading it
    only on v5 (as the spec's text suggests) let a v4 request name a keyspace the guard never
    saw (issue 16, class 2).
    """
    reader.short()  # consistency (CBUtil.readConsistencyLevel: an unsigned short)
    raw = reader.uint32() if version >= 5 else reader.byte()
    if raw & ~_KNOWN_QUERY_FLAGS:
        raise ProtocolError(f"unknown query flags {raw & ~_KNOWN_QUERY_FLAGS:#x}")
    flags = QueryFlag(raw)
    if QueryFlag.VALUES in flags:
        # CBUtil.readValueList / readNameAndValueList: [short] n, then n ([string] name?) [value]
        named = QueryFlag.NAMES_FOR_VALUES in flags
        for _ in range(reader.short()):
            if named:
                reader.string()
            reader.value()
    if QueryFlag.PAGE_SIZE in flags:
        reader.int32()
    if QueryFlag.PAGING_STATE in flags:
        reader.nullable_bytes()  # CBUtil.readValueNoCopy: [int] n, negative is null
    if QueryFlag.SERIAL_CONSISTENCY in flags:
        reader.short()
    if QueryFlag.DEFAULT_TIMESTAMP in flags and reader.int64() == _LONG_MIN:
        raise ProtocolError("Out of bound timestamp")  # as QueryOptions.Codec refuses it
    keyspace = reader.string() if QueryFlag.KEYSPACE in flags else None
    if QueryFlag.NOW_IN_SECONDS in flags:
        reader.int32()
    return keyspace


def _startup(reader: Reader) -> Startup:
    options = reader.string_map()
    keys = [k for k in options if k.upper() == "COMPRESSION"]
    if len(keys) > 1:
        raise ProtocolError("STARTUP carries the COMPRESSION option more than once")
    compression = options[keys[0]].lower() if keys else None
    return Startup(options=tuple(options.items()), compression=compression)


def _batch(reader: Reader, version: int) -> Batch:
    """``BatchMessage.Codec.decode``: type, children (query or id, then their values), then the
    whole QueryOptions (see :func:`_query_options`)."""
    batch_type = reader.byte()
    if batch_type not in (0, 1, 2):
        raise ProtocolError(f"BATCH of unknown type {batch_type}")
    statements: list[BatchQuery | BatchPrepared] = []
    for _ in range(reader.short()):
        kind = reader.byte()
        if kind == 0:
            statements.append(BatchQuery(reader.long_string()))
        elif kind == 1:
            statements.append(BatchPrepared(reader.short_bytes()))
        else:
            raise ProtocolError(f"BATCH child of unknown kind {kind}")
        for _ in range(reader.short()):
            reader.value()
    keyspace = _query_options(reader, version)
    return Batch(batch_type=batch_type, statements=tuple(statements), keyspace=keyspace)


def _prepare(reader: Reader, version: int) -> Prepare:
    """``PrepareMessage.Codec.decode``: the query, then (v5 only) [int] flags, 0x01 = keyspace."""
    query = reader.long_string()
    keyspace = None
    if version >= 5:
        flags = reader.uint32()
        if flags & ~int(PrepareFlag.KEYSPACE):
            raise ProtocolError(f"unknown PREPARE flags {flags & ~int(PrepareFlag.KEYSPACE):#x}")
        if flags & PrepareFlag.KEYSPACE:
            keyspace = reader.string()
    return Prepare(query=query, keyspace=keyspace)


def parse_request(opcode: int, flags: HeaderFlag, body: bytes, version: int) -> RequestMessage:
    """Decode a request body; raises :class:`ProtocolError` for anything malformed.

    Fails closed where Cassandra would read more than the guard does: unknown header or
    option flags and bytes left over after the message are refused, never skipped.
    """
    if int(flags) & ~_REQUEST_HEADER_FLAGS:  # (ints: ``~`` of an IntFlag drops unknown bits)
        raise ProtocolError(f"request header flags {int(flags) & ~_REQUEST_HEADER_FLAGS:#x} are not a client's")
    reader = Reader(body)
    if HeaderFlag.CUSTOM_PAYLOAD in flags:
        reader.skip_bytes_map()
    message: RequestMessage
    match opcode:
        case Opcode.STARTUP:
            message = _startup(reader)
        case Opcode.AUTH_RESPONSE:
            message = AuthResponse(user=sasl_plain_user(reader.nullable_bytes()))
        case Opcode.OPTIONS:
            message = Options()
        case Opcode.QUERY:
            query = reader.long_string()
            message = Query(query=query, keyspace=_query_options(reader, version))
        case Opcode.PREPARE:
            message = _prepare(reader, version)
        case Opcode.EXECUTE:
            prepared_id = reader.short_bytes()
            metadata_id = reader.short_bytes() if version >= 5 else None
            # The options' keyspace does not change what a prepared statement names (Cassandra
            # bound its tables when it prepared it), but they are read, so bad flags are refused.
            _query_options(reader, version)
            message = Execute(prepared_id=prepared_id, result_metadata_id=metadata_id)
        case Opcode.BATCH:
            message = _batch(reader, version)
        case Opcode.REGISTER:
            message = Register(event_types=reader.string_list())
        case _:
            raise ProtocolError(f"opcode {opcode:#04x} is not a request")
    if reader.remaining:
        raise ProtocolError(f"{reader.remaining} bytes after the {Opcode(opcode).name} message")
    return message


def _result(reader: Reader, version: int) -> ResponseMessage:
    kind = reader.int32()
    match kind:
        case ResultKind.VOID:
            return VoidResult()
        case ResultKind.ROWS:
            return RowsResult()
        case ResultKind.SET_KEYSPACE:
            return SetKeyspaceResult(keyspace=reader.string())
        case ResultKind.PREPARED:
            prepared_id = reader.short_bytes()
            metadata_id = reader.short_bytes() if version >= 5 else None
            return PreparedResult(prepared_id=prepared_id, result_metadata_id=metadata_id)
        case ResultKind.SCHEMA_CHANGE:
            change_type, target, keyspace = reader.string(), reader.string(), reader.string()
            name = reader.string() if target != "KEYSPACE" else None
            return SchemaChangeResult(change_type=change_type, target=target, keyspace=keyspace, name=name)
    return Result(kind=kind)


def parse_response(opcode: int, flags: HeaderFlag, body: bytes, version: int) -> ResponseMessage:
    """Decode a response body; raises :class:`ProtocolError` for anything malformed."""
    reader = Reader(body)
    if HeaderFlag.TRACING in flags:
        reader.uuid()
    if HeaderFlag.WARNING in flags:
        reader.string_list()
    if HeaderFlag.CUSTOM_PAYLOAD in flags:
        reader.skip_bytes_map()
    match opcode:
        case Opcode.ERROR:
            code, message = reader.int32(), reader.string()
            unprepared = reader.short_bytes() if code == ErrorCode.UNPREPARED else None
            return Error(code=code, message=message, unprepared_id=unprepared)
        case Opcode.READY:
            return Ready()
        case Opcode.AUTHENTICATE:
            return Authenticate(authenticator=reader.string())
        case Opcode.SUPPORTED:
            return Supported(options=tuple(reader.string_multimap().items()))
        case Opcode.RESULT:
            return _result(reader, version)
        case Opcode.EVENT:
            return Event(event_type=reader.string())
        case Opcode.AUTH_CHALLENGE:
            reader.nullable_bytes()
            return AuthChallenge()
        case Opcode.AUTH_SUCCESS:
            reader.nullable_bytes()
            return AuthSuccess()
    raise ProtocolError(f"opcode {opcode:#04x} is not a response")


def encode_error_body(code: int, message: str, *, unprepared_id: bytes | None = None) -> bytes:
    """An ERROR body: [int] code, [string] message (+ [short bytes] id for Unprepared)."""
    body = write_int(code) + write_string(message)
    if code == ErrorCode.UNPREPARED:
        body += write_short_bytes(unprepared_id or b"")
    return body
