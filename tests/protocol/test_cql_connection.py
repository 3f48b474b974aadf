"""CQLConnection: bytes in, events out, bytes back — v4, v4+lz4, v5 segments, v5+lz4."""

from __future__ import annotations

import struct

import cqlwire as w
import pytest

from isthmus.cqlguard.protocol import (
    AuthResponse,
    Batch,
    BatchPrepared,
    BatchQuery,
    ConnectionConfig,
    ConnectionPhase,
    CQLConnection,
    Error,
    ErrorCode,
    Execute,
    FrameTooLarge,
    Framing,
    Opcode,
    Prepare,
    PreparedResult,
    ProtocolError,
    ProxyReply,
    Query,
    Ready,
    Request,
    Response,
    SetKeyspaceResult,
    Startup,
    UnexpectedMessage,
    VoidResult,
)


def state(conn: CQLConnection) -> tuple[ConnectionPhase, Framing, Framing]:
    """(phase, client framing, server framing), read fresh (keeps mypy from over-narrowing)."""
    return conn.phase, conn.client_framing, conn.server_framing


def one_request(conn: CQLConnection, data: bytes) -> Request:
    events = conn.receive_client_data(data)
    assert len(events) == 1, events
    assert isinstance(events[0], Request)
    return events[0]


def one_response(conn: CQLConnection, data: bytes) -> Response:
    events = conn.receive_server_data(data)
    assert len(events) == 1, events
    return events[0]


def handshake(conn: CQLConnection, version: int, compression: str | None = None) -> None:
    req = one_request(conn, w.startup(version, compression=compression))
    assert conn.forward_to_server(req) == req.raw
    resp = one_response(conn, w.ready(version))
    assert conn.forward_to_client(resp) == resp.raw  # READY itself is never framed
    assert conn.phase is ConnectionPhase.ESTABLISHED


class Mirror:
    """A second connection driven through the same handshake, used to decode what we emit."""

    def __init__(self, version: int, compression: str | None = None) -> None:
        self.conn = CQLConnection()
        self.version, self.compression = version, compression
        handshake(self.conn, version, compression)

    def decode_to_client(self, data: bytes, stream: int) -> list[Response]:
        """Decode what we emit for ``stream``; the mirror first forwards a request on that stream,
        since a connection refuses answers on streams it forwarded nothing on."""
        options = w.frame(self.version, stream, 0x05, b"")
        if self.version >= 5:
            options = w.lz4_segment(options) if self.compression else w.segment(options)
        [request] = self.conn.receive_client_data(options)
        assert isinstance(request, Request)
        self.conn.forward(request)
        return self.conn.receive_server_data(data)

    def decode_to_server(self, data: bytes) -> list[Request | ProxyReply]:
        return self.conn.receive_client_data(data)


# ---------------------------------------------------------------------------------- v4


def test_v4_startup_ready_query_result() -> None:
    conn = CQLConnection()
    req = one_request(conn, w.startup(4))
    assert req.opcode is Opcode.STARTUP and req.version == 4 and req.stream == 0
    assert req.message == Startup(options=(("CQL_VERSION", "3.0.0"),), compression=None)
    assert conn.phase is ConnectionPhase.STARTING
    conn.forward_to_server(req)
    resp = one_response(conn, w.ready(4))
    assert resp.message == Ready() and resp.request is req
    conn.forward_to_client(resp)
    assert state(conn) == (ConnectionPhase.ESTABLISHED, Framing.ENVELOPES, Framing.ENVELOPES)
    assert conn.version == 4

    q = one_request(conn, w.query("SELECT * FROM ks.t", stream=7))
    assert q.message == Query(query="SELECT * FROM ks.t", keyspace=None)
    assert conn.forward_to_server(q) == q.raw
    assert conn.in_flight == {7: q}
    r = one_response(conn, w.result_void(stream=7))
    assert r.message == VoidResult() and r.request is q
    assert conn.forward_to_client(r) == r.raw
    assert conn.in_flight == {}


def test_v4_bytes_arrive_one_at_a_time() -> None:
    conn = CQLConnection()
    data = w.startup(4)
    events: list[object] = []
    for i in range(len(data)):
        events += conn.receive_client_data(data[i : i + 1])
    assert len(events) == 1 and isinstance(events[0], Request)


def test_v4_two_frames_in_one_read() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    events = conn.receive_client_data(w.query("SELECT 1 FROM a.b", stream=1) + w.query("SELECT 2 FROM a.b", stream=2))
    assert [e.stream for e in events] == [1, 2]


def test_v4_lz4_compressed_frames_pass_through_raw() -> None:
    conn = CQLConnection()
    req = one_request(conn, w.startup(4, compression="lz4"))
    conn.forward_to_server(req)
    assert conn.compression == "lz4"
    # Cassandra may compress the READY itself once it has read STARTUP (v4 §5).
    resp = one_response(conn, w.frame(4, 0, 0x02, w.lz4_body(b""), response=True, flags=0x01))
    assert resp.message == Ready()
    conn.forward_to_client(resp)
    q_body = w.query_body("SELECT * FROM sales.orders WHERE id = ?", values=(b"\x00\x00\x00\x01",))
    raw = w.frame(4, 3, 0x07, w.lz4_body(q_body), flags=0x01)
    q = one_request(conn, raw)
    assert q.body == q_body and q.raw == raw
    assert q.message == Query(query="SELECT * FROM sales.orders WHERE id = ?", keyspace=None)
    assert conn.forward_to_server(q) == raw  # byte-for-byte passthrough


def test_v4_compressed_frame_without_negotiation_is_refused() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    with pytest.raises(ProtocolError):
        conn.receive_client_data(w.frame(4, 1, 0x07, w.lz4_body(w.query_body("SELECT 1")), flags=0x01))


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_v4_deny_and_unprepared_round_trip(compression: str | None) -> None:
    conn = CQLConnection()
    handshake(conn, 4, compression)
    q = one_request(conn, w.query("DROP TABLE x.y", stream=42))
    denied = conn.deny(q, "nope: drop_table on x.y")
    assert (denied[1] & 0x01) == (0x01 if compression else 0)
    mirror = Mirror(4, compression)
    [resp] = mirror.decode_to_client(denied, 42)
    assert resp.stream == 42 and resp.version == 4 and resp.opcode is Opcode.ERROR
    assert resp.message == Error(code=ErrorCode.UNAUTHORIZED, message="nope: drop_table on x.y")
    assert conn.in_flight == {}  # denied requests never become pending

    e = one_request(conn, w.execute(b"\xca\xfe", stream=9))
    [resp] = mirror.decode_to_client(conn.unprepared(e, b"\xca\xfe"), 9)
    assert resp.message == Error(
        code=ErrorCode.UNPREPARED, message="Prepared query with ID not found", unprepared_id=b"\xca\xfe"
    )
    assert resp.stream == 9


def test_set_keyspace_is_tracked_from_the_server_only() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    use = one_request(conn, w.query("USE sales", stream=1))
    assert conn.keyspace is None and use.keyspace is None
    conn.forward_to_server(use, changes_keyspace=True)
    assert conn.keyspace is None and conn.keyspace_in_doubt  # the request alone changes nothing
    resp = one_response(conn, w.result_set_keyspace("sales", stream=1))
    assert resp.message == SetKeyspaceResult("sales")
    assert conn.keyspace == "sales" and not conn.keyspace_in_doubt
    q = one_request(conn, w.query("SELECT * FROM orders", stream=2))
    assert q.keyspace == "sales"


def test_prepare_binds_prepared_id_to_query_and_keyspace() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    conn.receive_server_data(b"")
    conn.forward_to_server(one_request(conn, w.query("USE sales", stream=1)))
    conn.forward_to_client(one_response(conn, w.result_set_keyspace("sales", stream=1)))
    p = one_request(conn, w.prepare("SELECT * FROM orders WHERE id = ?", stream=5))
    assert p.message == Prepare(query="SELECT * FROM orders WHERE id = ?", keyspace=None)
    conn.forward_to_server(p)
    resp = one_response(conn, w.result_prepared(b"\x01\x02\x03", stream=5))
    assert resp.message == PreparedResult(prepared_id=b"\x01\x02\x03", result_metadata_id=None)
    assert resp.request is p
    stmt = conn.prepared[b"\x01\x02\x03"]
    assert (stmt.query, stmt.keyspace) == ("SELECT * FROM orders WHERE id = ?", "sales")
    e = one_request(conn, w.execute(b"\x01\x02\x03", stream=6))
    assert e.message == Execute(prepared_id=b"\x01\x02\x03", result_metadata_id=None)


def test_auth_flow_extracts_user_and_never_shows_password() -> None:
    conn = CQLConnection()
    conn.forward_to_server(one_request(conn, w.startup(4)))
    resp = one_response(conn, w.authenticate(4))
    conn.forward_to_client(resp)
    assert conn.phase is ConnectionPhase.AUTHENTICATING
    auth = one_request(conn, w.auth_response("alice", "s3cret-pw", stream=0))
    assert auth.message == AuthResponse(user="alice")
    assert "s3cret" not in repr(auth)
    assert conn.user is None  # not before the server agrees
    conn.forward_to_server(auth)
    one_response(conn, w.auth_success(4))
    assert conn.user == "alice" and state(conn)[0] is ConnectionPhase.ESTABLISHED


def test_sasl_plain_parsed_like_cassandra() -> None:
    from isthmus.cqlguard.protocol.messages import sasl_plain_user

    assert sasl_plain_user(b"\x00bob\x00pw") == "bob"
    assert sasl_plain_user(b"admin\x00bob\x00pw") == "bob"  # authzid is ignored, as by Cassandra
    # PlainTextSaslAuthenticator.decodeCredentials throws on a third NUL and on an empty user
    # or password: Cassandra logs nobody in, so there is no user.
    assert sasl_plain_user(b"a\x00b\x00c\x00pw") is None
    assert sasl_plain_user(b"\x00\x00pw") is None
    assert sasl_plain_user(b"\x00bob\x00") is None
    assert sasl_plain_user(b"bob\x00pw") is None
    assert sasl_plain_user(None) is None


def test_requests_out_of_phase_are_refused() -> None:
    conn = CQLConnection()
    with pytest.raises(UnexpectedMessage):
        conn.receive_client_data(w.query("SELECT * FROM system.local"))
    conn = CQLConnection()
    handshake(conn, 4)
    with pytest.raises(UnexpectedMessage):
        conn.receive_client_data(w.startup(4))


def test_version_mismatch_after_startup() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    with pytest.raises(ProtocolError):
        conn.receive_client_data(w.query("SELECT 1", version=5))


def test_duplicate_stream_in_flight_is_refused() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    a, b = conn.receive_client_data(w.query("SELECT 1 FROM a.b", stream=3) + w.query("SELECT 2 FROM a.b", stream=3))
    assert isinstance(a, Request) and isinstance(b, Request)
    conn.forward_to_server(a)
    with pytest.raises(UnexpectedMessage):
        conn.forward_to_server(b)


def test_frame_limit_checked_on_the_header() -> None:
    conn = CQLConnection(ConnectionConfig(max_frame_body=1024))
    handshake(conn, 4)
    header_only = struct.pack(">BBhBi", 4, 0, 1, 0x07, 1025)
    with pytest.raises(FrameTooLarge):
        conn.receive_client_data(header_only)  # refused before the body is buffered


def test_default_limit_is_256_mib() -> None:
    conn = CQLConnection()
    handshake(conn, 4)
    assert conn.receive_client_data(struct.pack(">BBhBi", 4, 0, 1, 0x07, 256 * 1024 * 1024)) == []
    conn = CQLConnection()
    handshake(conn, 4)
    with pytest.raises(FrameTooLarge):
        conn.receive_client_data(struct.pack(">BBhBi", 4, 0, 1, 0x07, 256 * 1024 * 1024 + 1))


def test_lz4_bomb_is_refused_before_allocation() -> None:
    conn = CQLConnection(ConnectionConfig(max_frame_body=1 << 20))
    conn.forward_to_server(one_request(conn, w.startup(4, compression="lz4")))
    conn.forward_to_client(one_response(conn, w.ready(4)))
    bomb = struct.pack(">I", 200 << 20) + b"\x00"
    with pytest.raises(ProtocolError):
        conn.receive_client_data(w.frame(4, 1, 0x07, bomb, flags=0x01))


# ------------------------------------------------------------------- handshake refusals


def test_snappy_startup_is_refused_by_the_proxy() -> None:
    conn = CQLConnection()
    [reply] = conn.receive_client_data(w.startup(4, compression="snappy", stream=2))
    assert isinstance(reply, ProxyReply) and "snappy" in reply.reason
    assert conn.phase is ConnectionPhase.HANDSHAKE  # the client may retry without compression
    # the reply is a v4 ERROR 0x000A on the same stream
    assert reply.data[:5] == bytes([0x84, 0, 0, 2, 0x00])
    assert struct.unpack(">i", reply.data[9:13])[0] == ErrorCode.PROTOCOL_ERROR
    handshake(conn, 4)


@pytest.mark.parametrize("version", [3, 6, 0x41])
def test_unsupported_versions_get_a_downgrade_hint(version: int) -> None:
    conn = CQLConnection()
    [reply] = conn.receive_client_data(w.startup(version))
    assert isinstance(reply, ProxyReply)
    assert "Invalid or unsupported protocol version" in reply.reason
    assert reply.data[0] == 0x80 | min(version, 5)


def test_v5_beta_flag_is_refused() -> None:
    conn = CQLConnection()
    [reply] = conn.receive_client_data(w.frame(5, 0, 0x01, w.string_map({"CQL_VERSION": "3.0.0"}), flags=0x10))
    assert isinstance(reply, ProxyReply)


def test_driver_downgrade_v5_error_then_v4_retry() -> None:
    conn = CQLConnection()
    conn.forward_to_server(one_request(conn, w.startup(5)))
    err_body = struct.pack(">i", 0x000A) + w.string(
        "Invalid or unsupported protocol version (5); supported versions are (3/v3, 4/v4)"
    )
    resp = one_response(conn, w.frame(4, 0, 0x00, err_body, response=True))
    assert isinstance(resp.message, Error) and resp.message.code == ErrorCode.PROTOCOL_ERROR
    conn.forward_to_client(resp)
    assert conn.phase is ConnectionPhase.HANDSHAKE and conn.version is None
    assert conn.client_framing is Framing.ENVELOPES
    handshake(conn, 4)
    assert conn.version == 4 and conn.server_framing is Framing.ENVELOPES


# ---------------------------------------------------------------------------------- v5


def test_v5_switches_to_segments_exactly_after_ready() -> None:
    conn = CQLConnection()
    opt = one_request(conn, w.frame(5, 0, 0x05, b""))  # OPTIONS before STARTUP: unframed
    conn.forward_to_server(opt)
    supported = w.frame(5, 0, 0x06, struct.pack(">H", 0), response=True)
    conn.forward_to_client(one_response(conn, supported))
    conn.forward_to_server(one_request(conn, w.startup(5)))
    ready = one_response(conn, w.ready(5))
    assert conn.server_framing is Framing.SEGMENTS
    assert conn.client_framing is Framing.ENVELOPES  # the client has not seen READY yet
    assert conn.forward_to_client(ready) == w.ready(5)
    assert state(conn)[1] is Framing.SEGMENTS

    env = w.query("SELECT * FROM ks.t", version=5, stream=4)
    q = one_request(conn, w.segment(env))
    assert q.raw == env and q.message == Query("SELECT * FROM ks.t", keyspace=None)
    assert conn.forward_to_server(q) == w.segment(env)
    result = w.result_void(5, stream=4)
    r = one_response(conn, w.segment(result))
    assert r.request is q and conn.forward_to_client(r) == w.segment(result)


def test_v5_ready_and_first_segment_in_one_read() -> None:
    conn = CQLConnection()
    conn.forward_to_server(one_request(conn, w.startup(5)))
    events = conn.receive_server_data(
        w.ready(5) + w.segment(w.frame(5, -1, 0x0C, w.string("STATUS_CHANGE"), response=True))
    )
    assert [e.opcode for e in events] == [Opcode.READY, Opcode.EVENT]


def test_v5_several_envelopes_in_one_segment() -> None:
    conn = CQLConnection()
    handshake(conn, 5)
    envs = [w.query(f"SELECT {i} FROM ks.t", version=5, stream=i) for i in range(3)]
    events = conn.receive_client_data(w.segment(b"".join(envs)))
    assert [e.raw for e in events if isinstance(e, Request)] == envs


def test_v5_multi_segment_envelope_reassembled_and_resplit() -> None:
    conn = CQLConnection()
    handshake(conn, 5)
    big = "SELECT * FROM ks.t WHERE k IN (" + ",".join(["'x'"] * 70000) + ")"
    env = w.query(big, version=5, stream=11)
    assert len(env) > 2 * 131071
    chunks = [env[i : i + 131071] for i in range(0, len(env), 131071)]
    wire = b"".join(w.segment(c, self_contained=False) for c in chunks)
    assert conn.receive_client_data(wire[:-1]) == []
    [q] = conn.receive_client_data(wire[-1:])
    assert isinstance(q, Request) and isinstance(q.message, Query) and q.message.query == big
    assert conn.forward_to_server(q) == wire


def test_v5_lz4_segments() -> None:
    conn = CQLConnection()
    handshake(conn, 5, "lz4")
    env = w.query("SELECT * FROM ks.t WHERE a = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'", version=5, stream=2)
    q = one_request(conn, w.lz4_segment(env))
    assert q.raw == env
    q2 = one_request(conn, w.lz4_segment(w.query("SELECT 1 FROM a.b", version=5, stream=3), store=True))
    assert isinstance(q2.message, Query)
    out = conn.forward_to_server(q)
    mirror = CQLConnection()
    handshake(mirror, 5, "lz4")
    [again] = mirror.receive_client_data(out)
    assert isinstance(again, Request) and again.raw == env


def test_v5_keyspace_flags() -> None:
    conn = CQLConnection()
    handshake(conn, 5)
    q = one_request(conn, w.segment(w.query("SELECT * FROM t", version=5, stream=1, keyspace="ks1")))
    assert q.message == Query("SELECT * FROM t", keyspace="ks1") and q.keyspace == "ks1"
    p = one_request(conn, w.segment(w.prepare("SELECT * FROM t", version=5, stream=2, keyspace="ks2")))
    assert p.message == Prepare("SELECT * FROM t", keyspace="ks2") and p.keyspace == "ks2"
    conn.forward_to_server(p)
    r = one_response(conn, w.segment(w.result_prepared(b"\x09", version=5, stream=2)))
    assert r.message == PreparedResult(prepared_id=b"\x09", result_metadata_id=b"meta")
    assert conn.prepared[b"\x09"].keyspace == "ks2"
    e = one_request(conn, w.segment(w.execute(b"\x09", version=5, stream=3)))
    assert e.message == Execute(prepared_id=b"\x09", result_metadata_id=b"meta")


def test_v5_auth_switches_after_authenticate() -> None:
    conn = CQLConnection()
    conn.forward_to_server(one_request(conn, w.startup(5, compression="lz4")))
    conn.forward_to_client(one_response(conn, w.authenticate(5)))
    assert conn.client_framing is Framing.SEGMENTS and conn.phase is ConnectionPhase.AUTHENTICATING
    auth = one_request(conn, w.lz4_segment(w.auth_response("bob", "hunter2", version=5)))
    conn.forward_to_server(auth)
    one_response(conn, w.lz4_segment(w.auth_success(5)))
    assert conn.user == "bob"


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_v5_deny_round_trip(compression: str | None) -> None:
    conn = CQLConnection()
    handshake(conn, 5, compression)
    q = one_request(conn, conn_segment(w.query("TRUNCATE ks.t", version=5, stream=300), compression))
    mirror = Mirror(5, compression)
    [resp] = mirror.decode_to_client(conn.deny(q, "denied"), 300)
    assert resp.stream == 300 and resp.version == 5
    assert resp.message == Error(code=ErrorCode.UNAUTHORIZED, message="denied")
    [resp] = mirror.decode_to_client(conn.unprepared(q, b"\x01"), 300)
    assert resp.message == Error(
        code=ErrorCode.UNPREPARED, message="Prepared query with ID not found", unprepared_id=b"\x01"
    )


def conn_segment(env: bytes, compression: str | None) -> bytes:
    return w.lz4_segment(env) if compression else w.segment(env)


def test_v5_bad_crc_is_refused() -> None:
    from isthmus.cqlguard.protocol import ChecksumMismatch

    conn = CQLConnection()
    handshake(conn, 5)
    seg = bytearray(w.segment(w.query("SELECT 1 FROM a.b", version=5)))
    seg[-1] ^= 0xFF
    with pytest.raises(ChecksumMismatch):
        conn.receive_client_data(bytes(seg))
    conn = CQLConnection()
    handshake(conn, 5)
    seg = bytearray(w.segment(w.query("SELECT 1 FROM a.b", version=5)))
    seg[0] ^= 0x01
    with pytest.raises(ChecksumMismatch):
        conn.receive_client_data(bytes(seg))


def test_v5_compression_flag_on_envelope_refused() -> None:
    conn = CQLConnection()
    handshake(conn, 5)
    with pytest.raises(ProtocolError):
        conn.receive_client_data(w.segment(w.frame(5, 1, 0x07, w.query_body("SELECT 1", 5), flags=0x01)))


def test_v5_self_contained_segment_with_partial_envelope_refused() -> None:
    conn = CQLConnection()
    handshake(conn, 5)
    env = w.query("SELECT 1 FROM a.b", version=5)
    with pytest.raises(ProtocolError):
        conn.receive_client_data(w.segment(env[:-2]))


def test_batch_v4_and_v5() -> None:
    for version in (4, 5):
        conn = CQLConnection()
        handshake(conn, version)
        body = bytes([1]) + struct.pack(">H", 2)
        body += b"\x00" + w.long_string("INSERT INTO t (a) VALUES (?)") + struct.pack(">H", 1) + w.nbytes(b"1")
        body += b"\x01" + w.short_bytes(b"\xab") + struct.pack(">H", 0)
        body += struct.pack(">H", 1)
        if version >= 5:
            body += struct.pack(">I", 0x80 | 0x20) + struct.pack(">q", 123) + w.string("ks9")
        else:
            body += bytes([0x20]) + struct.pack(">q", 123)
        env = w.frame(version, 5, 0x0D, body)
        data = w.segment(env) if version >= 5 else env
        b = one_request(conn, data)
        assert b.message == Batch(
            batch_type=1,
            statements=(BatchQuery("INSERT INTO t (a) VALUES (?)"), BatchPrepared(b"\xab")),
            keyspace="ks9" if version >= 5 else None,
        )
