"""`make demo`'s CQL client: write or read the demo's rows at a consistency level, through a port-forward.

    demo_cql.py write|read HOST:PORT DATACENTER CONSISTENCY

The superuser's name and password come from ISTHMUS_DEMO_USER and ISTHMUS_DEMO_PASSWORD (read from the
app's Secret by scripts/demo.sh; never printed).
"""

from __future__ import annotations

import os
import sys

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy
from cassandra.query import SimpleStatement


def main(argv: list[str]) -> int:
    op, where, dc, level = argv[1:5]
    host, port = where.rsplit(":", 1)
    auth = PlainTextAuthProvider(os.environ["ISTHMUS_DEMO_USER"], os.environ["ISTHMUS_DEMO_PASSWORD"])
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=30.0)
    cluster = Cluster([host], port=int(port), auth_provider=auth, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=20.0)
    session = cluster.connect()
    cl = getattr(ConsistencyLevel, level)
    try:
        if op == "write":
            session.execute("CREATE KEYSPACE IF NOT EXISTS demo WITH replication = {'class': "
                            "'NetworkTopologyStrategy', 'dc-eu': 2, 'dc-us': 2, 'dc-ap': 2}")
            session.execute("CREATE TABLE IF NOT EXISTS demo.greetings (dc text PRIMARY KEY, said text)")
            session.execute(SimpleStatement("INSERT INTO demo.greetings (dc, said) VALUES (%s, %s)",
                                            consistency_level=cl), (dc, f"hello from {dc}"))
            print(f"  wrote ('{dc}', 'hello from {dc}') at {level} in {dc}")
        else:
            rows = session.execute(SimpleStatement("SELECT dc, said FROM demo.greetings", consistency_level=cl))
            for row in rows:
                print(f"  read in {dc} at {level}: ('{row.dc}', '{row.said}')")
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
