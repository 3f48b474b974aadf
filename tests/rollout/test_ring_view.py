"""The database gate's rule, on nodetool's own words (Cassandra 5.0's layout)."""

from __future__ import annotations

from isthmus.rollout.ringview import (
    NODETOOL_SCRIPT,
    NodeReport,
    judge,
    parse_compactionstats,
    parse_describecluster,
    parse_netstats,
    parse_report,
    parse_status,
)

H = ["07a2a639-c123-4f01-9897-b008232fe8e0", "1b0c3f5e-2a2b-4c4d-8e8f-0a1b2c3d4e5f",
     "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"]


def status(eu2: str = "UN", us: str = "UN") -> str:
    return f"""Datacenter: dc-eu
=================
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address   Load        Tokens  Owns (effective)  Host ID                               Rack
UN  10.0.0.2  85.31 KiB   16      52.1%             {H[0]}  r1
{eu2}  10.0.0.3  ?           16      47.9%             {H[1]}  r2

Datacenter: dc-us
=================
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address   Load        Tokens  Owns (effective)  Host ID                               Rack
{us}  10.0.1.2  1.02 MiB    16      ?                 {H[2]}  r1
"""


def describe(*versions: tuple[str, str]) -> str:
    lines = "\n".join(f"\t\t{v}: [{a}]" for v, a in versions)
    return f"""Cluster Information:
\tName: ring
\tSnitch: org.apache.cassandra.locator.SimpleSnitch
\tDynamicEndPointSnitch: enabled
\tPartitioner: org.apache.cassandra.dht.Murmur3Partitioner
\tSchema versions:
{lines}

Stats for all nodes:
\tLive: 3
\tUnreachable: 0
"""


QUIET_NETSTATS = """Mode: NORMAL
Not sending any streams.
Read Repair Statistics:
Attempted: 0
Mismatch (Blocking): 0
Pool Name                    Active   Pending      Completed   Dropped
Large messages                  n/a         0              0         0
"""
REBUILDING = """Mode: NORMAL
Rebuild 5c0a7e6e-7d3f-11ee-b962-0242ac120002
    /10.0.0.2
        Receiving 3 files, 1048576 bytes total. Already received 1 files (33.33%), 4096 bytes total
"""
IDLE_COMPACTIONS = "concurrent compactors              2\npending tasks: 0\n"
VALIDATING = """pending tasks: 1
- guarded.t: 1

id                                   compaction type keyspace table completed total unit  progress
6a4c2b6e-7d3f-11ee-b962-0242ac120002 Validation      guarded  t     1024      4096  bytes 25.00%
"""


def report(pod: str = "ring-dc-eu-r1-0", st: str | None = None, schema: str | None = None,
           netstats: str = QUIET_NETSTATS, compactions: str = IDLE_COMPACTIONS, cluster: str = "eu",
           dc: str = "dc-eu") -> NodeReport:
    one_schema = describe(("v1", "10.0.0.2, 10.0.0.3, 10.0.1.2"))
    text = (f"=== isthmus: status\n{st if st is not None else status()}"
            f"=== isthmus: describecluster\n{schema if schema is not None else one_schema}"
            f"=== isthmus: netstats\n{netstats}=== isthmus: compactionstats\n{compactions}")
    return parse_report(cluster, pod, dc, "10.0.0.2", text)


def test_status_lines_become_nodes_of_their_datacenter() -> None:
    nodes = parse_status(status(eu2="DN", us="UJ"))
    assert [(n.datacenter, n.address, n.code, n.rack, n.load, n.owns) for n in nodes] == [
        ("dc-eu", "10.0.0.2", "UN", "r1", "85.31 KiB", "52.1%"),
        ("dc-eu", "10.0.0.3", "DN", "r2", "?", "47.9%"),
        ("dc-us", "10.0.1.2", "UJ", "r1", "1.02 MiB", "?"),
    ]


def test_schema_versions_netstats_and_validations_are_read() -> None:
    assert parse_describecluster(describe(("v1", "10.0.0.2:7000, 10.0.0.3:7000"), ("UNREACHABLE", "10.0.1.2"))) == {
        "v1": ("10.0.0.2", "10.0.0.3"), "UNREACHABLE": ("10.0.1.2",)}
    assert parse_netstats(QUIET_NETSTATS) == ("NORMAL", ())
    mode, streams = parse_netstats(REBUILDING.replace("Mode: NORMAL", "Mode: JOINING"))
    assert mode == "JOINING" and streams == ("Rebuild 5c0a7e6e-7d3f-11ee-b962-0242ac120002",)
    assert parse_compactionstats(IDLE_COMPACTIONS) == ()
    assert parse_compactionstats(VALIDATING) == ("guarded.t",)


def test_a_healthy_ring_passes() -> None:
    verdict = judge([report(), report("ring-dc-us-r1-0", cluster="us", dc="dc-us")])
    assert verdict.ok and verdict.reasons == ()


def test_a_node_down_in_another_datacenter_blocks_and_is_named() -> None:
    verdict = judge([report(st=status(us="DN"))])
    assert not verdict.ok
    assert verdict.reasons == ("dc-eu (ring-dc-eu-r1-0) sees 10.0.1.2 of dc-us rack r1 DN (Down/Normal)",)


def test_the_nodes_of_an_unreachable_region_do_not_stall_the_others() -> None:
    assert judge([report(st=status(us="DN"))], unreachable_datacenters=["dc-us"]).ok
    # but a node down in a datacenter that answers still blocks
    assert not judge([report(st=status(eu2="DN", us="DN"))], unreachable_datacenters=["dc-us"]).ok


def test_tolerated_nodes_may_be_down() -> None:
    assert judge([report(st=status(eu2="DN"))], tolerated=["10.0.0.3"]).ok


def test_disagreeing_schemas_streams_repairs_and_silence_block() -> None:
    two = describe(("v1", "10.0.0.2, 10.0.0.3"), ("v2", "10.0.1.2"))
    assert judge([report(schema=two)]).reasons == ("dc-eu (ring-dc-eu-r1-0): schema versions disagree (v1, v2)",)
    # a schema only an unreachable region holds is not a disagreement among those that answer
    assert judge([report(schema=two, st=status(us="DN"))], unreachable_datacenters=["dc-us"]).ok
    assert "streaming (Rebuild" in str(judge([report(netstats=REBUILDING)]))
    assert judge([report(netstats=QUIET_NETSTATS.replace("NORMAL", "LEAVING"))]).reasons == (
        "eu/ring-dc-eu-r1-0: mode LEAVING",)
    assert "repair running (validation of guarded.t)" in str(judge([report(compactions=VALIDATING)]))
    silent = parse_report("us", "ring-dc-us-r1-0", "dc-us", "10.0.1.2", "nodetool: Failed to connect\n")
    verdict = judge([silent])
    assert not verdict.ok and verdict.clusters == ("us",) and "printed no status" in str(verdict)


def test_one_exec_prints_every_section_in_order() -> None:
    assert NODETOOL_SCRIPT.index("nodetool status") < NODETOOL_SCRIPT.index("nodetool describecluster") \
        < NODETOOL_SCRIPT.index("nodetool netstats") < NODETOOL_SCRIPT.index("nodetool compactionstats")


def test_the_ring_per_node_keeps_each_datacenters_worst_view() -> None:
    from isthmus.rollout.dbgate import summarise

    one = report("ring-dc-eu-r1-0", st=status(us="DN"))
    other = report("ring-dc-eu-r2-0", st=status())  # the other dc-eu node has not convicted it yet
    view = summarise([one, other])
    us = next(n for n in view.nodes if n.address == "10.0.1.2")
    assert us.seen == {"dc-eu": "DN"} and us.state == "DN" and us.datacenter == "dc-us"
    assert view.asked == 2 and view.errors == ()
