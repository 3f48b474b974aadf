"""Per-user rules: Cassandra with PasswordAuthenticator, users logging in through the guard (SASL PLAIN).

The guard learns the user from the AUTH_RESPONSE only once Cassandra answers AUTH_SUCCESS,
so a wrong password never yields an identity; rules keyed on ``users`` are enforced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.lab.cassandra import (
    Authenticator,
    CassandraNode,
    claim_addresses,
    prepare_node,
    start_node,
)

from .conftest import running_guard

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(400)]

POLICY = """
rules:
  - name: readers
    identities: {users: [reader]}
    allow:
      - actions: [select]
        tables: ["authks.t"]
  - name: writers
    identities: {users: [writer], cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [read, write]
        tables: ["authks.t"]
"""


@pytest.fixture(scope="module")
def password_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraNode]:
    with claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(
            name="guard-auth", address=address, node_dir=tmp_path_factory.mktemp("guard-auth"),
            cluster_name="isthmus-guard-auth", seeds=(address,), authenticator=Authenticator.PASSWORD,
        )
        node = start_node(spec)
        try:
            session = node.session()
            session.execute(
                "CREATE KEYSPACE IF NOT EXISTS authks"
                " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
            )
            session.execute("CREATE TABLE IF NOT EXISTS authks.t (k int PRIMARY KEY, v text)")
            session.execute("INSERT INTO authks.t (k, v) VALUES (1, 'one')")
            for role in ("reader", "writer"):
                session.execute(f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = '{role}-pw' AND LOGIN = true")
            yield node
        finally:
            node.stop()


@pytest.mark.parametrize("version", [4, 5])
def test_rules_follow_the_cql_user(password_node: CassandraNode, tmp_path: Path, version: int) -> None:
    from cassandra import Unauthorized
    from cassandra.cluster import NoHostAvailable

    with running_guard(password_node, tmp_path, policy=POLICY) as guard:
        reader: Any = guard.connect(protocol_version=version, auth=("reader", "reader-pw"))
        assert reader.execute("SELECT v FROM authks.t WHERE k = 1").one().v == "one"
        with pytest.raises(Unauthorized, match="user 'reader'"):
            reader.execute("INSERT INTO authks.t (k, v) VALUES (2, 'by reader')")

        writer: Any = guard.connect(protocol_version=version, auth=("writer", "writer-pw"))
        writer.execute("INSERT INTO authks.t (k, v) VALUES (3, 'by writer')")

        superuser: Any = guard.connect(protocol_version=version, auth=("cassandra", "cassandra"))
        with pytest.raises(Unauthorized):
            superuser.execute("SELECT v FROM authks.t WHERE k = 1")  # no rule names this user

        with pytest.raises(NoHostAvailable):
            guard.connect(protocol_version=version, auth=("writer", "wrong"))

        direct = password_node.session()
        assert direct.execute("SELECT v FROM authks.t WHERE k = 2").one() is None
        assert direct.execute("SELECT v FROM authks.t WHERE k = 3").one().v == "by writer"
        table_flows = [f for f in guard.flows() if f["l7"]["table"] == "t"]
        seen = {(f["source"]["user"], f["l7"]["action"], f["verdict"], f["rule"]) for f in table_flows}
        assert seen == {
            ("reader", "select", "ALLOWED", "readers"),
            ("reader", "insert", "DENIED", None),
            ("writer", "insert", "ALLOWED", "writers"),
            ("cassandra", "select", "DENIED", None),
        }
        direct.execute("DELETE FROM authks.t WHERE k = 3")
