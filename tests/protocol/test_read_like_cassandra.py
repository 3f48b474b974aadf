"""Issue 16, classes 2-4, bytes in -> events and decisions out (no sockets).

Each test is a way past the guard that worked before: a request whose options Cassandra reads
differently from the guard, an identity taken from what the client sent rather than from the
exchange Cassandra answered, a request on a stream the guard does not follow. The guard must
now read the request as Cassandra 5.0 does, or refuse it with a CQL ``Protocol error``.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from isthmus.cqlguard.guard import Disposition, Guard
from isthmus.cqlguard.policy import Identity, Policy
from isthmus.cqlguard.protocol import (
    Batch,
    CQLConnection,
    ErrorCode,
    HeaderFlag,
    ProtocolError,
    Query,
    Request,
    UnexpectedMessage,
)
from isthmus.cqlguard.protocol.messages import Error, parse_response
from protocol import cqlwire as w

POLICY = Policy.from_yaml(
    """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["open.*"]
      - actions: [write]
        tables: ["open.t"]
"""
)
ME = Identity(address=ipaddress.ip_address("127.0.0.1"))


def established(version: int, *, keyspace: str | None = None) -> CQLConnection:
    conn = CQLConnection()
    [startup] = conn.receive_client_data(w.startup(version, stream=0))
    assert isinstance(startup, Request)
    conn.forward_to_server(startup)
    [ready] = conn.receive_server_data(w.ready(version, 0))
    conn.forward_to_client(ready)
    if keyspace is not None:
        use = request(conn, version, w.query(f"USE {keyspace}", version, stream=1))
        conn.forward(use, changes_keyspace=True)
        conn.relay_server_data(frame(version, w.result_set_keyspace(keyspace, version, stream=1)))
        assert conn.keyspace == keyspace
    return conn


def frame(version: int, envelope: bytes) -> bytes:
    return w.segment(envelope) if version >= 5 else envelope


def request(conn: CQLConnection, version: int, envelope: bytes) -> Request:
    [event] = conn.receive_client_data(frame(version, envelope))
    assert isinstance(event, Request), event
    return event


def refusal(conn: CQLConnection, version: int, envelope: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        conn.receive_client_data(frame(version, envelope))
    return caught.value


def answered_protocol_error(exc: ProtocolError, version: int, stream: int) -> str:
    """The refusal's reply is a CQL ERROR 0x000A on the request's own stream; returns its text."""
    assert exc.reply is not None and exc.stream == stream
    envelope = exc.reply
    if version >= 5:  # strip the segment header (6) and trailer (4) of an uncompressed segment
        envelope = envelope[6:-4]
    v, flags, got_stream, opcode, length = struct.unpack(">BBhBi", envelope[:9])
    assert (v, got_stream, opcode) == (0x80 | version, stream, 0x00)
    message = parse_response(opcode, HeaderFlag(flags), envelope[9 : 9 + length], version)
    assert isinstance(message, Error) and message.code == ErrorCode.PROTOCOL_ERROR
    return message.message


def options(version: int, flags: int, rest: bytes = b"") -> bytes:
    """``<query_parameters>``: [short] consistency ONE, flags ([int] v5, [byte] v4), then ``rest``."""
    return struct.pack(">H", 1) + (struct.pack(">I", flags) if version >= 5 else struct.pack(">B", flags)) + rest


def query_frame(text: str, version: int, flags: int, rest: bytes = b"", stream: int = 3) -> bytes:
    return w.frame(version, stream, 0x07, w.long_string(text) + options(version, flags, rest))


def batch_frame(children: list[str], version: int, flags: int, rest: bytes = b"", stream: int = 3) -> bytes:
    body = struct.pack(">BH", 1, len(children))
    for child in children:
        body += b"\x00" + w.long_string(child) + struct.pack(">H", 0)
    return w.frame(version, stream, 0x0D, body + options(version, flags, rest))


# ---------------------------------------------------------------- class 2: request options


@pytest.mark.parametrize("version", [4, 5])
def test_the_keyspace_flag_is_honoured_on_every_version(version: int) -> None:
    """QueryOptions.Codec reads Flag.KEYSPACE (0x80) from the v4 [byte] too; the guard read it on v5
    only and judged a v4 query against the connection's keyspace."""
    guard, conn = Guard(POLICY, upstream="u"), established(version, keyspace="open")
    req = request(conn, version, query_frame("SELECT * FROM t", version, 0x80, w.string("secret")))
    assert isinstance(req.message, Query) and req.message.keyspace == "secret"
    check = guard.check(req, ME, connection_keyspace=conn.keyspace)
    assert check.step is Disposition.DENY
    assert "select on secret.t" in check.decision.reason  # type: ignore[union-attr]


@pytest.mark.parametrize("version", [4, 5])
def test_batch_options_are_decoded_as_query_options(version: int) -> None:
    """BatchMessage decodes its options with QueryOptions.codec: a page size (0x04) comes before the
    keyspace. The guard skipped it, read the keyspace from the page size's bytes ('' for 5000) and
    fell back to the connection's keyspace."""
    guard, conn = Guard(POLICY, upstream="u"), established(version, keyspace="open")
    rest = struct.pack(">i", 5000) + w.string("secret")
    req = request(conn, version, batch_frame(["INSERT INTO t (k) VALUES (1)"], version, 0x84, rest))
    assert isinstance(req.message, Batch) and req.message.keyspace == "secret"
    assert guard.check(req, ME, connection_keyspace=conn.keyspace).step is Disposition.DENY


def test_batch_values_and_paging_state_are_read_where_cassandra_reads_them() -> None:
    conn = established(5)
    rest = struct.pack(">H", 1) + w.nbytes(b"v") + struct.pack(">i", 10) + w.nbytes(b"ps") + w.string("secret")
    req = request(conn, 5, batch_frame(["INSERT INTO t (k) VALUES (?)"], 5, 0x01 | 0x04 | 0x08 | 0x80, rest))
    assert isinstance(req.message, Batch) and req.message.keyspace == "secret"


@pytest.mark.parametrize(
    ("version", "envelope", "why"),
    [
        pytest.param(5, query_frame("SELECT * FROM open.t", 5, 0x200), "unknown query flags", id="v5-unknown-flag"),
        pytest.param(5, batch_frame(["INSERT INTO open.t (k) VALUES (1)"], 5, 0x400), "unknown query flags",
                     id="v5-batch-unknown-flag"),
        pytest.param(4, query_frame("SELECT * FROM open.t", 4, 0x04, struct.pack(">i", 100) + b"\x00\x06secret"),
                     "bytes after", id="trailing-bytes"),
        pytest.param(5, w.frame(5, 3, 0x09, w.long_string("SELECT * FROM open.t") + struct.pack(">I", 0x02)),
                     "unknown PREPARE flags", id="v5-prepare-unknown-flag"),
        pytest.param(4, query_frame("SELECT * FROM open.t", 4, 0x20, struct.pack(">q", -(1 << 63))),
                     "Out of bound timestamp", id="timestamp-long-min"),
        pytest.param(4, w.frame(4, 3, 0x07, w.long_string("SELECT 1 FROM open.t") + options(4, 0), flags=0x08),
                     "not a client's", id="warning-header-flag"),
        pytest.param(4, w.frame(4, 3, 0x07, w.long_string("SELECT 1 FROM open.t") + options(4, 0), flags=0x40),
                     "not a client's", id="unknown-header-flag"),
    ],
)
def test_what_the_guard_cannot_read_is_refused_with_a_protocol_error(version: int, envelope: bytes, why: str) -> None:
    conn = established(version)
    assert why in answered_protocol_error(refusal(conn, version, envelope), version, 3)
    assert conn.in_flight_count == 0


@pytest.mark.parametrize("version", [4, 5])
def test_the_fast_path_leaves_a_query_with_a_keyspace_or_unknown_flags_to_the_full_decode(version: int) -> None:
    conn = established(version)
    plain = frame(version, query_frame("SELECT * FROM t", version, 0x04, struct.pack(">i", 100)))
    [(_, [raw])] = conn.receive_client_chunks(plain)
    assert conn.fast_request(raw) == (3, 0x07, b"SELECT * FROM t")
    for flags, rest in ((0x84, struct.pack(">i", 100) + w.string("secret")), (0x80, w.string("secret"))):
        [(_, [raw])] = conn.receive_client_chunks(frame(version, query_frame("SELECT * FROM t", version, flags, rest)))
        assert conn.fast_request(raw) is None


def test_the_fast_path_leaves_an_execute_with_unknown_flags_to_the_full_decode() -> None:
    conn = established(5)
    body = w.short_bytes(b"id") + w.short_bytes(b"meta") + options(5, 0x1000)
    [(_, [raw])] = conn.receive_client_chunks(w.segment(w.frame(5, 4, 0x0A, body)))
    assert conn.fast_request(raw) is None
    with pytest.raises(ProtocolError, match="unknown query flags"):
        conn.decode_client(raw)


# ------------------------------------------------------------------- class 3: identity


def authenticating(version: int = 4) -> CQLConnection:
    conn = CQLConnection()
    [startup] = conn.receive_client_data(w.startup(version, stream=0))
    assert isinstance(startup, Request)
    conn.forward_to_server(startup)
    [challenge] = conn.receive_server_data(w.authenticate(version, 0))
    conn.forward_to_client(challenge)
    return conn


def test_a_second_authentication_in_flight_is_refused() -> None:
    """Pipelined: alice's good password, then admin's wrong one. Cassandra logs alice in; the guard
    used to take the user of the last AUTH_RESPONSE it saw (admin) when AUTH_SUCCESS came."""
    conn = authenticating()
    [alice] = conn.receive_client_data(w.auth_response("alice", "good", stream=1))
    assert isinstance(alice, Request)
    conn.forward_to_server(alice)
    with pytest.raises(UnexpectedMessage) as caught:
        conn.receive_client_data(w.auth_response("admin", "wrong", stream=2))
    assert "already in flight" in answered_protocol_error(caught.value, 4, 2)
    conn.receive_server_data(w.auth_success(4, stream=1))
    assert conn.user == "alice"


def test_the_identity_is_the_one_cassandra_answered_with_auth_success() -> None:
    conn = authenticating()
    [admin] = conn.receive_client_data(w.auth_response("admin", "wrong", stream=1))
    assert isinstance(admin, Request)
    conn.forward_to_server(admin)
    error = w.frame(4, 1, 0x00, struct.pack(">i", 0x0100) + w.string("Bad credentials"), response=True)
    conn.receive_server_data(error)
    assert conn.user is None
    [alice] = conn.receive_client_data(w.auth_response("alice", "good", stream=2))
    assert isinstance(alice, Request)
    conn.forward_to_server(alice)
    conn.receive_server_data(w.auth_success(4, stream=2))
    assert conn.user == "alice"


def test_authenticating_again_once_established_is_refused() -> None:
    """Cassandra's ServerConnection accepts an AUTH_RESPONSE in its READY stage and logs the new user
    in; the guard must not let a connection change identity under it."""
    conn = authenticating()
    [alice] = conn.receive_client_data(w.auth_response("alice", "good", stream=1))
    assert isinstance(alice, Request)
    conn.forward_to_server(alice)
    conn.receive_server_data(w.auth_success(4, stream=1))
    with pytest.raises(UnexpectedMessage) as caught:
        conn.receive_client_data(w.auth_response("admin", "pw", stream=2))
    answered_protocol_error(caught.value, 4, 2)
    assert conn.user == "alice"


# -------------------------------------------------------------------- class 4: streams


@pytest.mark.parametrize("version", [4, 5])
def test_a_request_on_a_negative_stream_is_refused(version: int) -> None:
    """A USE on stream -5 was forwarded but never tracked: Cassandra switched keyspace, the guard
    never decoded the answer, and judged later statements against the old keyspace."""
    conn = established(version, keyspace="open")
    exc = refusal(conn, version, w.query("USE secret", version, stream=-5))
    assert "negative" in answered_protocol_error(exc, version, -5)
    assert conn.in_flight_count == 0 and conn.keyspace == "open"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(w.result_set_keyspace("secret", 4, stream=7), id="set-keyspace"),
        pytest.param(w.result_prepared(b"poison", 4, stream=7), id="prepared"),
        pytest.param(w.result_void(4, stream=-3), id="negative-stream-result"),
    ],
)
def test_an_answer_on_a_stream_the_guard_did_not_forward_closes_the_connection(answer: bytes) -> None:
    conn = established(4, keyspace="open")
    with pytest.raises(ProtocolError, match="forwarded nothing"):
        conn.relay_server_data(answer)
    assert conn.keyspace == "open"


def test_events_on_negative_streams_still_pass() -> None:
    conn = established(4)
    event = w.frame(4, -1, 0x0C, w.string("SCHEMA_CHANGE") + w.string("CREATED") + w.string("KEYSPACE")
                    + w.string("k"), response=True)
    out, _, answered = conn.relay_server_data(event)
    assert out == event and answered == []


def test_a_request_on_a_stream_in_flight_is_refused_without_answering_on_it() -> None:
    conn = established(4)
    first = request(conn, 4, w.query("SELECT * FROM open.t", 4, stream=9))
    conn.forward(first)
    second = request(conn, 4, w.query("SELECT * FROM open.t", 4, stream=9))
    with pytest.raises(UnexpectedMessage) as caught:
        conn.forward(second)
    assert caught.value.reply is None and caught.value.stream == 9
