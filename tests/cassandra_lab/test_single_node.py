"""One real node: CQL answers, and a keyspace, a table and a row survive the round trip."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from isthmus.lab.cassandra import (
    CASSANDRA_VERSION,
    CassandraLabError,
    CassandraNode,
    claim_addresses,
    prepare_node,
    start_node,
)

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


def test_cql_answers_with_the_pinned_release(cassandra_node: CassandraNode) -> None:
    row = cassandra_node.session().execute("SELECT release_version, data_center FROM system.local").one()
    assert row.release_version == CASSANDRA_VERSION
    assert row.data_center == "dc1"
    assert cassandra_node.ready_after_s is not None


def test_create_insert_select(cassandra_node: CassandraNode) -> None:
    session = cassandra_node.session()
    session.execute(
        "CREATE KEYSPACE IF NOT EXISTS lab_single"
        " WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1}"
    )
    session.execute("CREATE TABLE IF NOT EXISTS lab_single.kv (k uuid PRIMARY KEY, v text)")
    key = uuid.uuid4()
    session.execute("INSERT INTO lab_single.kv (k, v) VALUES (%s, %s)", (key, "hello"))
    row = session.execute("SELECT v FROM lab_single.kv WHERE k = %s", (key,)).one()
    assert row.v == "hello"


def test_pid_file_names_the_running_jvm(cassandra_node: CassandraNode) -> None:
    assert cassandra_node.alive()
    assert int(cassandra_node.spec.pid_path.read_text()) == cassandra_node.pid


def test_a_node_that_dies_on_start_raises_with_its_log_tail(tmp_path: Path) -> None:
    with claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(
            name="broken", address=address, node_dir=tmp_path / "broken", cluster_name="broken", seeds=(address,)
        )
        # An option Cassandra does not know makes it refuse its configuration and exit.
        spec.cassandra_yaml.write_text(spec.cassandra_yaml.read_text() + "no_such_lab_option: 1\n")
        with pytest.raises(CassandraLabError, match="exited with code") as caught:
            start_node(spec, timeout=180)
    assert "no_such_lab_option" in str(caught.value)
    assert not spec.pid_path.exists()
