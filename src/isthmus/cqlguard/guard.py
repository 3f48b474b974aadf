"""The decision step of the proxy: one request in, one :class:`Check` out (no sockets, no clock).

Owns: turning a decoded :class:`~isthmus.cqlguard.protocol.Request` into a classification
(QUERY and PREPARE text; EXECUTE and BATCH children through the proxy-wide prepared map),
asking the current :class:`~isthmus.cqlguard.policy.Policy`, and telling the session what to
do: forward, deny, answer Unprepared, hold, or pass through (handshake, OPTIONS, REGISTER).
Also owns :class:`PreparedStatements`, the map filled from the server's Prepared results.
Must not: read or write sockets, sleep or log; the session (``session.py``) acts on the
check, and the pump (``pump.py``) does all I/O.

Rules (from the codec's notes):

* EXECUTE is checked against the statement the *server* confirmed preparing (query text and
  the keyspace it was prepared in), never against anything the client claims. An id the
  proxy has not seen prepared is answered Unprepared, so the driver re-prepares through us.
* A BATCH is one decision over all its children (``merge``); any denied child denies it all.
* While a USE is in flight (``keyspace_in_doubt``) the server may resolve an unqualified
  name against either keyspace, so a request with an unqualified name is *held* until the
  server answers the USE; fully qualified requests go on. EXECUTE is never held: a prepared
  statement's keyspace was fixed when it was prepared.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from isthmus.cqlguard.classify import (
    GLOBAL_ACTIONS,
    Classification,
    Classified,
    CqlAction,
    Unclassifiable,
    classify,
    merge,
)
from isthmus.cqlguard.policy import Identity, Policy, PolicyDecision
from isthmus.cqlguard.protocol import (
    Batch,
    BatchPrepared,
    Execute,
    Prepare,
    PreparedResult,
    PreparedStatement,
    Query,
    Request,
    Response,
)

__all__ = ["Check", "Disposition", "Guard", "PreparedStatements", "classify_cached"]

_CLASSIFY_CACHE = 8192
_DECISION_CACHE = 8192


#: Longer statements are classified every time (they are rarely repeated, and the cache would
#: hold them all).
_CACHEABLE_QUERY = 8192


@lru_cache(maxsize=_CLASSIFY_CACHE)
def _classify_memo(query: str, keyspace: str | None) -> Classification:
    return classify(query, keyspace=keyspace)


def classify_cached(query: str, keyspace: str | None) -> Classification:
    """``classify`` is pure, and drivers send the same strings again and again."""
    if len(query) > _CACHEABLE_QUERY:
        return classify(query, keyspace=keyspace)
    return _classify_memo(query, keyspace)


class Disposition(Enum):
    """What the session does with a request."""

    FORWARD = "forward"  # policy allowed it: send it to the server
    DENY = "deny"  # policy denied it: answer Unauthorized, never send it
    UNPREPARED = "unprepared"  # unknown prepared id: answer Unprepared (the driver re-prepares)
    HOLD = "hold"  # wait until the server answers the USE in flight, then check again
    PASS = "pass"  # not subject to policy (STARTUP, AUTH_RESPONSE, OPTIONS, REGISTER)


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome for one request.

    ``request`` is the request to forward (its ``keyspace`` re-resolved when it was held);
    ``kind`` is the opcode in lower case (``query``, ``prepare``, ``execute``, ``batch``).
    """

    step: Disposition
    request: Request
    kind: str
    classification: Classification | None = None
    decision: PolicyDecision | None = None
    changes_keyspace: bool = False
    unprepared_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    statement: PreparedStatement
    classification: Classification


class PreparedStatements:
    """Statements the upstream servers confirmed preparing, by (upstream node, prepared id).

    Proxy-wide and shared by every connection (Cassandra's prepared ids are per node, not per
    connection). Bounded: the least recently used entry goes first; a forgotten id costs one
    Unprepared round trip, never a wrong decision.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        #: How many times an id was confirmed for a statement other than the one it stood for: a session's
        #: fast-path decisions by prepared id are forgotten when this moves.
        self.changes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, upstream: str, prepared_id: bytes, statement: PreparedStatement) -> None:
        key = (upstream, prepared_id)
        classification = classify_cached(statement.query, statement.keyspace)
        before = self._entries.get(key)
        if before is not None and before.statement != statement:
            self.changes += 1
        self._entries[key] = _Entry(statement, classification)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def lookup(self, upstream: str, prepared_id: bytes) -> PreparedStatement | None:
        entry = self._get(upstream, prepared_id)
        return entry.statement if entry is not None else None

    def _get(self, upstream: str, prepared_id: bytes) -> _Entry | None:
        key = (upstream, prepared_id)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry


def _uses_connection_keyspace(classification: Classification) -> bool:
    """True if some statement has an unqualified name (classified with no keyspace)."""
    if isinstance(classification, Unclassifiable):
        return False
    return any(s.keyspace is None and s.action not in GLOBAL_ACTIONS for s in classification.statements)


def _is_use(classification: Classification) -> bool:
    return isinstance(classification, Classified) and any(s.action is CqlAction.USE for s in classification.statements)


class Guard:
    """Classification + policy + prepared map for one upstream node. See the module docstring.

    ``policy`` may be replaced at any time (hot reload); the next :meth:`check` uses it.
    """

    def __init__(self, policy: Policy, *, upstream: str, prepared: PreparedStatements | None = None) -> None:
        self._policy = policy
        #: ``Policy.decide`` memo shared by every connection, keyed by what the policy reads. (A
        #: session's fast path keeps its own map from the request's bytes to a rendered decision.)
        self._decisions: dict[tuple[Identity, Classification], PolicyDecision] = {}
        self.upstream = upstream
        self.prepared = prepared if prepared is not None else PreparedStatements()
        #: Bumped by every policy swap: whoever keeps decisions (the session's per-connection fast
        #: path) drops them when it changes.
        self.generation = 0

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """Swap the policy (hot reload); decisions cached under the old one are dropped."""
        self._policy = policy
        self._decisions = {}
        self.generation += 1

    def check(
        self,
        request: Request,
        identity: Identity,
        *,
        connection_keyspace: str | None,
        keyspace_in_doubt: bool = False,
    ) -> Check:
        """Decide ``request`` for ``identity``; ``connection_keyspace`` is the keyspace now."""
        message = request.message
        kind = request.opcode.name.lower()
        if isinstance(message, Execute):
            entry = self.prepared._get(self.upstream, message.prepared_id)
            if entry is None:
                return Check(Disposition.UNPREPARED, request, kind, unprepared_id=message.prepared_id)
            return self._decide(request, kind, identity, entry.classification)
        if not isinstance(message, Query | Prepare | Batch):
            return Check(Disposition.PASS, request, kind)
        keyspace = message.keyspace or connection_keyspace
        if keyspace != request.keyspace:
            request = dataclasses.replace(request, keyspace=keyspace)
        if keyspace_in_doubt and message.keyspace is None and self._needs_keyspace(message):
            return Check(Disposition.HOLD, request, kind)
        if isinstance(message, Batch):
            children: list[Classification] = []
            for child in message.statements:
                if isinstance(child, BatchPrepared):
                    entry = self.prepared._get(self.upstream, child.prepared_id)
                    if entry is None:
                        return Check(Disposition.UNPREPARED, request, kind, unprepared_id=child.prepared_id)
                    children.append(entry.classification)
                else:
                    children.append(classify_cached(child.query, keyspace))
            return self._decide(request, kind, identity, merge(children))
        return self._decide(request, kind, identity, classify_cached(message.query, keyspace))

    def _decide(self, request: Request, kind: str, identity: Identity, classification: Classification) -> Check:
        key = (identity, classification)
        decision = self._decisions.get(key)
        if decision is None:
            # ``decide`` is pure, so its answers are cached per policy (bounded: cleared when full).
            if len(self._decisions) >= _DECISION_CACHE:
                self._decisions = {}
            decision = self._decisions[key] = self._policy.decide(identity, classification)
        if not decision.allowed:
            return Check(Disposition.DENY, request, kind, classification, decision)
        # Preparing a USE changes nothing; running one (QUERY, or EXECUTE of a prepared USE) does.
        changes = not isinstance(request.message, Prepare) and _is_use(classification)
        return Check(Disposition.FORWARD, request, kind, classification, decision, changes_keyspace=changes)

    @staticmethod
    def _needs_keyspace(message: Query | Prepare | Batch) -> bool:
        if isinstance(message, Batch):
            texts: Iterable[str] = (c.query for c in message.statements if not isinstance(c, BatchPrepared))
        else:
            texts = (message.query,)
        return any(_uses_connection_keyspace(classify_cached(text, None)) for text in texts)

    def learn(self, response: Response) -> None:
        """Remember what the server prepared (from a PREPARE's Prepared result)."""
        request = response.request
        if (
            isinstance(response.message, PreparedResult)
            and request is not None
            and isinstance(request.message, Prepare)
        ):
            statement = PreparedStatement(request.message.query, request.keyspace)
            self.prepared.remember(self.upstream, response.message.prepared_id, statement)
