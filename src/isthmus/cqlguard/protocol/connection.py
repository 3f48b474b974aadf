"""One client connection through the proxy, as a sans-IO state machine (h11's ``Connection``).

Bytes in, events out::

    conn = CQLConnection()
    for event in conn.receive_client_data(data):      # -> Request | ProxyReply
        ...  conn.forward_to_server(event) / conn.deny(event, why) / event.data
    for event in conn.receive_server_data(data):      # -> Response
        ...  conn.forward_to_client(event)

The guard's :class:`~isthmus.cqlguard.session.GuardSession` drives the chunk-level form of the
same API (:meth:`CQLConnection.receive_client_chunks`, :meth:`~CQLConnection.fast_request` or
:meth:`~CQLConnection.decode_client`, :meth:`~CQLConnection.chunk_for_server`,
:meth:`~CQLConnection.relay_server_data`), which forwards bytes as they came instead of
re-framing them; ``receive_client_data`` is that path without the fast path.

The connection knows the negotiated version and compression, when each direction switches to
v5 segment framing, the current keyspace (from the *server's* RESULT Set_keyspace only), the
authenticated user, and which forwarded request each response answers. It never reads a
socket; back-pressure and timeouts belong to the pump.

Phases (the only transitions, all listed in ``_CLIENT_OPCODES`` and ``_SERVER_TRANSITIONS``)::

    HANDSHAKE --STARTUP--> STARTING --READY--------------> ESTABLISHED
        ^                     |  \\--AUTHENTICATE--> AUTHENTICATING --AUTH_SUCCESS--^
        \\------ERROR---------/     (protocol downgrade: the client may retry STARTUP)

Framing (v5 §2.3.1): for a v5 STARTUP answered by READY or AUTHENTICATE, server->proxy and
proxy->server switch to segments right after that response; client->proxy and proxy->client
switch once the pump forwards that response to the client (the client cannot frame before it
has seen it).

Decisions:

* Only protocol v4 and v5 are parsed. A handshake frame with another version (or the v5 beta
  flag, whose pre-4.0 framing differs) is answered by the proxy with a PROTOCOL_ERROR whose text
  drivers recognise ("Invalid or unsupported protocol version"), so they downgrade.
* STARTUP with COMPRESSION other than lz4 (snappy, ...) is refused by the proxy with a
  PROTOCOL_ERROR: the proxy cannot read snappy, and stripping the option would desynchronise
  the client, which compresses as soon as it has sent STARTUP.
* The compression flag on a v5 envelope is refused (deprecated in v5; drivers never set it).

Failing closed (issue 16): every refusal below raises :class:`ProtocolError` carrying a CQL
``Protocol error`` ``reply`` for the offending stream; the pump sends it, records the flow and
closes the connection.

* A request on a negative stream id is refused: the guard could not match its answer, and a
  ``USE`` there would change Cassandra's keyspace behind the guard's back.
* A request on a stream already in flight is refused (no reply: that stream's answer is the
  first request's), and an answer from the server on a stream the guard forwarded nothing on
  (other than an EVENT) closes the connection: its keyspace and prepared ids can no longer be
  trusted.
* One AUTH_RESPONSE at a time. Cassandra's ``ServerConnection.validateNewMessage`` lets an
  AUTH_RESPONSE through in the AUTHENTICATING *and* READY stages, and
  ``transport/messages/AuthResponse.execute`` logs in whoever it names; so a second one in flight,
  or one once established, is refused, and :attr:`CQLConnection.user` is the user of the very
  AUTH_RESPONSE that Cassandra answered with AUTH_SUCCESS.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum

from isthmus.cqlguard.protocol.compression import compress_body, decompress_body
from isthmus.cqlguard.protocol.constants import (
    DEFAULT_MAX_FRAME_BODY,
    ENVELOPE_HEADER_LENGTH,
    REQUEST_OPCODES,
    RESPONSE_BIT,
    RESPONSE_OPCODES,
    SUPPORTED_VERSIONS,
    ErrorCode,
    HeaderFlag,
    Opcode,
    QueryFlag,
    ResultKind,
)
from isthmus.cqlguard.protocol.errors import FrameTooLarge, ProtocolError, UnexpectedMessage
from isthmus.cqlguard.protocol.events import ProxyReply, Request, Response
from isthmus.cqlguard.protocol.frames import (
    EnvelopeBuffer,
    EnvelopeHeader,
    encode_envelope,
    split_raw,
)
from isthmus.cqlguard.protocol.messages import (
    AuthResponse,
    AuthSuccess,
    Prepare,
    PreparedResult,
    SetKeyspaceResult,
    Startup,
    encode_error_body,
    parse_request,
    parse_response,
)
from isthmus.cqlguard.protocol.relay import ServerRelay
from isthmus.cqlguard.protocol.segments import SegmentBuffer, frame_envelopes
from isthmus.cqlguard.protocol.wire import Reader

__all__ = [
    "CQLConnection", "Chunk", "ConnectionConfig", "ConnectionPhase", "FastRequest", "Framing", "PreparedStatement",
]

#: The one compression the proxy can read (see the module docstring about snappy).
SUPPORTED_COMPRESSION = frozenset({"lz4"})
_MAX_ERROR_MESSAGE = 4096

#: ``(wire, envelopes)``: bytes exactly as the client sent them (one v4 frame, one v5 segment, or
#: the segments of one large envelope) and the whole envelopes they carry, in order.
Chunk = tuple[bytes, list[bytes]]
#: ``(stream, opcode, key)`` of a request the caller may decide without decoding it: the
#: prepared id of an EXECUTE, the query text (UTF-8 bytes) of a QUERY.
FastRequest = tuple[int, int, bytes]

_HEADER = struct.Struct(">BBhBi")
_SHORT = struct.Struct(">H")
_INT = struct.Struct(">i")
_UINT = struct.Struct(">I")
_EXECUTE = int(Opcode.EXECUTE)
_QUERY = int(Opcode.QUERY)
_RESULT = int(Opcode.RESULT)
_EVENT = int(Opcode.EVENT)
_REQUEST_CODES = frozenset(int(o) for o in REQUEST_OPCODES)
_RESPONSE_CODES = frozenset(int(o) for o in RESPONSE_OPCODES)
_SET_KEYSPACE = int(ResultKind.SET_KEYSPACE)
_COMPRESSION = int(HeaderFlag.COMPRESSION)
_BODY_PREFIX_FLAGS = int(HeaderFlag.TRACING | HeaderFlag.WARNING | HeaderFlag.CUSTOM_PAYLOAD)
_LONG_PREFIX_FLAGS = int(HeaderFlag.WARNING | HeaderFlag.CUSTOM_PAYLOAD)
_RESULT_KIND_END = ENVELOPE_HEADER_LENGTH + 4
#: Request header flags the fast path reads past (any other flag: decode the request).
_FAST_FLAGS = int(HeaderFlag.COMPRESSION | HeaderFlag.TRACING)
#: QueryOptions flags the fast path reads past: all that Cassandra knows (QueryOptions.Codec.Flag)
#: but KEYSPACE for a QUERY (it changes what the text names, so the full decode must see it).
_FAST_EXECUTE_OK = int(
    QueryFlag.VALUES | QueryFlag.SKIP_METADATA | QueryFlag.PAGE_SIZE | QueryFlag.PAGING_STATE
    | QueryFlag.SERIAL_CONSISTENCY | QueryFlag.DEFAULT_TIMESTAMP | QueryFlag.NAMES_FOR_VALUES
    | QueryFlag.KEYSPACE | QueryFlag.NOW_IN_SECONDS
)
_FAST_QUERY_OK = _FAST_EXECUTE_OK & ~int(QueryFlag.KEYSPACE)
#: A Set_keyspace body is at most 16 (tracing id) + 4 + 2 + 48 (keyspace name) bytes; a v4 lz4
#: RESULT declaring more (and carrying no warnings or custom payload) cannot be one.
_SMALL_RESULT = 1024


class ConnectionPhase(Enum):
    HANDSHAKE = "handshake"
    STARTING = "starting"
    AUTHENTICATING = "authenticating"
    ESTABLISHED = "established"


class Framing(Enum):
    ENVELOPES = "envelopes"  # v4 frames, and v5 before the handshake completes
    SEGMENTS = "segments"  # v5 after READY/AUTHENTICATE


#: Requests a client may send in each phase.
_CLIENT_OPCODES: dict[ConnectionPhase, frozenset[Opcode]] = {
    ConnectionPhase.HANDSHAKE: frozenset({Opcode.OPTIONS, Opcode.STARTUP}),
    ConnectionPhase.STARTING: frozenset({Opcode.OPTIONS}),
    ConnectionPhase.AUTHENTICATING: frozenset({Opcode.OPTIONS, Opcode.AUTH_RESPONSE}),
    ConnectionPhase.ESTABLISHED: frozenset(
        {Opcode.OPTIONS, Opcode.QUERY, Opcode.PREPARE, Opcode.EXECUTE, Opcode.BATCH, Opcode.REGISTER}
    ),
}

#: (phase, opcode of the request answered, response opcode) -> next phase.
_SERVER_TRANSITIONS: dict[tuple[ConnectionPhase, Opcode, Opcode], ConnectionPhase] = {
    (ConnectionPhase.STARTING, Opcode.STARTUP, Opcode.READY): ConnectionPhase.ESTABLISHED,
    (ConnectionPhase.STARTING, Opcode.STARTUP, Opcode.AUTHENTICATE): ConnectionPhase.AUTHENTICATING,
    (ConnectionPhase.STARTING, Opcode.STARTUP, Opcode.ERROR): ConnectionPhase.HANDSHAKE,
    (ConnectionPhase.AUTHENTICATING, Opcode.AUTH_RESPONSE, Opcode.AUTH_SUCCESS): ConnectionPhase.ESTABLISHED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    """Limits. ``max_frame_body`` caps a v4 frame body / v5 envelope body (Cassandra: 256 MiB)."""

    max_frame_body: int = DEFAULT_MAX_FRAME_BODY

    def __post_init__(self) -> None:
        if self.max_frame_body < 0:
            raise ValueError("max_frame_body must not be negative")


@dataclass(frozen=True, slots=True)
class PreparedStatement:
    """What the server confirmed preparing: the query and the keyspace it was prepared in."""

    query: str
    keyspace: str | None


class _Inbound:
    """One direction's decoder: envelopes first, then (v5) segments with reassembly."""

    def __init__(self, *, max_body: int) -> None:
        self._max_body = max_body
        self._envelopes: EnvelopeBuffer | None = EnvelopeBuffer(max_body=max_body)
        self._segments: SegmentBuffer | None = None
        self._ready: deque[bytes] = deque()
        self._partial = bytearray()
        self._partial_total = -1
        self._partial_wire: list[bytes] = []

    @property
    def framing(self) -> Framing:
        return Framing.ENVELOPES if self._segments is None else Framing.SEGMENTS

    @property
    def compressed(self) -> bool:
        return self._segments is not None and self._segments.compressed

    def feed(self, data: bytes) -> None:
        if self._envelopes is not None:
            self._envelopes.feed(data)
        else:
            assert self._segments is not None
            self._segments.feed(data)

    def switch_to_segments(self, *, compressed: bool) -> None:
        if self._envelopes is None:
            return
        rest = self._envelopes.take_rest()
        self._envelopes = None
        self._segments = SegmentBuffer(compressed=compressed, initial=rest)

    def hand_over(self) -> bytes | None:
        """All unread bytes, for a :class:`ServerRelay` to go on with; None while an envelope is
        half reassembled (its first segments are consumed)."""
        if self._ready or self._partial or self._partial_wire:
            return None
        if self._envelopes is not None:
            return self._envelopes.take_all()
        assert self._segments is not None
        return self._segments.take_all()

    def next(self) -> tuple[EnvelopeHeader, bytes] | None:
        while not self._ready:
            chunk = self.next_chunk()
            if chunk is None:
                return None
            self._ready.extend(chunk[1])
        raw = self._ready.popleft()
        return EnvelopeHeader.parse(raw, max_body=self._max_body), raw

    def next_chunk(self) -> Chunk | None:
        """The next whole chunk (see :data:`Chunk`); None: need more bytes."""
        if self._envelopes is not None:
            raw = self._envelopes.next_raw()
            return None if raw is None else (raw, [raw])
        segments = self._segments
        assert segments is not None
        while True:
            item = segments.next_raw()
            if item is None:
                return None
            payload, self_contained, wire = item
            if self_contained:
                if self._partial_wire:
                    raise ProtocolError("self-contained segment inside a multi-segment envelope")
                envelopes = split_raw(payload, max_body=self._max_body)
                if envelopes:
                    return wire, envelopes
                continue  # an empty segment carries nothing to forward
            self._partial_wire.append(wire)
            envelope = self._accumulate(payload)
            if envelope is not None:
                wire = b"".join(self._partial_wire)
                self._partial_wire.clear()
                return wire, [envelope]

    def _accumulate(self, payload: bytes) -> bytes | None:
        partial = self._partial
        partial += payload
        if self._partial_total < 0 and len(partial) >= ENVELOPE_HEADER_LENGTH:
            header = EnvelopeHeader.parse(bytes(partial[:ENVELOPE_HEADER_LENGTH]), max_body=self._max_body)
            self._partial_total = ENVELOPE_HEADER_LENGTH + header.length
        if self._partial_total < 0 or len(partial) < self._partial_total:
            return None
        if len(partial) > self._partial_total:
            raise ProtocolError("multi-segment envelope followed by extra bytes in its last segment")
        envelope = bytes(partial)
        partial.clear()
        self._partial_total = -1
        return envelope


class CQLConnection:
    """The protocol state of one proxied client connection. See the module docstring."""

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        self._config = config or ConnectionConfig()
        self._phase = ConnectionPhase.HANDSHAKE
        self._version: int | None = None
        self._compression: str | None = None
        self._client_in = _Inbound(max_body=self._config.max_frame_body)
        self._server_in = _Inbound(max_body=self._config.max_frame_body)
        self._client_out = Framing.ENVELOPES
        self._server_out = Framing.ENVELOPES
        self._switch_on_forward: Response | None = None
        self._keyspace: str | None = None
        #: The stream of the AUTH_RESPONSE in flight (at most one, see ``_client_request``).
        self._auth_stream: int | None = None
        self._user: str | None = None
        #: Forwarded requests by stream: the decoded request, or None for one forwarded undecoded.
        self._pending: dict[int, Request | None] = {}
        self._keyspace_changers: set[int] = set()
        self._prepared: dict[bytes, PreparedStatement] = {}
        self._relay: ServerRelay | None = None
        self._answered: list[int] = []

    # ------------------------------------------------------------------ read-only state

    @property
    def phase(self) -> ConnectionPhase:
        return self._phase

    @property
    def version(self) -> int | None:
        """The protocol version fixed by the last STARTUP (None before one)."""
        return self._version

    @property
    def compression(self) -> str | None:
        return self._compression

    @property
    def client_framing(self) -> Framing:
        return self._client_in.framing

    @property
    def server_framing(self) -> Framing:
        return self._server_in.framing

    @property
    def keyspace(self) -> str | None:
        """The connection keyspace, as confirmed by the server's last RESULT Set_keyspace."""
        return self._keyspace

    @property
    def keyspace_in_doubt(self) -> bool:
        """True while a request forwarded with ``changes_keyspace=True`` is unanswered."""
        return bool(self._keyspace_changers)

    @property
    def user(self) -> str | None:
        """The SASL PLAIN user, set only once the server answered AUTH_SUCCESS."""
        return self._user

    @property
    def in_flight(self) -> dict[int, Request]:
        """Forwarded *decoded* requests awaiting a response, by stream id (a copy)."""
        return {stream: request for stream, request in self._pending.items() if request is not None}

    @property
    def in_flight_count(self) -> int:
        """Forwarded requests awaiting a response, decoded or not."""
        return len(self._pending)

    @property
    def prepared(self) -> dict[bytes, PreparedStatement]:
        """Statements the server prepared on this connection, by prepared id (a copy)."""
        return dict(self._prepared)

    # ------------------------------------------------------------------------ receiving

    def receive_client_chunks(self, data: bytes) -> list[Chunk]:
        """Feed bytes from the client; returns the complete chunks (empty: need more data).

        Each envelope of a chunk is then either decided undecoded (:meth:`fast_request`, then
        :meth:`forward_fast`) or decoded (:meth:`decode_client`); :meth:`chunk_for_server`
        gives the bytes that carry the forwarded ones on.
        """
        self._client_in.feed(data)
        chunks: list[Chunk] = []
        while (chunk := self._client_in.next_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def decode_client(self, raw: bytes) -> Request | ProxyReply:
        """Decode one client envelope (from a chunk) into a request, like :meth:`receive_client_data`."""
        return self._client_event(EnvelopeHeader.parse(raw, max_body=self._config.max_frame_body), raw)

    def fast_request(self, raw: bytes) -> FastRequest | None:
        """``(stream, opcode, key)`` of an EXECUTE or QUERY the caller may decide without decoding.

        None (decode it with :meth:`decode_client` instead) unless the connection is established
        and the envelope is a well-formed-looking QUERY/EXECUTE of this connection's version, on a
        free stream, without a custom payload, and (QUERY, v5) without a per-request keyspace.
        A v4 lz4 body is decompressed to read the key. What the key names must have been
        decided before, on a decoded request: this method checks framing, not policy.
        """
        if self._phase is not ConnectionPhase.ESTABLISHED:
            return None
        version, flags, stream, opcode, _length = _HEADER.unpack_from(raw)
        if version != self._version or stream < 0 or flags & ~_FAST_FLAGS or stream in self._pending:
            return None
        if opcode != _EXECUTE and opcode != _QUERY:
            return None
        if flags & _COMPRESSION:
            if version >= 5 or self._compression != "lz4":
                return None
            body = decompress_body(raw[ENVELOPE_HEADER_LENGTH:], limit=self._config.max_frame_body)
            at = 0
        else:
            body, at = raw, ENVELOPE_HEADER_LENGTH
        size = len(body)
        if opcode == _EXECUTE:
            if size < at + 2:
                return None
            end = at + 2 + _SHORT.unpack_from(body, at)[0]
            if end > size:
                return None
            key = body[at + 2 : end]
            options = end
            if version >= 5:  # [short bytes] result metadata id
                if options + 2 > size:
                    return None
                options += 2 + _SHORT.unpack_from(body, options)[0]
            # The options' flags (after [short] consistency): unknown bits go to the full decode,
            # which refuses them.
            at = options + 2
            if version >= 5:
                if at + 4 > size or _UINT.unpack_from(body, at)[0] & ~_FAST_EXECUTE_OK:
                    return None
            elif at >= size or body[at] & ~_FAST_EXECUTE_OK:
                return None
            return stream, opcode, key
        if size < at + 4:
            return None
        n = _INT.unpack_from(body, at)[0]
        end = at + 4 + n
        if n < 0:
            return None
        # [long string] query, [short] consistency, flags: no per-request keyspace on *any* version
        # (Cassandra honours the KEYSPACE flag in a v4 [byte] too), no unknown bit.
        if not self._plain_flags(body, end + 2, version, _FAST_QUERY_OK):
            return None
        return stream, opcode, body[at + 4 : end]

    @staticmethod
    def _plain_flags(body: bytes, at: int, version: int, allowed: int) -> bool:
        """True if the QueryOptions flags at ``body[at:]`` are present and within ``allowed``."""
        if version >= 5:
            return at + 4 <= len(body) and not _UINT.unpack_from(body, at)[0] & ~allowed
        return at + 1 <= len(body) and not body[at] & ~allowed

    def forward_fast(self, stream: int) -> None:
        """Mark a request decided by :meth:`fast_request` as forwarded (its response is awaited)."""
        self._pending[stream] = None

    def chunk_for_server(self, wire: bytes, forwarded: list[bytes], *, whole: bool) -> bytes:
        """The bytes that carry a chunk's ``forwarded`` envelopes to the server.

        With ``whole`` (every envelope of the chunk is forwarded, unchanged) that is ``wire``
        itself, checksums and all, whenever both sides frame alike; else they are re-framed.
        """
        if whole and self._client_in.framing is self._server_out:
            return wire
        if self._server_out is Framing.ENVELOPES:
            return b"".join(forwarded)
        return frame_envelopes(forwarded, compressed=self._compression == "lz4")

    def receive_client_data(self, data: bytes) -> list[Request | ProxyReply]:
        """Feed bytes from the client; returns the complete requests (empty: need more data).

        The same path the guard's session takes (:meth:`receive_client_chunks`, then
        :meth:`decode_client` for each envelope), without the fast path.
        """
        return [self.decode_client(raw) for _, envelopes in self.receive_client_chunks(data) for raw in envelopes]

    def receive_server_data(self, data: bytes) -> list[Response]:
        """Feed bytes from the server; returns the complete responses (empty: need more data)."""
        if self._relay is not None:
            raise RuntimeError("server bytes are relayed: use relay_server_data")
        self._answered = []
        self._server_in.feed(data)
        events: list[Response] = []
        while (item := self._server_in.next()) is not None:
            header, raw = item
            events.append(self._server_event(header, raw))
        return events

    def relay_server_data(self, data: bytes) -> tuple[bytes, list[Response], list[int]]:
        """Feed bytes from the server; returns ``(to_client, decoded, answered)``.

        ``to_client`` is what to write to the client now; ``answered`` the stream ids of the
        forwarded requests answered (in order); ``decoded`` the responses that were decoded.

        Until the handshake is over, every response is decoded and re-framed for the client
        (as :meth:`receive_server_data` + :meth:`forward_to_client`). From then on the server's
        bytes are passed through as they arrived (:class:`~.relay.ServerRelay`): only the
        answers that matter are decoded (to a request that was decoded, such as a PREPARE or a
        USE, and any Set_keyspace result), nothing is re-encoded, and v5 checksums are left to
        the client.
        """
        relay = self._relay
        if relay is None and self._phase is ConnectionPhase.ESTABLISHED and self._switch_on_forward is None:
            rest = self._server_in.hand_over()
            if rest is not None:
                relay = self._relay = ServerRelay(
                    segments=self._server_in.framing is Framing.SEGMENTS,
                    compressed=self._server_in.compressed,
                    max_body=self._config.max_frame_body,
                    initial=rest,
                )
        if relay is None:
            responses = self.receive_server_data(data)
            return b"".join([self.forward_to_client(r) for r in responses]), responses, self._answered
        answered: list[int] = []
        wire, envelopes = relay.feed(data)
        decoded: list[Response] = []
        pending = self._pending
        for container, start, end in envelopes:
            version, flags, stream, opcode, _length = _HEADER.unpack_from(container, start)
            if not version & RESPONSE_BIT:
                raise ProtocolError("the server sent a request frame")
            if version & ~RESPONSE_BIT != self._version:
                raise ProtocolError(f"server sent v{version & ~RESPONSE_BIT} on a v{self._version} connection")
            if opcode not in _RESPONSE_CODES:
                raise ProtocolError(f"unknown opcode {opcode:#04x} from the server")
            if stream not in pending:
                if stream < 0 and opcode == _EVENT:
                    continue  # an EVENT: passed through as is
                raise ProtocolError(f"the server answered stream {stream}, on which the guard forwarded nothing")
            request = pending.pop(stream)
            answered.append(stream)
            if self._keyspace_changers:
                self._keyspace_changers.discard(stream)
            if request is None:
                if opcode != _RESULT:
                    continue
                if not flags and end - start >= _RESULT_KIND_END:  # the common case, inline
                    if _INT.unpack_from(container, start + ENVELOPE_HEADER_LENGTH)[0] != _SET_KEYSPACE:
                        continue
                elif not self._may_set_keyspace(flags, container, start, end):
                    continue
            raw = container[start:end]
            header = EnvelopeHeader.parse(raw, max_body=self._config.max_frame_body)
            decoded.append(self._decode_response(header, Opcode(opcode), raw, request))
        return wire, decoded, answered

    def _may_set_keyspace(self, flags: int, container: bytes, start: int, end: int) -> bool:
        """Could this RESULT be a Set_keyspace? Cheap: reads its kind; True when unsure."""
        body: bytes | memoryview = memoryview(container)[start + ENVELOPE_HEADER_LENGTH : end]
        if flags & _COMPRESSION:
            if self._version != 4 or self._compression != "lz4" or len(body) < 4:
                return True  # the decoder refuses it
            if _UINT.unpack_from(body)[0] > _SMALL_RESULT and not flags & _LONG_PREFIX_FLAGS:
                return False
            body = decompress_body(bytes(body), limit=self._config.max_frame_body)
        if flags & _BODY_PREFIX_FLAGS:
            reader = Reader(bytes(body))
            try:
                if flags & HeaderFlag.TRACING:
                    reader.uuid()
                if flags & HeaderFlag.WARNING:
                    reader.string_list()
                if flags & HeaderFlag.CUSTOM_PAYLOAD:
                    reader.skip_bytes_map()
                return bool(reader.int32() == _SET_KEYSPACE)
            except ProtocolError:
                return True
        return len(body) < 4 or bool(_INT.unpack_from(body)[0] == _SET_KEYSPACE)

    def _body(self, header: EnvelopeHeader, raw: bytes) -> bytes:
        body = raw[ENVELOPE_HEADER_LENGTH:]
        if HeaderFlag.COMPRESSION not in header.flags:
            return body
        if header.version >= 5:
            raise ProtocolError("compression flag set on a v5 envelope")
        if self._compression != "lz4":
            raise ProtocolError("compressed frame but no compression was negotiated")
        return decompress_body(body, limit=self._config.max_frame_body)

    def _client_event(self, header: EnvelopeHeader, raw: bytes) -> Request | ProxyReply:
        if header.is_response:
            raise ProtocolError("the client sent a response frame")
        try:
            return self._client_request(header, raw)
        except ProtocolError as exc:
            if exc.reply is None and header.opcode in _REQUEST_CODES and header.version in SUPPORTED_VERSIONS:
                version = self._version if self._version is not None else header.version
                exc.reply = self._error_envelope(version, header.stream, ErrorCode.PROTOCOL_ERROR, str(exc))
                exc.stream, exc.opcode = header.stream, header.opcode
            raise

    def _client_request(self, header: EnvelopeHeader, raw: bytes) -> Request | ProxyReply:
        try:
            opcode = Opcode(header.opcode)
        except ValueError:
            raise ProtocolError(f"unknown opcode {header.opcode:#04x}") from None
        if self._phase is ConnectionPhase.HANDSHAKE:
            refusal = self._refuse_version(header)
            if refusal is not None:
                return refusal
        elif header.version != self._version:
            raise ProtocolError(f"version {header.version} frame on a v{self._version} connection")
        if opcode not in _CLIENT_OPCODES[self._phase]:
            raise UnexpectedMessage(f"{opcode.name} is not allowed while {self._phase.value}")
        if header.stream < 0:
            # Negative ids are the server's (EVENT uses -1). A request on one could never be
            # matched to its answer, so a USE there would change the keyspace unseen (issue 16).
            raise ProtocolError(f"stream id {header.stream} is negative: the guard cannot track a request on it")
        if opcode is Opcode.AUTH_RESPONSE and self._auth_stream is not None:
            # Cassandra takes AUTH_RESPONSEs one after another (and even after AUTH_SUCCESS, as a
            # new login), so two in flight leave it unclear which identity it logged in.
            raise UnexpectedMessage("an authentication exchange is already in flight")
        if opcode is Opcode.STARTUP and HeaderFlag.COMPRESSION in header.flags:
            raise ProtocolError("STARTUP must not be compressed")
        body = self._body(header, raw)
        message = parse_request(opcode, header.flags, body, header.version)
        if isinstance(message, Startup):
            if message.compression is not None and message.compression not in SUPPORTED_COMPRESSION:
                return self._handshake_error(
                    header,
                    f"Unsupported compression algorithm '{message.compression}': this proxy supports lz4",
                )
            self._phase = ConnectionPhase.STARTING
            self._version = header.version
            self._compression = message.compression
        elif isinstance(message, AuthResponse):
            self._auth_stream = header.stream
        keyspace = getattr(message, "keyspace", None) or self._keyspace
        return Request(
            stream=header.stream,
            opcode=opcode,
            version=header.version,
            flags=header.flags,
            message=message,
            keyspace=keyspace,
            raw=raw,
            body=body,
        )

    def _refuse_version(self, header: EnvelopeHeader) -> ProxyReply | None:
        if header.version not in SUPPORTED_VERSIONS:
            supported = ", ".join(f"{v}/v{v}" for v in sorted(SUPPORTED_VERSIONS))
            return self._handshake_error(
                header,
                f"Invalid or unsupported protocol version ({header.version}); supported versions are ({supported})",
                version=min(header.version, max(SUPPORTED_VERSIONS)),
            )
        if HeaderFlag.USE_BETA in header.flags:
            return self._handshake_error(
                header, f"Beta version of the protocol ({header.version}) is not supported by this proxy"
            )
        return None

    def _handshake_error(self, header: EnvelopeHeader, message: str, *, version: int | None = None) -> ProxyReply:
        body = encode_error_body(ErrorCode.PROTOCOL_ERROR, message)
        data = encode_envelope(
            version=version or header.version,
            is_response=True,
            flags=HeaderFlag.NONE,
            stream=header.stream,
            opcode=Opcode.ERROR,
            body=body,
        )
        return ProxyReply(stream=header.stream, reason=message, data=data)

    def _server_event(self, header: EnvelopeHeader, raw: bytes) -> Response:
        if not header.is_response:
            raise ProtocolError("the server sent a request frame")
        try:
            opcode = Opcode(header.opcode)
        except ValueError:
            raise ProtocolError(f"unknown opcode {header.opcode:#04x} from the server") from None
        handshaking = self._phase in (ConnectionPhase.HANDSHAKE, ConnectionPhase.STARTING)
        if not handshaking and header.version != self._version:
            raise ProtocolError(f"server sent v{header.version} on a v{self._version} connection")
        request: Request | None = None
        if header.stream in self._pending:
            request = self._pending.pop(header.stream)
            self._answered.append(header.stream)
        elif not (header.stream < 0 and opcode is Opcode.EVENT):
            raise ProtocolError(f"the server answered stream {header.stream}, on which the guard forwarded nothing")
        return self._decode_response(header, opcode, raw, request)

    def _decode_response(self, header: EnvelopeHeader, opcode: Opcode, raw: bytes, request: Request | None) -> Response:
        body = self._body(header, raw)
        message = parse_response(opcode, header.flags, body, header.version)
        self._keyspace_changers.discard(header.stream)
        event = Response(
            stream=header.stream,
            opcode=opcode,
            version=header.version,
            flags=header.flags,
            message=message,
            request=request,
            raw=raw,
            body=body,
        )
        if request is not None and isinstance(request.message, AuthResponse):
            # The identity is the one of the exchange Cassandra answered with AUTH_SUCCESS: the
            # user of *that* AUTH_RESPONSE, never of whichever the client sent last.
            self._auth_stream = None
            if isinstance(message, AuthSuccess):
                self._user = request.message.user
        if isinstance(message, SetKeyspaceResult):
            self._keyspace = message.keyspace
        elif isinstance(message, PreparedResult) and request is not None and isinstance(request.message, Prepare):
            statement = PreparedStatement(request.message.query, request.keyspace)
            self._prepared[message.prepared_id] = statement
        if request is not None:
            self._transition(request, event)
        return event

    def _transition(self, request: Request, response: Response) -> None:
        nxt = _SERVER_TRANSITIONS.get((self._phase, request.opcode, response.opcode))
        if nxt is None:
            return
        if nxt is ConnectionPhase.HANDSHAKE:  # STARTUP refused (e.g. version downgrade): start over
            self._version = None
            self._compression = None
        elif self._phase is ConnectionPhase.STARTING and self._version is not None and self._version >= 5:
            compressed = self._compression == "lz4"
            self._server_in.switch_to_segments(compressed=compressed)
            self._server_out = Framing.SEGMENTS
            self._switch_on_forward = response
        self._phase = nxt

    # ------------------------------------------------------------------------- sending

    def forward_to_server(self, request: Request, *, changes_keyspace: bool = False) -> bytes:
        """The bytes that carry ``request`` to the server (the raw envelope, re-framed in v5).

        ``changes_keyspace`` marks a request the guard classified as USE: until its response,
        :attr:`keyspace_in_doubt` is True.
        """
        self.forward(request, changes_keyspace=changes_keyspace)
        return self._outbound(request.raw, self._server_out)

    def forward(self, request: Request, *, changes_keyspace: bool = False) -> None:
        """Mark ``request`` forwarded (as :meth:`forward_to_server`), without framing it:
        the caller sends ``request.raw`` through :meth:`chunk_for_server`."""
        if request.stream in self._pending:
            # Its answer could not be told from the first one's: the connection cannot go on.
            error = UnexpectedMessage(f"stream {request.stream} is already in flight")
            error.stream, error.opcode = request.stream, int(request.opcode)
            raise error
        self._pending[request.stream] = request
        if changes_keyspace:
            self._keyspace_changers.add(request.stream)

    def forward_to_client(self, response: Response) -> bytes:
        """The bytes that carry ``response`` to the client (the raw envelope, re-framed in v5)."""
        data = self._outbound(response.raw, self._client_out)
        if response is self._switch_on_forward:
            compressed = self._compression == "lz4"
            self._client_in.switch_to_segments(compressed=compressed)
            self._client_out = Framing.SEGMENTS
            self._switch_on_forward = None
        return data

    def deny(self, request: Request, message: str) -> bytes:
        """An ERROR 0x2100 Unauthorized answering ``request``, framed for the client."""
        return self._error_to_client(request, ErrorCode.UNAUTHORIZED, message)

    def unprepared(self, request: Request, prepared_id: bytes) -> bytes:
        """An ERROR 0x2500 Unprepared for ``prepared_id`` (the client will re-PREPARE)."""
        return self._error_to_client(
            request, ErrorCode.UNPREPARED, "Prepared query with ID not found", unprepared_id=prepared_id
        )

    def _error_to_client(
        self, request: Request, code: ErrorCode, message: str, *, unprepared_id: bytes | None = None
    ) -> bytes:
        return self._error_envelope(request.version, request.stream, code, message, unprepared_id=unprepared_id)

    def _error_envelope(
        self, version: int, stream: int, code: ErrorCode, message: str, *, unprepared_id: bytes | None = None
    ) -> bytes:
        """An ERROR for ``stream``, compressed and framed as the client reads frames now."""
        text = message[:_MAX_ERROR_MESSAGE]
        body = encode_error_body(code, text, unprepared_id=unprepared_id)
        flags = HeaderFlag.NONE
        if version < 5 and self._compression == "lz4" and self._phase is not ConnectionPhase.HANDSHAKE:
            body = compress_body(body)
            flags = HeaderFlag.COMPRESSION
        if len(body) > self._config.max_frame_body:
            raise FrameTooLarge("error response exceeds the frame limit")
        envelope = encode_envelope(
            version=version,
            is_response=True,
            flags=flags,
            stream=stream,
            opcode=Opcode.ERROR,
            body=body,
        )
        return self._outbound(envelope, self._client_out)

    def _outbound(self, envelope: bytes, framing: Framing) -> bytes:
        if framing is Framing.ENVELOPES:
            return envelope
        return frame_envelopes([envelope], compressed=self._compression == "lz4")
