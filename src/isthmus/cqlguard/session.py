"""One client connection through the guard, sans-IO: bytes in from either side, bytes and records out.

Owns: :class:`GuardSession`, the whole of what the guard does with one connection's bytes
(h11's ``Connection`` one level up: :class:`~isthmus.cqlguard.protocol.CQLConnection` frames
and decodes, :class:`~isthmus.cqlguard.guard.Guard` decides, the session acts)::

    session = GuardSession(guard, peer=peer, upstream=endpoint, counters=counters)
    out = session.receive_client(data, now, wall)    # -> Output
    write out.upstream to the upstream, out.client to the client, out.flows to the flow log;
    close the connection when out.error is set
    out = session.receive_upstream(data, now, wall)  # the same, for the server's bytes

``now`` is a monotonic clock reading (upstream latency), ``wall`` the time of day (flow lines);
the session reads no clock, opens no socket, logs nothing and keeps no timer. Reading control,
back-pressure and time-outs belong to the pump (:mod:`isthmus.cqlguard.pump`), which reads
:attr:`Output.holding` (do not read the client) and :attr:`GuardSession.busy` (not idle).

The fast path: an EXECUTE of a prepared id, or a QUERY text in a keyspace, that this session
already allowed under the same policy (``Guard.generation``) and the same user, is decided
from its header and key alone (:meth:`CQLConnection.fast_request`) and goes on as the client
framed it; its decision, flow template and metric key were rendered once (:mod:`.known`).
Anything else is decoded and checked. ``tests/guard/test_session.py`` shows with hypothesis
that both paths give the same bytes, flow lines and counters for well-formed requests (every
option flag, v4/v5, lz4, USE, reloads).

The USE hold queue: while a USE is unanswered, a request naming a table without a keyspace
is held (the server may resolve it against either keyspace) and the client is not read; the
server's answer to the USE releases the queue, in order. More than ``max_held`` waiting: the
next is answered with an error.

A request decided on the fast path is read only as far as its key (the prepared id, or the
query text and flags: a per-request keyspace or an unknown flag sends it to the full decode);
the rest of its body is Cassandra's to parse, as the values of an EXECUTE always were. Every
request is framed by the codec before anything is forwarded, so a malformed frame, segment
or envelope header never reaches Cassandra.

Failing closed: a :class:`~isthmus.cqlguard.protocol.ProtocolError` from the client is
answered on its stream when it can be (its ``reply``), recorded as an ``ERROR`` flow and set
as :attr:`Output.error`; what was decided before it still goes on, the bad bytes never do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

from isthmus.cqlguard.classify import Classification
from isthmus.cqlguard.counters import LATENCY_BUCKETS, Counters
from isthmus.cqlguard.flows import Flow, FlowTemplate, FlowVerdict, l7_action
from isthmus.cqlguard.guard import Check, Disposition, Guard
from isthmus.cqlguard.known import KnownDecision, KnownDecisions
from isthmus.cqlguard.peer import Address, Peer
from isthmus.cqlguard.policy import Identity
from isthmus.cqlguard.protocol import (
    Chunk,
    ConnectionConfig,
    CQLConnection,
    Opcode,
    ProtocolError,
    ProxyReply,
    Request,
)

__all__ = ["GuardSession", "Output", "Peer"]

_EXECUTE = int(Opcode.EXECUTE)


class Output:
    """What one call of :class:`GuardSession` produced, to be written in this order:
    ``upstream`` to the server, ``client`` to the client, ``flows`` (rendered lines) to the
    flow log. ``error``: the session is over (close the connection once these are written).
    ``progress``: (client bytes) at least one whole frame or segment was read. ``holding``:
    requests wait for a USE, so read nothing more from the client until an output says not.

    Each session reuses one ``Output`` (the hot path allocates none): read it before the
    session's next call.
    """

    __slots__ = ("client", "error", "flows", "holding", "progress", "upstream")

    def __init__(self) -> None:
        self.upstream = b""
        self.client = b""
        self.flows: list[str] = []
        self.error: ProtocolError | None = None
        self.progress = False
        self.holding = False


class GuardSession:
    """One client connection's guard state and decisions. See the module docstring.

    ``fast_path=False`` decodes and checks every request (the reference the fast path is
    tested against; production leaves it on).
    """

    def __init__(
        self,
        guard: Guard,
        *,
        peer: Peer,
        upstream: Address,
        counters: Counters,
        record_flows: bool = True,
        max_frame_body: int = 64 * 1024 * 1024,
        max_held: int = 1024,
        fast_path: bool = True,
    ) -> None:
        self.guard = guard
        self.peer = peer
        self.upstream = upstream
        self.counters = counters
        self.conn = CQLConnection(ConnectionConfig(max_frame_body=max_frame_body))
        self._record_flows = record_flows
        self._max_held = max_held
        self._fast_path = fast_path
        self._identity = Identity(address=peer.address, principal=peer.principal, subject=peer.subject)
        #: Forwarded requests awaiting their answer: (decision, wall time, monotonic start).
        self._inflight: dict[int, tuple[KnownDecision, float, float]] = {}
        self._held: deque[Request] = deque()
        self._known = KnownDecisions(guard)
        #: Requests decided on the fast path so far.
        self.fast_decisions = 0
        # What the current call produced (see Output).
        self._up: list[bytes] = []
        self._client: list[bytes] = []
        self._flows: list[str] = []
        self._out = Output()

    @property
    def holding(self) -> bool:
        """Requests wait for a USE to be answered: read nothing more from the client."""
        return bool(self._held)

    @property
    def busy(self) -> bool:
        """Something is in flight or held: the client waits for the server, it is not idle."""
        return bool(self.conn.in_flight_count or self._held)

    # ---------------------------------------------------------------- client -> upstream

    def receive_client(self, data: bytes, now: float, wall: float) -> Output:
        """Bytes from the client, read at ``now`` (monotonic) / ``wall`` (time of day)."""
        self.counters.client_in += len(data)
        error: ProtocolError | None = None
        progress = False
        try:
            chunks = self.conn.receive_client_chunks(data)
            if chunks:
                progress = True
                self._handle(chunks, now, wall)
        except ProtocolError as exc:
            self._refused(exc, wall)
            error = exc
        return self._output(error, progress)

    def _handle(self, chunks: list[Chunk], now: float, wall: float) -> None:
        """Decide every envelope of ``chunks``; the bytes for the upstream go to ``self._up``."""
        conn = self.conn
        inflight = self._inflight
        requests = self.counters.requests
        up = self._up
        self._known.refresh()
        hot_exec, hot_query = self._known.executes, self._known.queries  # (cleared in place, never replaced)
        fast_path = self._fast_path
        for wire, envelopes in chunks:
            sent: list[bytes] = []
            for raw in envelopes:
                # The fast path: a request this session had allowed, under the same policy.
                fast = conn.fast_request(raw) if fast_path and not self._held else None
                if fast is not None:
                    stream, opcode, key = fast
                    if opcode == _EXECUTE:
                        known = hot_exec.get(key)
                    else:
                        known = None if conn.keyspace_in_doubt else hot_query.get((key, conn.keyspace))
                    if known is not None:
                        conn.forward_fast(stream)
                        inflight[stream] = (known, wall, now)
                        requests[known.counter] += 1
                        self.fast_decisions += 1
                        sent.append(raw)
                        continue
                event = conn.decode_client(raw)
                if isinstance(event, ProxyReply):
                    self._to_client(event.data)
                elif self._held or not self._dispatch(event, sent, now, wall):
                    self._hold(event, wall)
            if sent:
                up.append(conn.chunk_for_server(wire, sent, whole=len(sent) == len(envelopes)))

    def _dispatch(self, request: Request, sent: list[bytes], now: float, wall: float) -> bool:
        """Check and act on one request; False if it must wait for a USE (nothing was done).

        A forwarded request's envelope is appended to ``sent``; the caller frames it.
        """
        conn = self.conn
        check = self.guard.check(
            request,
            self._identity_now(),
            connection_keyspace=conn.keyspace,
            keyspace_in_doubt=conn.keyspace_in_doubt,
        )
        step = check.step
        if step is Disposition.PASS:
            conn.forward(request)
            sent.append(request.raw)
        elif step is Disposition.FORWARD:
            conn.forward(check.request, changes_keyspace=check.changes_keyspace)
            sent.append(check.request.raw)
            known = self._remember(check)
            self._inflight[request.stream] = (known, wall, now)
            self.counters.count_request("allowed", known.action)
        elif step is Disposition.DENY:
            assert check.decision is not None
            self._to_client(conn.deny(request, f"cqlguard: {check.decision.reason}"))
            self.counters.count_request("denied", l7_action(check.classification))
            self._flow(check, FlowVerdict.DENIED, wall, check.decision.rule, check.decision.reason)
        elif step is Disposition.UNPREPARED:
            assert check.unprepared_id is not None
            self._to_client(conn.unprepared(request, check.unprepared_id))
            self.counters.count_request("error", "unknown")
            reason = f"prepared id {check.unprepared_id.hex()} unknown to the guard: answered Unprepared"
            self._flow(check, FlowVerdict.ERROR, wall, None, reason)
        else:
            return False
        return True

    def _hold(self, request: Request, wall: float) -> None:
        if len(self._held) >= self._max_held:
            reason = "too many requests waiting for a USE to complete"
            self._to_client(self.conn.deny(request, f"cqlguard: {reason}"))
            self.counters.count_request("error", "unknown")
            kind = request.opcode.name.lower()
            self._flow(Check(Disposition.HOLD, request, kind), FlowVerdict.ERROR, wall, None, reason)
            return
        self._held.append(request)

    def _release_held(self, now: float, wall: float) -> None:
        sent: list[bytes] = []
        while self._held and not self.conn.keyspace_in_doubt:
            if not self._dispatch(self._held[0], sent, now, wall):
                break  # a released USE made the keyspace doubtful again
            self._held.popleft()
        if sent:
            self._up.append(self.conn.chunk_for_server(b"", sent, whole=False))

    def _refused(self, exc: ProtocolError, wall: float) -> None:
        """Fail closed on a request the guard will not read: answer it with Cassandra's
        ``Protocol error`` when it can be answered and record why (the caller closes)."""
        if exc.reply is not None:
            self._to_client(exc.reply)
        if exc.stream is not None:
            kind = Opcode(exc.opcode).name.lower() if exc.opcode is not None else "unknown"
            self.counters.count_request("error", "unknown")
            if self._record_flows:
                flow = self._new_flow(kind, None, exc.stream, FlowVerdict.ERROR, wall, None,
                                      f"refused, connection closed: {exc}")
                self._flows.append(flow.to_line())

    def _remember(self, check: Check) -> KnownDecision:
        """A :class:`KnownDecision` for an allowed check, kept for the fast path when it may repeat."""
        known = KnownDecision(check, self._template(check) if self._record_flows else None, self.counters)
        self._known.remember(check, known)
        return known

    def _identity_now(self) -> Identity:
        user = self.conn.user
        if user != self._identity.user:
            peer = self.peer
            self._identity = Identity(address=peer.address, user=user, principal=peer.principal, subject=peer.subject)
            self._known.forget()
        return self._identity

    # ---------------------------------------------------------------- upstream -> client

    def receive_upstream(self, data: bytes, now: float, wall: float) -> Output:
        """Bytes from the server, read at ``now`` / ``wall``: relayed as they came, answers
        matched to their requests, held requests released once a USE is answered."""
        conn = self.conn
        self.counters.upstream_in += len(data)
        error: ProtocolError | None = None
        try:
            wire, decoded, answered = conn.relay_server_data(data)
            for response in decoded:
                self.guard.learn(response)
            if self._inflight and answered:
                self._finish(answered, now)
            if wire:
                self._to_client(wire)
            if self._held and not conn.keyspace_in_doubt:
                self._release_held(now, wall)
        except ProtocolError as exc:
            error = exc
        return self._output(error, False)

    def _finish(self, answered: list[int], now: float) -> None:
        """Latency and flow lines of the forwarded requests answered now."""
        inflight = self._inflight
        counters = self.counters
        counts = counters.latency_counts
        lines = self._flows
        total = 0.0
        for stream in answered:
            entry = inflight.pop(stream, None)
            if entry is None:
                continue
            known, wall, started = entry
            elapsed = now - started
            counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            total += elapsed
            if known.template is not None:
                lines.append(known.template.render(wall, stream, elapsed * 1000.0))
        counters.latency_sum += total

    def abandon(self) -> list[str]:
        """The connection is gone: flow lines of the forwarded requests never answered."""
        lines: list[str] = []
        if self._record_flows:
            for stream, (known, wall, _) in self._inflight.items():
                reason = f"{known.decision.reason}; connection closed before the server answered"
                flow = self._new_flow(known.kind, known.classification, stream, FlowVerdict.ALLOWED, wall,
                                      known.decision.rule, reason)
                lines.append(flow.to_line())
        self._inflight.clear()
        return lines

    # ------------------------------------------------------------------------ plumbing

    def _to_client(self, data: bytes) -> None:
        self._client.append(data)

    def _output(self, error: ProtocolError | None, progress: bool) -> Output:
        out = self._out
        up, client, flows = self._up, self._client, self._flows
        if up:
            out.upstream = upstream = up[0] if len(up) == 1 else b"".join(up)
            self.counters.upstream_out += len(upstream)
            self._up = []
        else:
            out.upstream = b""
        if client:
            out.client = to_client = client[0] if len(client) == 1 else b"".join(client)
            self.counters.client_out += len(to_client)
            self._client = []
        else:
            out.client = b""
        if flows:
            out.flows = flows
            self._flows = []
        elif out.flows:
            out.flows = []
        out.error = error
        out.progress = progress
        out.holding = bool(self._held)
        return out

    def _new_flow(self, kind: str, classification: Classification | None, stream: int,
                  verdict: FlowVerdict, wall: float, rule: str | None, reason: str) -> Flow:
        peer = self.peer
        return Flow(
            time=wall,
            verdict=verdict,
            source_ip=peer.ip,
            source_port=peer.port,
            user=self._identity.user,
            principal=peer.principal,
            subject=peer.subject,
            destination_ip=self.upstream.host,
            destination_port=self.upstream.port,
            kind=kind,
            stream=stream,
            classification=classification,
            rule=rule,
            reason=reason,
        )

    def _template(self, check: Check) -> FlowTemplate:
        decision = check.decision
        assert decision is not None
        return self._new_flow(check.kind, check.classification, check.request.stream, FlowVerdict.ALLOWED, 0.0,
                              decision.rule, decision.reason).template()

    def _flow(self, check: Check, verdict: FlowVerdict, wall: float, rule: str | None, reason: str) -> None:
        if not self._record_flows:
            return
        flow = self._new_flow(check.kind, check.classification, check.request.stream, verdict, wall, rule, reason)
        self._flows.append(flow.to_line())
