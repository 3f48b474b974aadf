"""Whether a datacenter may restart a rack at once, from the replication the ring reports (nodetool
describecluster) and its racks (nodetool status): the proof, every way it fails, and the numbers said."""

from __future__ import annotations

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.rollout.keyspaceplan import LiveReplication, parse_replication
from isthmus.rollout.restartplan import choose_restart, choose_restarts
from isthmus.rollout.ringview import NodeReport, RingNode, parse_report

NTS = "NetworkTopologyStrategy"

DESCRIBE = """\
Cluster Information:
\tName: ring
\tSchema versions:
\t\t2207c2a9-f598-3971-986b-2926e09e239d: [10.0.0.2, 10.0.0.3]

Keyspaces:
\tsystem_auth -> Replication class: NetworkTopologyStrategy {dc1=3, dc2=1}
\tshop -> Replication class: NetworkTopologyStrategy {dc1=3}
\tsystem_traces -> Replication class: SimpleStrategy {replication_factor=2}
\tsystem -> Replication class: LocalStrategy {}
"""


def _nts(**factors: int) -> LiveReplication:
    return LiveReplication(NTS, factors)


def test_the_keyspaces_block_of_describecluster_is_parsed() -> None:
    found = parse_replication(DESCRIBE)
    assert found["system_auth"] == _nts(dc1=3, dc2=1)
    assert found["system_traces"] == LiveReplication("SimpleStrategy", {"replication_factor": 2})
    assert found["system"] == LiveReplication("LocalStrategy", {})
    assert list(found) == ["system_auth", "shop", "system_traces", "system"]
    assert parse_replication("Cluster Information:\n\tName: x\n") == {}


def test_rf_three_over_three_racks_proves_a_rack_at_once() -> None:
    choice = choose_restart("dc1", ["r1", "r2", "r3"], {"shop": _nts(dc1=3, dc2=3), "auth": _nts(dc1=3),
                                                       "system": LiveReplication("LocalStrategy", {}),
                                                       "elsewhere": _nts(dc2=2)})
    assert choice.rack_at_once
    assert choice.line() == ("dc1: a rack at once is safe: every keyspace with replicas here is on "
                             "NetworkTopologyStrategy with 3 replicas over 3 racks: a rack holds at most one "
                             "replica of each range, so LOCAL_QUORUM survives a rack down")


def test_every_way_the_proof_fails_is_one_node_at_a_time_with_the_numbers() -> None:
    racks3 = ["r1", "r2", "r3"]
    two_racks = choose_restart("dc1", ["r1", "r2"], {"shop": _nts(dc1=3)})
    assert two_racks.line() == ("dc1: one node at a time: keyspace shop has 3 replicas in dc1 over 2 racks: a rack "
                                "can hold two replicas of a range")
    assert choose_restart("dc1", racks3, {"shop": _nts(dc1=2)}).reason == (
        "keyspace shop has 2 replicas in dc1: LOCAL_QUORUM needs 3 to survive a rack down")
    assert choose_restart("dc1", racks3, {"shop": _nts(dc1=1)}).reason.startswith("keyspace shop has 1 replica in")
    simple = choose_restart("dc1", racks3, {"shop": _nts(dc1=3),
                                            "system_traces": LiveReplication("SimpleStrategy",
                                                                             {"replication_factor": 2})})
    assert not simple.rack_at_once and simple.reason == (
        "keyspace system_traces is on SimpleStrategy, which places replicas without regard to racks")
    unknown = choose_restart("dc1", racks3, None, unknown="eu/ring-0: nodetool: timed out")
    assert unknown.line() == "dc1: one node at a time: the replication is not known (eu/ring-0: nodetool: timed out)"
    assert choose_restart("dc9", [], {"shop": _nts(dc1=3)}).reason == "the datacenter is not in the ring yet"
    assert not choose_restart("dc1", racks3, {"elsewhere": _nts(dc2=3)}).rack_at_once
    wide = choose_restart("dc1", ["r1", "r2", "r3", "r4", "r5"], {"a": _nts(dc1=3), "b": _nts(dc1=5)})
    assert wide.rack_at_once and "with 3 to 5 replicas over 5 racks" in wide.reason


def _report(pod: str, dc: str, racks: dict[str, str], describe: str = DESCRIBE, error: str = "") -> NodeReport:
    ring = tuple(RingNode(d, addr, "U", "N", "1 MiB", "?", "0" * 36, rack) for addr, (d, rack) in
                 {a: tuple(v.split("/")) for a, v in racks.items()}.items())
    if error:
        return NodeReport("c1", pod, dc, "", error=error)
    return NodeReport("c1", pod, dc, "", ring, keyspaces=parse_replication(describe))


def test_every_datacenter_of_the_app_is_judged_from_any_node_that_answered() -> None:
    _, app = load(fleet_doc(), app_doc("rc", size=3))
    racks = {"10.0.0.1": "dc1/ra", "10.0.0.2": "dc1/rb", "10.0.0.3": "dc1/rc", "10.0.1.1": "dc2/ra"}
    choices = choose_restarts(app, [_report("p0", "dc1", {}, error="nodetool: timed out"),
                                    _report("p1", "dc1", racks)])
    assert [c.datacenter for c in choices] == ["dc1", "dc2", "dc3"]
    assert [c.rack_at_once for c in choices] == [False, False, False]
    assert choices[0].reason.startswith("keyspace system_traces is on SimpleStrategy")
    proven = DESCRIBE.replace("SimpleStrategy {replication_factor=2}", "NetworkTopologyStrategy {dc1=3}")
    choices = choose_restarts(app, [_report("p1", "dc1", racks, proven)])
    assert [c.rack_at_once for c in choices] == [True, False, False]
    assert choices[1].reason == "keyspace system_auth has 1 replica in dc2: LOCAL_QUORUM needs 3 to survive a rack down"
    assert choices[2].reason == "the datacenter is not in the ring yet"
    nobody = choose_restarts(app, [_report("p0", "dc1", {}, error="nodetool exited 1: refused")])
    assert nobody[0].reason == "the replication is not known (c1/p0: nodetool exited 1: refused)"
    assert choose_restarts(app, [])[0].reason == "the replication is not known (no Ready node to ask)"
    assert choose_restarts(app, [], unreachable=["c2"])[1].reason == "the replication is not known (c2 does not answer)"
    cut = choose_restarts(app, [_report("p1", "dc1", racks, proven)], unreachable=["c1"])
    assert cut[0].line() == "dc1: one node at a time: the replication is not known (c1 does not answer)"


def test_the_gate_report_carries_the_keyspaces() -> None:
    output = "\n".join(["=== isthmus: status", "Datacenter: dc1",
                        "UN  10.0.0.2  1.2 MiB  16  ?  " + "a" * 8 + "-" + "b" * 4 + "-" + "c" * 4 + "-" + "d" * 4
                        + "-" + "e" * 12 + "  ra",
                        "=== isthmus: describecluster", DESCRIBE, "=== isthmus: netstats", "Mode: NORMAL",
                        "=== isthmus: compactionstats", "pending tasks: 0"])
    report = parse_report("c1", "p", "dc1", "10.0.0.2", output)
    assert report.answered, report.error
    assert report.keyspaces["shop"] == _nts(dc1=3)
