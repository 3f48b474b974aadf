"""Two real nodes in two datacenters form one ring, and each sees the other's datacenter."""

from __future__ import annotations

import time

import pytest

from fixtures.cassandra import TwoDcRing

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


def _peers(ring: TwoDcRing, index: int) -> dict[str, str]:
    node = ring.nodes[index]
    rows = node.session().execute("SELECT peer, data_center FROM system.peers_v2")
    return {str(r.peer): r.data_center for r in rows}


def test_each_node_sees_the_other_datacenter(cassandra_2dc: TwoDcRing) -> None:
    ring = cassandra_2dc
    deadline = time.monotonic() + 60
    while True:
        seen = (_peers(ring, 0), _peers(ring, 1))
        if seen == ({ring.dc2.host: "dc2"}, {ring.dc1.host: "dc1"}) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert seen[0] == {ring.dc2.host: "dc2"}
    assert seen[1] == {ring.dc1.host: "dc1"}


def test_local_rows_name_their_own_datacenter(cassandra_2dc: TwoDcRing) -> None:
    for node, dc in ((cassandra_2dc.dc1, "dc1"), (cassandra_2dc.dc2, "dc2")):
        row = node.session().execute("SELECT data_center, cluster_name FROM system.local").one()
        assert (row.data_center, row.cluster_name) == (dc, "isthmus-2dc")


def test_a_keyspace_replicated_to_both_datacenters_serves_local_quorum_in_each(
    cassandra_2dc: TwoDcRing,
) -> None:
    from cassandra import ConsistencyLevel
    from cassandra.query import SimpleStatement

    first = cassandra_2dc.dc1.session()
    first.execute(
        "CREATE KEYSPACE IF NOT EXISTS lab_2dc"
        " WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 1, 'dc2': 1}"
    )
    first.execute("CREATE TABLE IF NOT EXISTS lab_2dc.kv (k text PRIMARY KEY, v int)")
    first.execute(SimpleStatement("INSERT INTO lab_2dc.kv (k, v) VALUES ('a', 1)",
                                  consistency_level=ConsistencyLevel.EACH_QUORUM))
    second = cassandra_2dc.dc2.session()
    read = SimpleStatement(
        "SELECT v FROM lab_2dc.kv WHERE k = 'a'", consistency_level=ConsistencyLevel.LOCAL_ONE
    )
    assert second.execute(read).one().v == 1
