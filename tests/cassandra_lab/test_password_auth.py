"""A node rendered with PasswordAuthenticator: CQL answers to the default superuser, not to strangers."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.lab.cassandra import (
    Authenticator,
    Authorizer,
    Credentials,
    claim_addresses,
    cql_cluster,
    prepare_node,
    start_node,
)

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


def test_login_is_required_and_the_default_superuser_works(tmp_path: Path) -> None:
    from cassandra.cluster import NoHostAvailable

    claim = claim_addresses(1)
    [address] = claim.addresses
    spec = prepare_node(
        name="auth", address=address, node_dir=tmp_path / "auth", cluster_name="isthmus-auth",
        seeds=(address,), authenticator=Authenticator.PASSWORD, authorizer=Authorizer.CASSANDRA,
    )
    node = start_node(spec)  # ready means cassandra/cassandra could run a query
    try:
        rows = node.session().execute("SELECT is_superuser FROM system_auth.roles WHERE role = 'cassandra'")
        assert rows.one().is_superuser is True
        with pytest.raises(NoHostAvailable):
            node.session(credentials=Credentials("nobody", "wrong"))
        with pytest.raises(NoHostAvailable):
            _connect_without_login(node.host, node.port)
    finally:
        node.stop()
        claim.release()


def _connect_without_login(host: str, port: int) -> None:
    cluster = cql_cluster([host], port=port)
    try:
        cluster.connect()
    finally:
        cluster.shutdown()
