"""The guard session without sockets: the fast path decides exactly as the full decode does.

Two :class:`~isthmus.cqlguard.session.GuardSession` objects, one as production runs it (a
request this connection already allowed is decided from its header and key alone) and one
with ``fast_path=False`` (every request decoded and checked), are fed the same bytes from
the same client and the same server. For every generated conversation (v4/v5, with and
without lz4; QUERY and EXECUTE with every option flag; PREPARE; USE, answered at once or
later, with requests held behind it; several requests in one segment; policy reloads; a
stream reused while in flight) both give the same bytes to the server, the same bytes to the
client, the same flow lines, the same error and the same counters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import event, given, settings
from hypothesis import strategies as st

from isthmus.cqlguard.counters import Counters
from isthmus.cqlguard.guard import Guard
from isthmus.cqlguard.peer import Peer
from isthmus.cqlguard.policy import Policy
from isthmus.cqlguard.protocol.segments import SegmentBuffer
from isthmus.cqlguard.session import GuardSession, Output
from isthmus.cqlguard.settings import Endpoint
from protocol import cqlwire as w

POLICY = """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["ks.*", "other.t"]
      - actions: [write]
        tables: ["ks.open"]
"""
#: The reloaded policy: reads of ``ks.t`` only.
NARROW = """
rules:
  - name: narrow
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["ks.t"]
"""
TEXTS = [
    "SELECT * FROM t",
    "SELECT * FROM ks.t",
    "SELECT * FROM other.t",
    "SELECT * FROM secret.t",
    "SELECT v FROM ks.t WHERE k = ?",
    "INSERT INTO open (k, v) VALUES (?, ?)",
    "INSERT INTO ks.open (k, v) VALUES (1, 'x')",
    "UPDATE t SET v = 'x' WHERE k = 1",
    "SELECT * FROM u",
]
KEYSPACES = ["ks", "other", "secret"]
PEER = Peer(ipaddress.ip_address("127.0.0.1"), "127.0.0.1", 40000)
UPSTREAM = Endpoint("127.0.0.2", 9042)
WALL = 1_700_000_000.0

VALUES, SKIP, PAGE_SIZE, PAGING, SERIAL, TIMESTAMP, NAMES, KEYSPACE, NOW = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x100
)


def options(version: int, flags: int, keyspace: str) -> bytes:
    """``<query_parameters>`` as Cassandra's QueryOptions.Codec reads them (consistency ONE)."""
    rest = b""
    if flags & VALUES:
        rest += struct.pack(">H", 2) + b"".join(
            (w.string(f"c{i}") if flags & NAMES else b"") + w.nbytes(b"v") for i in range(2)
        )
    if flags & PAGE_SIZE:
        rest += struct.pack(">i", 100)
    if flags & PAGING:
        rest += w.nbytes(b"state")
    if flags & SERIAL:
        rest += struct.pack(">H", 0x0008)
    if flags & TIMESTAMP:
        rest += struct.pack(">q", 1_700_000_000_000_000)
    if flags & KEYSPACE:
        rest += w.string(keyspace)
    if flags & NOW:
        rest += struct.pack(">i", 1_700_000_000)
    packed = struct.pack(">I", flags) if version >= 5 else struct.pack(">B", flags)
    return struct.pack(">H", 1) + packed + rest


def prepared_id(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


@dataclass(frozen=True)
class Req:
    """One request: what it is, its option flags, header flags, and whether to lz4 it (v4)."""

    kind: str  # query | execute | prepare | use
    text: str
    flags: int = 0
    keyspace: str = "ks"
    tracing: bool = False
    compress: bool = False


@dataclass
class Conversation:
    version: int
    lz4: bool
    sessions: tuple[GuardSession, GuardSession]
    guards: tuple[Guard, Guard]
    next_stream: int = 1
    #: What the server will answer, by stream.
    waiting: dict[int, Req] = field(default_factory=dict)
    #: USEs forwarded and not answered yet (answered when the script says so).
    uses: list[int] = field(default_factory=list)
    over: bool = False

    def both(self, call: Callable[[GuardSession], Output]) -> Output:
        fast, full = (call(s) for s in self.sessions)
        assert fast is not full
        assert fast.upstream == full.upstream
        assert fast.client == full.client
        assert fast.flows == full.flows
        assert str(fast.error) == str(full.error)
        assert fast.progress == full.progress
        assert fast.holding == full.holding == self.sessions[0].holding
        if fast.error is not None:
            self.over = True
        return fast

    def envelope(self, req: Req, stream: int) -> bytes:
        v = self.version
        if req.kind in ("query", "use"):
            text = f"USE {req.keyspace}" if req.kind == "use" else req.text
            opcode, body = 0x07, w.long_string(text) + options(v, req.flags, req.keyspace)
        elif req.kind == "execute":
            opcode, body = 0x0A, w.short_bytes(prepared_id(req.text))
            if v >= 5:
                body += w.short_bytes(b"meta")
            body += options(v, req.flags & ~KEYSPACE & ~NAMES, req.keyspace)
        else:
            return w.prepare(req.text, v, stream=stream)
        flags = 0x02 if req.tracing else 0
        if req.compress and v == 4 and self.lz4:
            body, flags = w.lz4_body(body), flags | 0x01
        return w.frame(v, stream, opcode, body, flags=flags)

    def framed(self, envelopes: bytes) -> bytes:
        if self.version < 5:
            return envelopes
        return w.lz4_segment(envelopes) if self.lz4 else w.segment(envelopes)

    def send(self, reqs: list[Req], *, stream: int | None = None) -> None:
        streams = []
        for _ in reqs:
            streams.append(self.next_stream if stream is None else stream)
            self.next_stream += 1
        data = self.framed(b"".join(self.envelope(r, s) for r, s in zip(reqs, streams, strict=True)))
        for r, s in zip(reqs, streams, strict=True):
            self.waiting.setdefault(s, r)
        out = self.both(lambda session: session.receive_client(data, 1.0, WALL))
        self.upstream(out.upstream)

    def upstream(self, data: bytes) -> None:
        """The server reads what the guard forwarded and answers it (a USE when told to)."""
        answers = b""
        for stream in self.streams_in(data):
            # (None: a request reused a stream held behind a USE, and went on once the USE was answered.)
            req = self.waiting.pop(stream, None)
            if req is None:
                answers += w.result_void(self.version, stream=stream)
            elif req.kind == "use":
                self.uses.append(stream)
                self.waiting[stream] = req
            elif req.kind == "prepare":
                answers += w.result_prepared(prepared_id(req.text), self.version, stream=stream)
            else:
                answers += w.result_void(self.version, stream=stream)
        if answers and not self.over:
            self.answer(answers)

    def answer(self, envelopes: bytes) -> None:
        out = self.both(lambda session: session.receive_upstream(self.framed(envelopes), 2.5, WALL + 1))
        self.upstream(out.upstream)

    def answer_uses(self) -> None:
        if self.uses and not self.over:
            answers = b""
            for stream in self.uses:
                answers += w.result_set_keyspace(self.waiting.pop(stream).keyspace, self.version, stream=stream)
            self.uses = []
            self.answer(answers)

    def streams_in(self, data: bytes) -> list[int]:
        if self.version >= 5:
            segments = SegmentBuffer(compressed=self.lz4, initial=data)
            payload = b""
            while (segment := segments.next()) is not None:
                payload += segment.payload
        else:
            payload = data
        streams = []
        pos = 0
        while pos < len(payload):
            _, _, stream, _, length = struct.unpack_from(">BBhBi", payload, pos)
            streams.append(stream)
            pos += 9 + length
        return streams


def established(version: int, lz4: bool) -> Conversation:
    guards = (Guard(Policy.from_yaml(POLICY), upstream=str(UPSTREAM)), Guard(Policy.from_yaml(POLICY),
                                                                              upstream=str(UPSTREAM)))
    sessions = (
        GuardSession(guards[0], peer=PEER, upstream=UPSTREAM, counters=Counters()),
        GuardSession(guards[1], peer=PEER, upstream=UPSTREAM, counters=Counters(), fast_path=False),
    )
    conv = Conversation(version, lz4, sessions, guards)
    startup = w.startup(version, compression="lz4" if lz4 else None)
    out = conv.both(lambda s: s.receive_client(startup, 0.0, WALL))
    assert out.upstream == startup
    out = conv.both(lambda s: s.receive_upstream(w.ready(version, 0), 0.0, WALL))
    assert out.client == w.ready(version, 0)
    return conv


def request(version: int, lz4: bool) -> st.SearchStrategy[Req]:
    flag_bits = [VALUES, SKIP, PAGE_SIZE, PAGING, SERIAL, TIMESTAMP, NAMES, KEYSPACE] + ([NOW] if version >= 5 else [])
    flags = st.lists(st.sampled_from(flag_bits), max_size=4).map(
        lambda bits: sum(set(bits)) if VALUES in bits or NAMES not in bits else sum(set(bits) - {NAMES})
    )
    return st.builds(
        Req,
        kind=st.sampled_from(["query", "query", "execute", "execute", "prepare", "use"]),
        text=st.sampled_from(TEXTS),
        flags=flags,
        keyspace=st.sampled_from(KEYSPACES),
        tracing=st.booleans(),
        compress=st.booleans() if version == 4 and lz4 else st.just(False),
    )


@st.composite
def conversations(draw: st.DrawFn) -> tuple[int, bool, list[tuple[str, list[Req]]]]:
    version = draw(st.sampled_from([4, 5]))
    lz4 = draw(st.booleans())
    step = st.one_of(
        st.tuples(st.just("send"), st.lists(request(version, lz4), min_size=1, max_size=3)),
        st.tuples(st.just("answer uses"), st.just([])),
        st.tuples(st.just("reload"), st.just([])),
        st.tuples(st.just("reuse"), st.just([])),
    )
    return version, lz4, draw(st.lists(step, min_size=1, max_size=40))


@settings(max_examples=300, deadline=None)
@given(conversations())
def test_the_fast_path_decides_as_the_full_decode_does(case: tuple[int, bool, list[tuple[str, list[Req]]]]) -> None:
    version, lz4, steps = case
    conv = established(version, lz4)
    # A keyspace and some prepared statements to start with (the steps may change both).
    conv.send([Req("use", "", keyspace="ks")])
    conv.answer_uses()
    conv.send([Req("prepare", text) for text in TEXTS[::2]])
    reloads = 0
    for what, reqs in steps:
        if conv.over:
            break
        if what == "send":
            # Each request twice: the second time the fast path may decide it.
            conv.send(reqs)
            if not conv.over:
                conv.send(reqs)
        elif what == "answer uses":
            conv.answer_uses()
        elif what == "reload":
            reloads += 1
            for guard in conv.guards:
                guard.policy = Policy.from_yaml(NARROW if reloads % 2 else POLICY)
        elif conv.uses:  # reuse a stream still in flight: both refuse it and close
            conv.send([Req("query", "SELECT * FROM ks.t")], stream=conv.uses[0])
    conv.answer_uses()
    fast, full = conv.sessions
    assert full.fast_decisions == 0
    event(f"fast-path decisions: {'some' if fast.fast_decisions else 'none'}")
    assert fast.abandon() == full.abandon()
    a, b = fast.counters, full.counters
    assert {k: n for k, n in a.requests.items() if n} == {k: n for k, n in b.requests.items() if n}
    assert a.latency_counts == b.latency_counts and a.latency_sum == b.latency_sum
    assert (a.client_in, a.client_out, a.upstream_in, a.upstream_out) == (
        b.client_in, b.client_out, b.upstream_in, b.upstream_out
    )


def test_a_repeated_request_is_decided_on_the_fast_path_with_the_same_outcome() -> None:
    for version, lz4 in ((4, False), (4, True), (5, False), (5, True)):
        conv = established(version, lz4)
        conv.send([Req("prepare", "SELECT v FROM ks.t WHERE k = ?")])
        execute = Req("execute", "SELECT v FROM ks.t WHERE k = ?", flags=VALUES | PAGE_SIZE)
        query = Req("query", "SELECT * FROM ks.t", flags=PAGE_SIZE | TIMESTAMP)
        denied = Req("query", "SELECT * FROM secret.t")
        for _ in range(3):
            conv.send([execute, query, denied])
        fast, full = conv.sessions
        # Two allowed requests, repeated twice each after the first time; a denial is never cached.
        assert (fast.fast_decisions, full.fast_decisions) == (4, 0)
        assert fast.counters.requests[("allowed", "select")] == 7  # and the PREPARE
        assert fast.counters.requests[("denied", "select")] == 3
        assert not conv.over


def test_requests_behind_a_use_are_held_until_it_is_answered_then_decided_in_the_new_keyspace() -> None:
    conv = established(5, False)
    conv.send([Req("use", "", keyspace="other")])
    fast, _ = conv.sessions
    assert not fast.holding
    conv.send([Req("query", "SELECT * FROM t"), Req("query", "SELECT * FROM ks.t")])
    # The unqualified SELECT waits (and so does what follows it); the client is not read meanwhile.
    assert fast.holding and fast.busy
    conv.answer_uses()
    assert not fast.holding
    assert fast.abandon() == []  # everything forwarded was answered
    assert fast.counters.requests[("allowed", "select")] == 2
    assert fast.conn.keyspace == "other"


def test_lz4_bodies_are_read_on_the_fast_path_too() -> None:
    conv = established(4, True)
    query = Req("query", "SELECT * FROM ks.t", compress=True)
    conv.send([query])
    conv.send([query])
    assert conv.sessions[0].fast_decisions == 1


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 5]), st.booleans(), st.lists(st.binary(max_size=300), max_size=6), st.booleans())
def test_arbitrary_bytes_from_either_side_end_in_an_output_never_an_exception(
    version: int, lz4: bool, parts: list[bytes], from_server: bool
) -> None:
    conv = established(version, lz4)
    session = conv.sessions[0]
    before = session.counters.upstream_out
    for part in parts:
        out = session.receive_upstream(part, 1.0, WALL) if from_server else session.receive_client(part, 1.0, WALL)
        if out.error is not None:
            # A refusal answers on the offending stream, or says nothing; the pump closes.
            assert out.client == b"" or out.error.reply is None or out.client.endswith(out.error.reply)
            break
    if from_server:
        assert session.counters.upstream_out == before  # the server's bytes never go back upstream
