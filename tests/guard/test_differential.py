"""Differential suite (issue 16): the same bytes straight to Cassandra 5.0 and through the guard.

A generated corpus of requests (comments and line endings of every kind, whitespace, quoting,
every query and batch option flag on v4 and v5, prepared statements, streams: negative,
reused, interleaved with a USE) is sent twice per protocol variant (v4/v5, with and without
lz4): once through the guard, once straight to the node. Every write names a row key of its
own (``{k}``), so Cassandra's tables say what each request did. Judged from Cassandra's side:

* what went through the guard wrote only tables the policy lets it write;
* a request the guard did not allow wrote nothing (it never reached Cassandra);
* a request the guard allowed wrote exactly what the same bytes write straight to Cassandra,
  and its flow record names exactly those tables (the audit is what ran);
* a request that, sent straight, writes only writable tables is allowed by the guard (failing
  closed costs no well-formed request), except the few cases marked ``may_refuse`` that the
  guard refuses on purpose (a negative stream, an unknown flag Cassandra ignores, a stream
  reused while in flight).

Every connection starts with ``USE diffks_a``.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from isthmus.lab.cassandra import CassandraNode
from protocol import cqlwire as w

from .conftest import RunningGuard, running_guard
from .rawcql import Answer, Closed, RawClient

POLICY = """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["diffks_a.*", "diffks_b.v"]
      - actions: [write]
        tables: ["diffks_a.t"]
"""
WRITABLE = frozenset({"diffks_a.t"})
TABLES = ("diffks_a.t", "diffks_a.u", "diffks_b.t")
SCHEMA = [
    "CREATE KEYSPACE IF NOT EXISTS diffks_a WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE KEYSPACE IF NOT EXISTS diffks_b WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE IF NOT EXISTS diffks_a.t (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS diffks_a.u (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS diffks_b.t (k int PRIMARY KEY, v text)",
    "CREATE TABLE IF NOT EXISTS diffks_b.v (k int PRIMARY KEY, v text)",
]
_WRITE_ACTIONS = {"insert", "update", "delete"}

# ------------------------------------------------------------------------- request bytes

KEYSPACE, PAGE_SIZE, TIMESTAMP, SERIAL, VALUES, NAMES, NOW = 0x80, 0x04, 0x20, 0x10, 0x01, 0x40, 0x100


def options(version: int, flags: int, *, keyspace: str | None = None, values: bytes = b"") -> bytes:
    """``<query_parameters>`` laid out as QueryOptions.Codec reads them (consistency ONE)."""
    rest = values
    if flags & PAGE_SIZE:
        rest += struct.pack(">i", 5000)
    if flags & SERIAL:
        rest += struct.pack(">H", 0x0008)
    if flags & TIMESTAMP:
        rest += struct.pack(">q", 1_700_000_000_000_000)
    if flags & KEYSPACE:
        assert keyspace is not None
        rest += w.string(keyspace)
    if flags & NOW:
        rest += struct.pack(">i", 1_700_000_000)
    packed = struct.pack(">I", flags) if version >= 5 else struct.pack(">B", flags & 0xFF)
    return struct.pack(">H", 1) + packed + rest


Build = Callable[[int, int, Answer | None], bytes | None]


@dataclass(frozen=True)
class Step:
    build: Build  # (version, k, the previous step's answer) -> envelope, or None: nothing to send
    stream: int
    wait: bool = True


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    versions: frozenset[int] = frozenset({4, 5})
    may_refuse: bool = False


def query(text: str, flags: int = 0, *, stream: int = 3, keyspace: str | None = None, values: bytes = b"",
          wait: bool = True) -> Step:
    def build(version: int, k: int, _: Answer | None) -> bytes:
        body = w.long_string(text.replace("{k}", str(k))) + options(version, flags, keyspace=keyspace, values=values)
        return w.frame(version, stream, 0x07, body)

    return Step(build, stream, wait)


def batch(children: list[str], flags: int = 0, *, keyspace: str | None = None, stream: int = 3) -> Step:
    def build(version: int, k: int, _: Answer | None) -> bytes:
        body = struct.pack(">BH", 1, len(children))
        for child in children:
            body += b"\x00" + w.long_string(child.replace("{k}", str(k))) + struct.pack(">H", 0)
        return w.frame(version, stream, 0x0D, body + options(version, flags, keyspace=keyspace))

    return Step(build, stream)


def prepare(text: str, *, keyspace: str | None = None, stream: int = 4) -> Step:
    def build(version: int, k: int, _: Answer | None) -> bytes:
        body = w.long_string(text.replace("{k}", str(k + 10)))  # the k of the EXECUTE step after it
        if version >= 5:
            body += struct.pack(">I", 1) + w.string(keyspace) if keyspace else struct.pack(">I", 0)
        return w.frame(version, stream, 0x09, body)

    return Step(build, stream)


def execute(flags: int = 0, *, keyspace: str | None = None, stream: int = 5) -> Step:
    def build(version: int, _k: int, prepared: Answer | None) -> bytes | None:
        if prepared is None or prepared.result_kind != 4:
            return None  # the PREPARE was refused or failed: nothing to execute
        pid, meta = prepared.prepared_ids(version)
        body = w.short_bytes(pid) + (w.short_bytes(meta) if version >= 5 else b"")
        return w.frame(version, stream, 0x0A, body + options(version, flags, keyspace=keyspace))

    return Step(build, stream)


def corpus() -> list[Case]:
    ins = "INSERT INTO {t} (k, v) VALUES ({k}, 'x')"
    cases: list[Case] = []
    for target in ("diffks_a.t", "diffks_a.u", "diffks_b.t", "t", "u", "DIFFKS_A.T", '"diffks_a"."t"',
                   "diffks_a . t", '"DIFFKS_A".t'):
        cases.append(Case(f"target {target}", (query(ins.replace("{t}", target)),)))
    # Lexer.g COMMENT ends at '\n' or '\r': what follows is a statement to Cassandra.
    for comment in ("--", "//"):
        for end in ("\r", "\n", "\r\n", "\x85", "\u2028", "\x0c", "\x0b"):
            for hidden in ("diffks_b.t", "diffks_a.u"):
                text = (f"BEGIN BATCH INSERT INTO diffks_a.t (k, v) VALUES ({{k}}, 'x') {comment} c{end}"
                        f"INSERT INTO {hidden} (k, v) VALUES ({{k}}, 'y')\n APPLY BATCH")
                cases.append(Case(f"batch child after {comment}{end!r} into {hidden}", (query(text),)))
        for end in ("", "\n", "\r", "\r\n"):
            text = ins.replace("{t}", "diffks_a.t") + f" {comment} c{end}"
            cases.append(Case(f"trailing {comment} {end!r}", (query(text),)))
        text = f"INSERT INTO {comment} c\rdiffks_b.t\n (k, v) VALUES ({{k}}, 'x')"
        cases.append(Case(f"table after {comment}\\r", (query(text),)))
    for ws in (" ", "\t", "\n", "\r", "\x0c", "\x0b", "\u00a0", "\u2028", "\x85"):
        cases.append(Case(f"whitespace {ws!r}", (query(f"INSERT INTO{ws}diffks_a.t (k, v) VALUES ({{k}}, 'x')"),)))
    for text in (
        "INSERT INTO /* diffks_a.t */ diffks_b.t (k, v) VALUES ({k}, 'x')",
        "INSERT INTO /* c */ diffks_a.t (k, v) VALUES ({k}, 'x')",
        "INSERT INTO /* /* */ diffks_a.t (k, v) VALUES ({k}, 'x') /* */ */",
        "INSERT INTO diffks_a.t (k, v) VALUES ({k}, $$x$$)",
        "INSERT INTO diffks_a.t (k, v) VALUES ({k}, $$ -- $$)",
        "INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'it''s -- not a comment')",
        "INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'x'); INSERT INTO diffks_b.t (k, v) VALUES ({k}, 'y')",
        "INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'x');;",
        'INSERT INTO "diffks_b".t (k, v) VALUES ({k}, \'x\')',
        "BEGIN BATCH INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'x') INSERT INTO diffks_b.t (k, v) VALUES ({k}, 'y')"
        " APPLY BATCH",
        "BEGIN UNLOGGED BATCH INSERT INTO t (k, v) VALUES ({k}, 'x'); APPLY BATCH",
    ):
        cases.append(Case(f"text {text[:60]!r}", (query(text),)))
    # Query options, every flag, both versions (QueryOptions.Codec honours KEYSPACE on v4 too).
    unqualified = "INSERT INTO t (k, v) VALUES ({k}, 'x')"
    for name, flags, keyspace, versions in (
        ("no flags", 0, None, {4, 5}),
        ("keyspace b", KEYSPACE, "diffks_b", {4, 5}),
        ("keyspace a", KEYSPACE, "diffks_a", {4, 5}),
        ("page size + keyspace b", PAGE_SIZE | KEYSPACE, "diffks_b", {4, 5}),
        ("timestamp + keyspace b", TIMESTAMP | KEYSPACE, "diffks_b", {4, 5}),
        ("serial + timestamp", SERIAL | TIMESTAMP, None, {4, 5}),
        ("now in seconds + keyspace b", NOW | KEYSPACE, "diffks_b", {5}),
    ):
        cases.append(Case(f"query {name}", (query(unqualified, flags, keyspace=keyspace),), frozenset(versions)))
    cases.append(Case("query unknown flag 0x200", (query(unqualified, 0x200),), frozenset({5}), may_refuse=True))
    value = struct.pack(">H", 1) + w.nbytes(b"x")
    cases.append(Case("query values + keyspace b",
                      (query("INSERT INTO t (k, v) VALUES ({k}, ?)", VALUES | KEYSPACE, keyspace="diffks_b",
                             values=value),)))
    named = struct.pack(">H", 1) + w.string("v") + w.nbytes(b"x")
    cases.append(Case("query named values", (query("INSERT INTO t (k, v) VALUES ({k}, :v)", VALUES | NAMES,
                                                   values=named),)))
    # BATCH options are QueryOptions too (BatchMessage.Codec calls QueryOptions.codec.decode).
    for name, flags, keyspace in (
        ("no flags", 0, None),
        ("keyspace b", KEYSPACE, "diffks_b"),
        ("page size + keyspace b", PAGE_SIZE | KEYSPACE, "diffks_b"),
        ("serial + timestamp + keyspace b", SERIAL | TIMESTAMP | KEYSPACE, "diffks_b"),
        ("keyspace a", KEYSPACE, "diffks_a"),
    ):
        cases.append(Case(f"batch {name}", (batch([unqualified], flags, keyspace=keyspace),)))
    cases.append(Case("batch two tables", (batch(["INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'x')",
                                                  "INSERT INTO diffks_b.t (k, v) VALUES ({k}, 'y')"]),)))
    # Prepared statements: the table is bound when Cassandra prepares; EXECUTE's keyspace flag changes nothing.
    cases.append(Case("prepared unqualified", (prepare(unqualified), execute())))
    qualified = "INSERT INTO diffks_a.t (k, v) VALUES ({k}, 'x')"
    cases.append(Case("prepared qualified, execute names keyspace b",
                      (prepare(qualified), execute(KEYSPACE, keyspace="diffks_b"))))
    cases.append(Case("prepared in keyspace b (v5 flag)", (prepare(unqualified, keyspace="diffks_b"), execute()),
                      frozenset({5})))
    cases.append(Case("prepared into b", (prepare("INSERT INTO diffks_b.t (k, v) VALUES ({k}, 'x')"), execute())))
    # Streams.
    use_b = "USE diffks_b"
    cases.append(Case("USE on a negative stream", (query(use_b, stream=-5), query(unqualified)), may_refuse=True))
    cases.append(Case("write on a negative stream", (query(ins.replace("{t}", "diffks_a.t"), stream=-7),),
                      may_refuse=True))
    cases.append(Case("USE then unqualified", (query(use_b, stream=2), query(unqualified))))
    cases.append(Case("USE interleaved with unqualified", (query(use_b, stream=2, wait=False), query(unqualified))))
    cases.append(Case("one stream twice in flight",
                      (query(ins.replace("{t}", "diffks_a.t"), stream=6, wait=False),
                       query(ins.replace("{t}", "diffks_a.t"), stream=6)), may_refuse=True))
    return cases


CORPUS = corpus()

# ------------------------------------------------------------------------------ running


@dataclass
class Run:
    port: int
    answers: dict[int, Answer | None]


def _send(host: str, port: int, version: int, lz4: bool, case: Case, keys: list[int]) -> Run:
    client = RawClient(host, port, version, lz4=lz4)
    try:
        client.send_envelope(w.frame(version, 1, 0x07, w.long_string("USE diffks_a") + options(version, 0)))
        assert client.answer(1).result_kind == 3
        answers: dict[int, Answer | None] = {}
        waiting: list[tuple[int, int]] = []
        previous: Answer | None = None
        for i, step in enumerate(case.steps):
            envelope = None if client.closed else step.build(version, keys[i], previous)
            answers[i] = previous = None
            if envelope is None:
                continue
            try:
                client.send_envelope(envelope)
                if step.wait:
                    answers[i] = previous = client.answer(step.stream)
                else:
                    waiting.append((i, step.stream))
            except (Closed, OSError):
                continue
        for i, stream in waiting:
            with contextlib.suppress(Closed, OSError):
                answers[i] = client.answer(stream)
        return Run(client.port, answers)
    finally:
        client.close()


def _rows(session: Any) -> dict[str, set[int]]:
    return {table: {row.k for row in session.execute(f"SELECT k FROM {table}")} for table in TABLES}


@pytest.fixture(scope="module")
def diff_guard(cassandra_node: CassandraNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGuard]:
    session = cassandra_node.session()
    for statement in SCHEMA:
        session.execute(statement)
    with running_guard(cassandra_node, tmp_path_factory.mktemp("differential"), policy=POLICY) as guard:
        yield guard


VARIANTS = [pytest.param(v, c, id=f"v{v}-{'lz4' if c else 'plain'}") for v in (4, 5) for c in (False, True)]


@pytest.mark.cassandra
@pytest.mark.slow
@pytest.mark.parametrize(("version", "lz4"), VARIANTS)
def test_the_guard_allows_exactly_what_cassandra_then_runs(
    diff_guard: RunningGuard, cassandra_node: CassandraNode, version: int, lz4: bool
) -> None:
    base = 1_000_000 * (version * 2 + int(lz4))
    cases = [c for c in CORPUS if version in c.versions]
    plan: list[tuple[Case, list[int], list[int], Run, Run]] = []
    for n, case in enumerate(cases):
        through_keys = [base + 1000 * n + 10 * (i + 1) for i in range(len(case.steps))]
        direct_keys = [k + 5 for k in through_keys]
        through = _send(diff_guard.host, diff_guard.port, version, lz4, case, through_keys)
        direct = _send(cassandra_node.host, cassandra_node.port, version, lz4, case, direct_keys)
        plan.append((case, through_keys, direct_keys, through, direct))
    rows = _rows(cassandra_node.session())
    flows = {(f["source"]["port"], f["l7"]["stream"]): f for f in diff_guard.flows()}

    failures: list[str] = []
    allowed_somewhere = 0
    for case, through_keys, direct_keys, through, _direct in plan:
        for i, step in enumerate(case.steps):
            wrote = {t for t in TABLES if through_keys[i] in rows[t]}
            should = {t for t in TABLES if direct_keys[i] in rows[t]}
            flow = flows.get((through.port, step.stream))
            verdict = flow["verdict"] if flow else None
            claimed = {f"{s['keyspace']}.{s['table']}" for s in (flow or {}).get("l7", {}).get("statements", [])
                       if s["action"] in _WRITE_ACTIONS}
            where = f"{case.name!r} step {i} (guard: {verdict}, {flow and flow['reason']})"
            if not wrote <= WRITABLE:
                failures.append(f"{where}: wrote {sorted(wrote)} through the guard")
            if verdict != "ALLOWED" and wrote:
                failures.append(f"{where}: not allowed, yet Cassandra wrote {sorted(wrote)}")
            if verdict == "ALLOWED":
                allowed_somewhere += bool(wrote)
                if wrote != should:
                    failures.append(f"{where}: wrote {sorted(wrote)}, the same bytes straight wrote {sorted(should)}")
                if wrote and claimed != wrote:
                    failures.append(f"{where}: the flow names {sorted(claimed)}, Cassandra wrote {sorted(wrote)}")
            if should and should <= WRITABLE and not case.may_refuse and verdict != "ALLOWED":
                failures.append(f"{where}: refused, though straight to Cassandra it writes only {sorted(should)}")
    assert not failures, "\n".join(failures)
    assert allowed_somewhere >= 20  # the corpus is not all refusals
    deadline = time.monotonic() + 10  # every case's connection closes; the guard lives on
    while diff_guard.server.open_connections:
        assert time.monotonic() < deadline, f"{diff_guard.server.open_connections} connections left open"
        time.sleep(0.05)
