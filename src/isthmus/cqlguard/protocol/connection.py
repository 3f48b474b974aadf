"""One client connection through the proxy, as a sans-IO state machine (h11's ``Connection``).

Bytes in, events out::

    conn = CQLConnection()
    for event in conn.receive_client_data(data):      # -> Request | ProxyReply
        ...  conn.forward_to_server(event) / conn.deny(event, why) / event.data
    for event in conn.receive_server_data(data):      # -> Response
        ...  conn.forward_to_client(event)

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
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from isthmus.cqlguard.protocol.compression import compress_body, decompress_body
from isthmus.cqlguard.protocol.constants import (
    DEFAULT_MAX_FRAME_BODY,
    ENVELOPE_HEADER_LENGTH,
    SUPPORTED_VERSIONS,
    ErrorCode,
    HeaderFlag,
    Opcode,
)
from isthmus.cqlguard.protocol.errors import FrameTooLarge, ProtocolError, UnexpectedMessage
from isthmus.cqlguard.protocol.events import ProxyReply, Request, Response
from isthmus.cqlguard.protocol.frames import EnvelopeBuffer, EnvelopeHeader, encode_envelope, split_envelopes
from isthmus.cqlguard.protocol.messages import (
    AuthResponse,
    Prepare,
    PreparedResult,
    SetKeyspaceResult,
    Startup,
    encode_error_body,
    parse_request,
    parse_response,
)
from isthmus.cqlguard.protocol.segments import SegmentBuffer, frame_envelopes

__all__ = ["CQLConnection", "ConnectionConfig", "Framing", "Phase", "PreparedStatement"]

#: The one compression the proxy can read (see the module docstring about snappy).
SUPPORTED_COMPRESSION = frozenset({"lz4"})
_MAX_ERROR_MESSAGE = 4096


class Phase(Enum):
    HANDSHAKE = "handshake"
    STARTING = "starting"
    AUTHENTICATING = "authenticating"
    ESTABLISHED = "established"


class Framing(Enum):
    ENVELOPES = "envelopes"  # v4 frames, and v5 before the handshake completes
    SEGMENTS = "segments"  # v5 after READY/AUTHENTICATE


#: Requests a client may send in each phase.
_CLIENT_OPCODES: dict[Phase, frozenset[Opcode]] = {
    Phase.HANDSHAKE: frozenset({Opcode.OPTIONS, Opcode.STARTUP}),
    Phase.STARTING: frozenset({Opcode.OPTIONS}),
    Phase.AUTHENTICATING: frozenset({Opcode.OPTIONS, Opcode.AUTH_RESPONSE}),
    Phase.ESTABLISHED: frozenset(
        {Opcode.OPTIONS, Opcode.QUERY, Opcode.PREPARE, Opcode.EXECUTE, Opcode.BATCH, Opcode.REGISTER}
    ),
}

#: (phase, opcode of the request answered, response opcode) -> next phase.
_SERVER_TRANSITIONS: dict[tuple[Phase, Opcode, Opcode], Phase] = {
    (Phase.STARTING, Opcode.STARTUP, Opcode.READY): Phase.ESTABLISHED,
    (Phase.STARTING, Opcode.STARTUP, Opcode.AUTHENTICATE): Phase.AUTHENTICATING,
    (Phase.STARTING, Opcode.STARTUP, Opcode.ERROR): Phase.HANDSHAKE,
    (Phase.AUTHENTICATING, Opcode.AUTH_RESPONSE, Opcode.AUTH_SUCCESS): Phase.ESTABLISHED,
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
        self._ready: list[tuple[EnvelopeHeader, bytes]] = []
        self._partial = bytearray()
        self._partial_header: EnvelopeHeader | None = None

    @property
    def framing(self) -> Framing:
        return Framing.ENVELOPES if self._segments is None else Framing.SEGMENTS

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

    def next(self) -> tuple[EnvelopeHeader, bytes] | None:
        if self._envelopes is not None:
            return self._envelopes.next()
        assert self._segments is not None
        while not self._ready:
            segment = self._segments.next()
            if segment is None:
                return None
            if segment.self_contained:
                if self._partial:
                    raise ProtocolError("self-contained segment inside a multi-segment envelope")
                self._ready.extend(split_envelopes(segment.payload, max_body=self._max_body))
            else:
                self._accumulate(segment.payload)
        return self._ready.pop(0)

    def _accumulate(self, payload: bytes) -> None:
        self._partial += payload
        if self._partial_header is None and len(self._partial) >= ENVELOPE_HEADER_LENGTH:
            self._partial_header = EnvelopeHeader.parse(
                bytes(self._partial[:ENVELOPE_HEADER_LENGTH]), max_body=self._max_body
            )
        if self._partial_header is None:
            return
        total = ENVELOPE_HEADER_LENGTH + self._partial_header.length
        if len(self._partial) > total:
            raise ProtocolError("multi-segment envelope followed by extra bytes in its last segment")
        if len(self._partial) == total:
            self._ready.append((self._partial_header, bytes(self._partial)))
            self._partial.clear()
            self._partial_header = None


class CQLConnection:
    """The protocol state of one proxied client connection. See the module docstring."""

    def __init__(self, config: ConnectionConfig | None = None) -> None:
        self._config = config or ConnectionConfig()
        self._phase = Phase.HANDSHAKE
        self._version: int | None = None
        self._compression: str | None = None
        self._client_in = _Inbound(max_body=self._config.max_frame_body)
        self._server_in = _Inbound(max_body=self._config.max_frame_body)
        self._client_out = Framing.ENVELOPES
        self._server_out = Framing.ENVELOPES
        self._switch_on_forward: Response | None = None
        self._keyspace: str | None = None
        self._pending_user: str | None = None
        self._user: str | None = None
        self._pending: dict[int, Request] = {}
        self._keyspace_changers: set[int] = set()
        self._prepared: dict[bytes, PreparedStatement] = {}

    # ------------------------------------------------------------------ read-only state

    @property
    def phase(self) -> Phase:
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
        """Forwarded requests awaiting a response, by stream id (a copy)."""
        return dict(self._pending)

    @property
    def prepared(self) -> dict[bytes, PreparedStatement]:
        """Statements the server prepared on this connection, by prepared id (a copy)."""
        return dict(self._prepared)

    # ------------------------------------------------------------------------ receiving

    def receive_client_data(self, data: bytes) -> list[Request | ProxyReply]:
        """Feed bytes from the client; returns the complete requests (empty: need more data)."""
        self._client_in.feed(data)
        events: list[Request | ProxyReply] = []
        while (item := self._client_in.next()) is not None:
            header, raw = item
            events.append(self._client_event(header, raw))
        return events

    def receive_server_data(self, data: bytes) -> list[Response]:
        """Feed bytes from the server; returns the complete responses (empty: need more data)."""
        self._server_in.feed(data)
        events: list[Response] = []
        while (item := self._server_in.next()) is not None:
            header, raw = item
            events.append(self._server_event(header, raw))
        return events

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
            opcode = Opcode(header.opcode)
        except ValueError:
            raise ProtocolError(f"unknown opcode {header.opcode:#04x}") from None
        if self._phase is Phase.HANDSHAKE:
            refusal = self._refuse_version(header)
            if refusal is not None:
                return refusal
        elif header.version != self._version:
            raise ProtocolError(f"version {header.version} frame on a v{self._version} connection")
        if opcode not in _CLIENT_OPCODES[self._phase]:
            raise UnexpectedMessage(f"{opcode.name} is not allowed while {self._phase.value}")
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
            self._phase = Phase.STARTING
            self._version = header.version
            self._compression = message.compression
        elif isinstance(message, AuthResponse):
            self._pending_user = message.user
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
        handshaking = self._phase in (Phase.HANDSHAKE, Phase.STARTING)
        if not handshaking and header.version != self._version:
            raise ProtocolError(f"server sent v{header.version} on a v{self._version} connection")
        body = self._body(header, raw)
        message = parse_response(opcode, header.flags, body, header.version)
        request = self._pending.pop(header.stream, None) if header.stream >= 0 else None
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
        if nxt is Phase.HANDSHAKE:  # STARTUP refused (e.g. version downgrade): start over
            self._version = None
            self._compression = None
        elif self._phase is Phase.STARTING and self._version is not None and self._version >= 5:
            compressed = self._compression == "lz4"
            self._server_in.switch_to_segments(compressed=compressed)
            self._server_out = Framing.SEGMENTS
            self._switch_on_forward = response
        if nxt is Phase.ESTABLISHED:
            self._user = self._pending_user
        self._phase = nxt

    # ------------------------------------------------------------------------- sending

    def forward_to_server(self, request: Request, *, changes_keyspace: bool = False) -> bytes:
        """The bytes that carry ``request`` to the server (the raw envelope, re-framed in v5).

        ``changes_keyspace`` marks a request the guard classified as USE: until its response,
        :attr:`keyspace_in_doubt` is True.
        """
        if request.stream >= 0:
            if request.stream in self._pending:
                raise UnexpectedMessage(f"stream {request.stream} is already in flight")
            self._pending[request.stream] = request
            if changes_keyspace:
                self._keyspace_changers.add(request.stream)
        return self._outbound(request.raw, self._server_out)

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
        text = message[:_MAX_ERROR_MESSAGE]
        body = encode_error_body(code, text, unprepared_id=unprepared_id)
        flags = HeaderFlag.NONE
        if request.version < 5 and self._compression == "lz4" and self._phase is not Phase.HANDSHAKE:
            body = compress_body(body)
            flags = HeaderFlag.COMPRESSION
        if len(body) > self._config.max_frame_body:
            raise FrameTooLarge("error response exceeds the frame limit")
        envelope = encode_envelope(
            version=request.version,
            is_response=True,
            flags=flags,
            stream=request.stream,
            opcode=Opcode.ERROR,
            body=body,
        )
        return self._outbound(envelope, self._client_out)

    def _outbound(self, envelope: bytes, framing: Framing) -> bytes:
        if framing is Framing.ENVELOPES:
            return envelope
        return frame_envelopes([envelope], compressed=self._compression == "lz4")
