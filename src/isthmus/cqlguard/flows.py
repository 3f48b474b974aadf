"""Flow records: one JSON line per guard decision, Hubble-style, and the reader behind ``isthmus guard flows``.

Owns: :class:`Flow` (built by the session from a :class:`~isthmus.cqlguard.guard.Check`), its
JSON form, :class:`FlowTemplate` (the same line with the per-request fields left open, so the
session renders a decision's JSON once and fills in time, stream and latency per request),
and :func:`read_flows` with :class:`FlowFilter` (``--follow`` keeps reading across rotation);
the writers (:class:`FlowWriter`, :class:`FlowLog`) are :mod:`.flowlog`'s, re-exported here.
Must not: decide anything or touch sockets.

One line (keys always present; ``null`` when unknown; ``principal`` is the TLS client
certificate's SPIFFE ID, else its subject, and ``subject`` its subject)::

    {"time": "2025-01-02T03:04:05.678901Z", "verdict": "DENIED",
     "source": {"ip": "127.0.0.1", "port": 50312, "user": "app", "principal": null, "subject": null},
     "destination": {"ip": "127.0.1.1", "port": 9042},
     "l7": {"type": "cql", "kind": "query", "action": "insert", "keyspace": "ks", "table": "t",
            "statements": [{"action": "insert", "keyspace": "ks", "table": "t"}], "stream": 12},
     "rule": null, "reason": "no rule allows insert on ks.t for user 'app' from 127.0.0.1",
     "upstream_latency_ms": null, "summary": "DENIED insert ks.t"}

Verdicts: ``ALLOWED`` (forwarded; latency measured until the server's answer), ``DENIED``
(policy), ``ERROR`` (the proxy could not decide: unknown prepared id answered Unprepared,
too many held requests). ``l7.action`` is the first statement's action, ``batch`` for a BATCH
and ``unknown`` for an unclassifiable statement (its reason says why).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TextIO

from isthmus.cqlguard.classify import Classification, Classified, Statement
from isthmus.cqlguard.flowlog import FlowLog, FlowWriter

__all__ = ["Flow", "FlowFilter", "FlowLog", "FlowTemplate", "FlowVerdict", "FlowWriter", "l7_action", "read_flows"]



class FlowVerdict(StrEnum):
    ALLOWED = "ALLOWED"
    DENIED = "DENIED"
    ERROR = "ERROR"


def l7_action(classification: Classification | None) -> str:
    """The one action a flow and a metric label show: first statement, ``batch``, ``unknown``."""
    if not isinstance(classification, Classified) or not classification.statements:
        return "unknown"
    if classification.batch:
        return "batch"
    return str(classification.statements[0].action)


_last_second: tuple[int, str] = (-1, "")


def _second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a UTC second; formatted once a second, not once a line."""
    global _last_second
    last = _last_second
    if last[0] != seconds:
        last = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
    return last[1]


def _stamp(t: float) -> str:
    """RFC 3339 UTC with microseconds."""
    seconds = int(t)
    return "%s%06dZ" % (_second(seconds), (t - seconds) * 1e6)  # noqa: UP031  (%-format: the fastest here)


def _ms(value: float) -> float:
    """Milliseconds with 3 decimals, as the flow line writes them."""
    return float("%.3f" % value)  # noqa: UP031


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _statement_json(statement: Statement) -> dict[str, Any]:
    return {"action": str(statement.action), "keyspace": statement.keyspace, "table": statement.table}


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """One decision, ready to be written (times are wall-clock seconds since the epoch)."""

    time: float
    verdict: FlowVerdict
    source_ip: str | None
    source_port: int | None
    user: str | None
    principal: str | None
    destination_ip: str
    destination_port: int
    kind: str
    stream: int
    classification: Classification | None
    rule: str | None
    reason: str
    upstream_latency_ms: float | None = None
    subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        statements = (
            [_statement_json(s) for s in self.classification.statements]
            if isinstance(self.classification, Classified)
            else []
        )
        action = l7_action(self.classification)
        first = statements[0] if statements else {"keyspace": None, "table": None}
        target = ".".join(p for p in (first["keyspace"], first["table"]) if p)
        stamp = _stamp(self.time)
        return {
            "time": stamp,
            "verdict": str(self.verdict),
            "source": {
                "ip": self.source_ip,
                "port": self.source_port,
                "user": self.user,
                "principal": self.principal,
                "subject": self.subject,
            },
            "destination": {"ip": self.destination_ip, "port": self.destination_port},
            "l7": {
                "type": "cql",
                "kind": self.kind,
                "action": action,
                "keyspace": first["keyspace"],
                "table": first["table"],
                "statements": statements,
                "stream": self.stream,
            },
            "rule": self.rule,
            "reason": self.reason,
            "upstream_latency_ms": None if self.upstream_latency_ms is None else _ms(self.upstream_latency_ms),
            "summary": f"{self.verdict} {action} {target}".rstrip(),
        }

    def to_line(self) -> str:
        return self.template().render(self.time, self.stream, self.upstream_latency_ms)

    def template(self) -> FlowTemplate:
        """This flow's line with time, stream and latency left open."""
        record = self.to_json()
        l7 = dict(record["l7"])
        del l7["stream"]
        return FlowTemplate(
            '","verdict":' + _dumps(record["verdict"])
            + ',"source":' + _dumps(record["source"])
            + ',"destination":' + _dumps(record["destination"])
            + ',"l7":' + _dumps(l7)[:-1] + ',"stream":',
            '},"rule":' + _dumps(record["rule"]) + ',"reason":' + _dumps(record["reason"]) + ',"upstream_latency_ms":',
            ',"summary":' + _dumps(record["summary"]) + "}\n",
        )


class FlowTemplate:
    """A flow line rendered once, with ``time``, ``l7.stream`` and ``upstream_latency_ms`` open.

    ``render`` gives ``Flow.to_line()`` of the same flow (same keys, order and values; the
    latency is written with 3 decimals, e.g. ``1.500``).
    """

    __slots__ = ("_after_latency", "_after_stream", "_after_time")

    def __init__(self, after_time: str, after_stream: str, after_latency: str) -> None:
        self._after_time = after_time
        self._after_stream = after_stream
        self._after_latency = after_latency

    def render(self, wall: float, stream: int, latency_ms: float | None) -> str:
        seconds = int(wall)
        latency = "null" if latency_ms is None else "%.3f" % latency_ms  # noqa: UP031
        # %-format over short pieces: the fastest way here (the long constant parts are not parsed).
        return '{"time":"%s%06dZ%s%d%s%s%s' % (  # noqa: UP031
            _second(seconds),
            (wall - seconds) * 1e6,
            self._after_time,
            stream,
            self._after_stream,
            latency,
            self._after_latency,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFilter:
    """Which flows to show; ``None`` fields match anything. ``table`` is ``ks.t`` (any statement)."""

    verdict: FlowVerdict | None = None
    user: str | None = None
    table: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        if self.verdict is not None and record.get("verdict") != self.verdict:
            return False
        if self.user is not None and (record.get("source") or {}).get("user") != self.user:
            return False
        if self.table is not None:
            statements = (record.get("l7") or {}).get("statements") or []
            names = {f"{s.get('keyspace')}.{s.get('table')}" for s in statements}
            if self.table not in names:
                return False
        return True


def _drain(handle: TextIO, flt: FlowFilter, partial: str) -> Generator[dict[str, Any], None, str]:
    """Yield the matching records of the complete lines available; return an unfinished line."""
    while line := handle.readline():
        if not line.endswith("\n"):
            partial += line  # a writer is mid-line; finish it on the next round
            continue
        line, partial = partial + line, ""
        record = _parse(line)
        if record is not None and flt.matches(record):
            yield record
    return partial


def read_flows(
    path: Path,
    flt: FlowFilter | None = None,
    *,
    follow: bool = False,
    poll_s: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """The flow records in ``path`` that match ``flt``; with ``follow``, keep waiting for more.

    Following survives rotation (the path names a new file: read it from its start) and
    truncation. Lines that are not JSON objects (a partial last line, noise) are skipped.
    ``stop`` is polled while following, so tests and callers can end the loop.
    """
    flt = flt or FlowFilter()
    handle: TextIO | None = None
    inode: tuple[int, int] | None = None
    partial = ""
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("r", encoding="utf-8", errors="replace")
                except FileNotFoundError:
                    if not follow:
                        raise
                else:
                    st = os.fstat(handle.fileno())
                    inode = (st.st_dev, st.st_ino)
            if handle is not None:
                partial = yield from _drain(handle, flt, partial)
            if not follow or stop():
                return
            time.sleep(poll_s)
            if handle is not None:
                try:
                    st = path.stat()
                    rotated = (st.st_dev, st.st_ino) != inode or st.st_size < handle.tell()
                except FileNotFoundError:
                    rotated = False  # moved away, new file not there yet: keep the old one
                if rotated:
                    yield from _drain(handle, flt, partial)  # what was written before the move
                    handle.close()
                    handle, partial = None, ""
    finally:
        if handle is not None:
            handle.close()


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
