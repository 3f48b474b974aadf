"""The fast path's memory of one connection: the decisions its session already made, rendered once.

Owns: :class:`KnownDecision` (a forwarded decision with its flow line template and metric key) and
:class:`KnownDecisions`, the two maps the session's fast path looks requests up in: an EXECUTE by its
prepared id, a QUERY by its text and the connection's keyspace. Both are forgotten when the policy
changes (``Guard.generation``) or the user does; the EXECUTE map also when a prepared id may stand for
another statement (``Guard.prepared.changes``). Pure: no clock, no I/O; :mod:`.session` uses it.
"""

from __future__ import annotations

from isthmus.cqlguard.counters import Counters
from isthmus.cqlguard.flows import FlowTemplate, l7_action
from isthmus.cqlguard.guard import Check, Guard
from isthmus.cqlguard.protocol import Execute, Query

__all__ = ["HOT_ENTRIES", "HOT_QUERY_CHARS", "KnownDecision", "KnownDecisions"]

#: Fast-path maps per session: at most this many entries each (then they start afresh), and
#: QUERY texts up to this long.
HOT_ENTRIES = 4096
HOT_QUERY_CHARS = 4096


class KnownDecision:
    """A forwarded decision, rendered once: its check, flow line template and metric key.

    One per decision; kept in the session's fast-path maps when the same request may come
    again (an EXECUTE of a prepared id, a QUERY text in a keyspace).
    """

    __slots__ = ("action", "classification", "counter", "decision", "kind", "template")

    def __init__(self, check: Check, template: FlowTemplate | None, counters: Counters) -> None:
        # Not the check itself: its request holds the whole frame (bound values and all), and up to
        # HOT_ENTRIES of these stay per session.
        assert check.decision is not None
        self.kind, self.classification, self.decision = check.kind, check.classification, check.decision
        self.template = template
        self.action = l7_action(check.classification)
        #: Its key in ``Counters.requests`` (present: the fast path adds to it directly).
        self.counter = ("allowed", self.action)
        counters.requests.setdefault(self.counter, 0)


class KnownDecisions:
    """The session's fast-path maps. ``executes`` and ``queries`` are read directly on the hot path;
    they are cleared in place, never replaced, so a reference taken before a loop stays the live map."""

    __slots__ = ("_generation", "_guard", "_prepared", "executes", "queries")

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self.executes: dict[bytes, KnownDecision] = {}
        self.queries: dict[tuple[bytes, str | None], KnownDecision] = {}
        self._generation = guard.generation
        self._prepared = guard.prepared.changes

    def refresh(self) -> None:
        """Forget what the guard's policy or prepared statements may have changed since."""
        if self._generation != self._guard.generation:
            self.forget()
        if self._prepared != self._guard.prepared.changes:  # an id now stands for another statement
            self.executes.clear()
            self._prepared = self._guard.prepared.changes

    def forget(self) -> None:
        """Forget everything (the policy or the user changed)."""
        self.executes.clear()
        self.queries.clear()
        self._generation = self._guard.generation

    def remember(self, check: Check, known: KnownDecision) -> None:
        """Keep ``known`` (the decision of the allowed ``check``) when the same request may come again."""
        if self._generation != self._guard.generation:
            self.forget()
        message = check.request.message
        if check.changes_keyspace:
            return
        if isinstance(message, Execute):
            if len(self.executes) >= HOT_ENTRIES:
                self.executes.clear()
            self.executes[message.prepared_id] = known
        elif isinstance(message, Query) and message.keyspace is None and len(message.query) <= HOT_QUERY_CHARS:
            if len(self.queries) >= HOT_ENTRIES:
                self.queries.clear()
            self.queries[(message.query.encode("utf-8"), check.request.keyspace)] = known
