"""Real cassandra-driver clients through the real guard to a real Cassandra 5.0: protocol v4/v5, +/- lz4."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import BIG_ROWS, POLICY, POLICY_KV_WRITABLE, RunningGuard

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(300)]

PROTOCOLS = [
    pytest.param((4, False), id="v4"),
    pytest.param((4, "lz4"), id="v4-lz4"),
    pytest.param((5, False), id="v5"),
    pytest.param((5, "lz4"), id="v5-lz4"),
]


@pytest.fixture(params=PROTOCOLS)
def session(request: pytest.FixtureRequest, guard: RunningGuard) -> Any:
    version, compression = request.param
    return guard.connect(protocol_version=version, compression=compression)


def _direct(guard: RunningGuard) -> Any:
    return guard.upstream.session()


def test_allowed_select_returns_rows(session: Any) -> None:
    row = session.execute("SELECT v FROM guardks.kv WHERE k = 1").one()
    assert row.v == "one"


def test_denied_insert_raises_unauthorized_and_never_reaches_cassandra(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    with pytest.raises(Unauthorized, match="cqlguard"):
        session.execute("INSERT INTO guardks.kv (k, v) VALUES (666, 'pwned')")
    assert _direct(guard).execute("SELECT v FROM guardks.kv WHERE k = 666").one() is None
    denied = [f for f in guard.flows() if f["verdict"] == "DENIED"]
    assert [(f["l7"]["action"], f["l7"]["keyspace"], f["l7"]["table"]) for f in denied] == [
        ("insert", "guardks", "kv")
    ]


def test_prepared_statements_allowed_and_denied(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    select = session.prepare("SELECT v FROM guardks.kv WHERE k = ?")
    assert session.execute(select, (1,)).one().v == "one"
    insert = session.prepare("INSERT INTO guardks.open (k, v) VALUES (?, ?)")
    session.execute(insert, (10, "ten"))
    assert _direct(guard).execute("SELECT v FROM guardks.open WHERE k = 10").one().v == "ten"
    with pytest.raises(Unauthorized):
        session.prepare("INSERT INTO guardks.kv (k, v) VALUES (?, ?)")
    with pytest.raises(Unauthorized):
        session.prepare("SELECT * FROM secretks.secrets WHERE k = ?")
    kinds = {(f["l7"]["kind"], f["verdict"]) for f in guard.flows() if f["l7"]["keyspace"] == "guardks"}
    assert {("prepare", "ALLOWED"), ("execute", "ALLOWED"), ("prepare", "DENIED")} <= kinds


def test_executing_an_id_prepared_elsewhere_is_checked_after_a_reprepare(session: Any, guard: RunningGuard) -> None:
    """The guard's prepared map starts empty: an EXECUTE of an id it never saw gets Unprepared,
    the driver re-prepares through the guard, and the statement is checked like any other."""
    select = session.prepare("SELECT v FROM guardks.kv WHERE k = ?")
    guard.run(lambda: guard.server.guard.prepared._entries.clear())
    assert session.execute(select, (1,)).one().v == "one"
    kinds = [(f["l7"]["kind"], f["verdict"]) for f in guard.flows() if f["l7"]["kind"] in ("prepare", "execute")]
    assert kinds[-3:] == [("execute", "ERROR"), ("prepare", "ALLOWED"), ("execute", "ALLOWED")]


def test_a_batch_mixing_allowed_and_denied_is_denied_whole(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized
    from cassandra.query import BatchStatement

    insert_open = session.prepare("INSERT INTO guardks.open (k, v) VALUES (?, ?)")
    batch = BatchStatement()
    batch.add(insert_open, (20, "twenty"))
    batch.add("INSERT INTO guardks.kv (k, v) VALUES (%s, %s)", (21, "x"))
    with pytest.raises(Unauthorized):
        session.execute(batch)
    direct = _direct(guard)
    assert direct.execute("SELECT v FROM guardks.open WHERE k = 20").one() is None
    assert direct.execute("SELECT v FROM guardks.kv WHERE k = 21").one() is None
    ok = BatchStatement()
    ok.add(insert_open, (22, "a"))
    ok.add("UPDATE guardks.open SET v = 'b' WHERE k = 23")
    session.execute(ok)
    assert direct.execute("SELECT v FROM guardks.open WHERE k = 23").one().v == "b"
    batches = [f for f in guard.flows() if f["l7"]["kind"] == "batch"]
    assert [f["verdict"] for f in batches] == ["DENIED", "ALLOWED"]
    assert batches[0]["l7"]["action"] == "batch"


def test_use_switches_the_keyspace_unqualified_names_resolve(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    session.execute("USE guardks2")
    assert session.execute("SELECT v FROM kv WHERE k = 1").one().v == "two"  # guardks2.kv: allowed
    with pytest.raises(Unauthorized):
        session.execute("SELECT v FROM open WHERE k = 1")  # guardks2.open: not allowed
    with pytest.raises(Unauthorized):
        session.execute("USE secretks")
    assert session.execute("SELECT v FROM kv WHERE k = 1").one().v == "two"  # still guardks2
    session.execute("USE guardks")
    assert session.execute("SELECT v FROM kv WHERE k = 1").one().v == "one"
    session.execute("INSERT INTO open (k, v) VALUES (30, 'thirty')")  # guardks.open
    assert _direct(guard).execute("SELECT v FROM guardks.open WHERE k = 30").one().v == "thirty"


def test_paging_through_a_large_result(session: Any) -> None:
    from cassandra.query import SimpleStatement

    statement = SimpleStatement("SELECT c, v FROM guardks.big WHERE p = 0", fetch_size=17)
    result = session.execute(statement)
    pages = 1
    rows = list(result.current_rows)
    while result.has_more_pages:
        result.fetch_next_page()
        rows.extend(result.current_rows)
        pages += 1
    assert [r.c for r in rows] == list(range(BIG_ROWS))
    assert pages > 20


def test_policy_reload_applies_to_the_next_request_on_the_same_connection(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    connections = guard.server.metrics.connections._value.get()
    with pytest.raises(Unauthorized):
        session.execute("INSERT INTO guardks.kv (k, v) VALUES (40, 'forty')")
    guard.policy_path.write_text(POLICY_KV_WRITABLE)
    deadline = time.monotonic() + 10
    while True:
        try:
            session.execute("INSERT INTO guardks.kv (k, v) VALUES (40, 'forty')")
            break
        except Unauthorized:
            assert time.monotonic() < deadline, "the new policy was not picked up"
            time.sleep(0.1)
    assert _direct(guard).execute("SELECT v FROM guardks.kv WHERE k = 40").one().v == "forty"
    # A broken policy is refused and the last good one stays.
    guard.policy_path.write_text("rules: [ {name: broken")
    failures = guard.server.metrics.policy_reloads.labels(result="failure")
    deadline = time.monotonic() + 10
    while failures._value.get() < 1:  # the poller saw the broken file and refused it
        assert time.monotonic() < deadline, "the broken policy was not noticed"
        time.sleep(0.05)
    session.execute("INSERT INTO guardks.kv (k, v) VALUES (41, 'still allowed')")
    assert guard.server.metrics.connections._value.get() == connections  # nobody reconnected
    _direct(guard).execute("DELETE FROM guardks.kv WHERE k IN (40, 41)")


def test_a_reload_revokes_what_the_connection_had_already_allowed(session: Any, guard: RunningGuard) -> None:
    """Repeated requests are decided from the connection's fast path; a new policy empties it."""
    from cassandra import Unauthorized

    select = session.prepare("SELECT v FROM guardks.kv WHERE k = ?")
    for _ in range(4):
        assert session.execute(select, (1,)).one().v == "one"
        assert session.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
    assert guard.server.metrics.requests.get(("allowed", "select"), 0) >= 8  # fast-path decisions count too
    guard.policy_path.write_text(POLICY.replace('"guardks.*", ', ""))  # guardks.kv is no longer readable
    deadline = time.monotonic() + 10
    while True:
        try:
            session.execute(select, (1,))
        except Unauthorized:
            break
        assert time.monotonic() < deadline, "the new policy was not applied to the prepared statement"
        time.sleep(0.1)
    with pytest.raises(Unauthorized, match="cqlguard"):
        session.execute("SELECT v FROM guardks.kv WHERE k = 1")
    assert session.execute("SELECT v FROM guardks2.kv WHERE k = 1").one().v == "two"
    kv = [f for f in guard.flows() if (f["l7"]["keyspace"], f["l7"]["table"]) == ("guardks", "kv")]
    executes = [f["verdict"] for f in kv if f["l7"]["kind"] == "execute"]
    queries = [f["verdict"] for f in kv if f["l7"]["kind"] == "query"]
    assert executes[:4] == ["ALLOWED"] * 4 and executes[-1] == "DENIED"
    assert queries[:4] == ["ALLOWED"] * 4 and queries[-1] == "DENIED"
