"""Attempts to get a forbidden statement past the guard, through the real proxy and a real driver.

``secretks`` is never allowed; ``guardks.kv`` is read-only; ``guardks2.open`` is not writable.
Each attempt must raise ``Unauthorized`` from the guard (its message starts with ``cqlguard``),
and Cassandra must not have run it.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RunningGuard

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(300)]

FORBIDDEN = [
    pytest.param("SELECT * FROM secretks.secrets -- guardks.kv", id="line-comment"),
    pytest.param("/* SELECT * FROM guardks.kv */ SELECT * FROM secretks.secrets", id="block-comment"),
    pytest.param("SELECT * FROM secretks.secrets // FROM guardks.kv", id="slash-comment"),
    pytest.param("SELECT * FROM secretks.secrets WHERE k = 'FROM guardks.kv' ALLOW FILTERING", id="literal-from"),
    pytest.param("SELECT v AS \"from guardks.kv\" FROM secretks.secrets", id="quoted-alias"),
    pytest.param('SELECT * FROM "secretks"."secrets"', id="quoted-identifiers"),
    pytest.param("sElEcT * FrOm SECRETKS.SECRETS", id="case-tricks"),
    pytest.param("SELECT * FROM\n\tsecretks\n.\nsecrets", id="whitespace"),
    pytest.param("SELECT * FROM guardks.kv; SELECT * FROM secretks.secrets", id="two-statements"),
    pytest.param("SELECT * FROM secretks.secrets WHERE k IN (SELECT k FROM guardks.kv)", id="subselect-noise"),
    pytest.param("INSERT INTO guardks.kv (k, v) VALUES (777, 'x') IF NOT EXISTS", id="lwt-insert"),
    pytest.param("UPDATE guardks.kv SET v = 'x' WHERE k = 777", id="update-readonly"),
    pytest.param("DELETE FROM guardks.kv WHERE k = 1", id="delete-readonly"),
    pytest.param("TRUNCATE guardks.kv", id="truncate"),
    pytest.param("DROP TABLE guardks.kv", id="drop"),
    pytest.param("ALTER TABLE guardks.kv ADD w text", id="alter"),
    pytest.param(
        "BEGIN BATCH INSERT INTO guardks.open (k, v) VALUES (778, 'a') INSERT INTO guardks.kv (k, v)"
        " VALUES (778, 'b') APPLY BATCH",
        id="cql-batch-without-semicolons",
    ),
    pytest.param("GRANT ALL ON KEYSPACE secretks TO cassandra", id="grant"),
]


@pytest.fixture(params=[pytest.param(4, id="v4"), pytest.param(5, id="v5-lz4")], scope="module")
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def session(guard: RunningGuard, version: int) -> Any:
    return guard.connect(protocol_version=version, compression="lz4" if version == 5 else False)


@pytest.mark.parametrize("query", FORBIDDEN)
def test_forbidden_statement_is_denied(session: Any, guard: RunningGuard, query: str) -> None:
    from cassandra import Unauthorized

    with pytest.raises(Unauthorized, match="cqlguard"):
        session.execute(query)
    with pytest.raises(Unauthorized, match="cqlguard"):
        session.prepare(query)
    direct = guard.upstream.session()
    assert direct.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
    assert direct.execute("SELECT k FROM guardks.kv WHERE k IN (777, 778)").one() is None
    assert direct.execute("SELECT k FROM guardks.open WHERE k = 778").one() is None


def test_literals_and_comments_do_not_cause_false_denials(session: Any) -> None:
    session.execute("INSERT INTO guardks.open (k, v) VALUES (50, 'DELETE FROM secretks.secrets; DROP')")
    session.execute("/* secretks.secrets */ SELECT v FROM guardks.kv WHERE k = 1 -- FROM secretks.secrets\n")
    assert session.execute('SELECT "v" FROM "guardks"."kv" WHERE k = 1').one().v == "one"


def test_unqualified_names_follow_use(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    session.execute("USE guardks")
    session.execute("INSERT INTO open (k, v) VALUES (51, 'a')")  # guardks.open: writable
    session.execute("USE guardks2")
    with pytest.raises(Unauthorized):
        session.execute("INSERT INTO open (k, v) VALUES (52, 'b')")  # guardks2.open: not writable
    assert guard.upstream.session().execute("SELECT k FROM guardks2.open WHERE k = 52").one() is None


def test_a_prepared_use_that_is_never_executed_changes_nothing(session: Any, guard: RunningGuard) -> None:
    from cassandra import Unauthorized

    session.execute("USE guardks")
    with pytest.raises(Unauthorized):
        session.prepare("USE secretks")
    use_guardks2 = session.prepare("USE guardks2")  # allowed to prepare; not executed yet
    session.execute("INSERT INTO open (k, v) VALUES (53, 'in guardks')")
    direct = guard.upstream.session()
    assert direct.execute("SELECT v FROM guardks.open WHERE k = 53").one().v == "in guardks"
    session.execute(use_guardks2)  # executing it switches the keyspace
    with pytest.raises(Unauthorized):
        session.execute("INSERT INTO open (k, v) VALUES (54, 'in guardks2')")
    assert direct.execute("SELECT k FROM guardks2.open WHERE k = 54").one() is None


def test_v5_per_request_keyspace_flag_is_honoured(guard: RunningGuard) -> None:
    """The keyspace flag exists from protocol v5 on, so this runs on v5 only."""
    from cassandra import Unauthorized
    from cassandra.query import SimpleStatement

    session = guard.connect(protocol_version=5, keyspace="guardks")
    # Unqualified, but the v5 keyspace flag says secretks: the guard must resolve it there.
    with pytest.raises(Unauthorized):
        session.execute(SimpleStatement("SELECT * FROM secrets", keyspace="secretks"))
    with pytest.raises(Unauthorized):
        session.prepare("SELECT * FROM secrets WHERE k = ?", keyspace="secretks")
    # ... and the flag on an allowed keyspace works (guardks2.kv while connected to guardks).
    assert session.execute(SimpleStatement("SELECT v FROM kv WHERE k = 1", keyspace="guardks2")).one().v == "two"
    flagged = [f for f in guard.flows() if f["l7"]["table"] == "secrets"]
    assert flagged and all(f["verdict"] == "DENIED" and f["l7"]["keyspace"] == "secretks" for f in flagged)
