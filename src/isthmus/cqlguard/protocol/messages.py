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
    BatchFlag,
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

    Mirrors Cassandra's ``PlainTextSaslAuthenticator.decodeCredentials``: scanning from the end,
    the password follows the last NUL and the user sits between the two last NULs; anything
    before is ignored. Returns None when Cassandra would reject the token.
    """
    if token is None:
        return None
    last = token.rfind(b"\x00")
    if last < 0:
        return None
    prev = token.rfind(b"\x00", 0, last)
    if prev < 0:
        return None
    try:
        return token[prev + 1 : last].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _flags(reader: Reader, version: int) -> int:
    """QUERY/EXECUTE/BATCH flags: a [byte] before v5, an [int] from v5 on."""
    return reader.uint32() if version >= 5 else reader.byte()


def _query_keyspace(reader: Reader, version: int) -> str | None:
    """Walk <query_parameters> (§4.1.4) up to the v5 keyspace, if any."""
    reader.short()  # consistency
    flags = QueryFlag(_flags(reader, version))
    if QueryFlag.VALUES in flags:
        for _ in range(reader.short()):
            if QueryFlag.NAMES_FOR_VALUES in flags:
                reader.string()
            reader.value()
    if QueryFlag.PAGE_SIZE in flags:
        reader.int32()
    if QueryFlag.PAGING_STATE in flags:
        reader.nullable_bytes()
    if QueryFlag.SERIAL_CONSISTENCY in flags:
        reader.short()
    if QueryFlag.DEFAULT_TIMESTAMP in flags:
        reader.int64()
    if version >= 5 and QueryFlag.KEYSPACE in flags:
        return reader.string()
    return None


def _startup(reader: Reader) -> Startup:
    options = reader.string_map()
    keys = [k for k in options if k.upper() == "COMPRESSION"]
    if len(keys) > 1:
        raise ProtocolError("STARTUP carries the COMPRESSION option more than once")
    compression = options[keys[0]].lower() if keys else None
    return Startup(options=tuple(options.items()), compression=compression)


def _batch(reader: Reader, version: int) -> Batch:
    batch_type = reader.byte()
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
    reader.short()  # consistency
    flags = BatchFlag(_flags(reader, version))
    if BatchFlag.NAMES_FOR_VALUES in flags:
        raise ProtocolError("named values in BATCH are not supported (CASSANDRA-10246)")
    if BatchFlag.SERIAL_CONSISTENCY in flags:
        reader.short()
    if BatchFlag.DEFAULT_TIMESTAMP in flags:
        reader.int64()
    keyspace = reader.string() if version >= 5 and BatchFlag.KEYSPACE in flags else None
    return Batch(batch_type=batch_type, statements=tuple(statements), keyspace=keyspace)


def parse_request(opcode: int, flags: HeaderFlag, body: bytes, version: int) -> RequestMessage:
    """Decode a request body; raises :class:`ProtocolError` for anything malformed."""
    reader = Reader(body)
    if HeaderFlag.CUSTOM_PAYLOAD in flags:
        reader.skip_bytes_map()
    match opcode:
        case Opcode.STARTUP:
            return _startup(reader)
        case Opcode.AUTH_RESPONSE:
            return AuthResponse(user=sasl_plain_user(reader.nullable_bytes()))
        case Opcode.OPTIONS:
            return Options()
        case Opcode.QUERY:
            query = reader.long_string()
            return Query(query=query, keyspace=_query_keyspace(reader, version))
        case Opcode.PREPARE:
            query = reader.long_string()
            keyspace = None
            if version >= 5:
                prepare_flags = PrepareFlag(reader.uint32())
                if PrepareFlag.KEYSPACE in prepare_flags:
                    keyspace = reader.string()
            return Prepare(query=query, keyspace=keyspace)
        case Opcode.EXECUTE:
            prepared_id = reader.short_bytes()
            metadata_id = reader.short_bytes() if version >= 5 else None
            return Execute(prepared_id=prepared_id, result_metadata_id=metadata_id)
        case Opcode.BATCH:
            return _batch(reader, version)
        case Opcode.REGISTER:
            return Register(event_types=reader.string_list())
    raise ProtocolError(f"opcode {opcode:#04x} is not a request")


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
