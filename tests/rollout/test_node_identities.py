"""Recording each node's identity (pod name -> the address the ring knows it by) for its replacement (issue 13,
item 9): what is recorded, what is kept, what is dropped."""

from __future__ import annotations

from pathlib import Path

from isthmus.rollout.identities import merged_identities, observed_identities, spec_pods
from isthmus.rollout.ringview import NodeReport, parse_status
from isthmus.spec import CassandraCluster, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
H = ["07a2a639-c123-4f01-9897-b008232fe8e0", "1b0c3f5e-2a2b-4c4d-8e8f-0a1b2c3d4e5f",
     "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"]


def status(eu1: str = "UN", eu2: str = "UN", us: str = "UN") -> str:
    return f"""Datacenter: dc-eu
=================
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address   Load        Tokens  Owns (effective)  Host ID                               Rack
{eu1}  10.0.0.2  85.31 KiB   16      52.1%             {H[0]}  r1
{eu2}  10.0.0.3  ?           16      47.9%             {H[1]}  r2

Datacenter: dc-us
=================
Status=Up/Down
|/ State=Normal/Leaving/Joining/Moving
--  Address   Load        Tokens  Owns (effective)  Host ID                               Rack
{us}  10.0.1.2  1.02 MiB    16      ?                 {H[2]}  r1
"""


def report(pod: str, address: str, text: str, *, dc: str = "dc-eu", cluster: str = "eu",
           error: str = "") -> NodeReport:
    if error:
        return NodeReport(cluster, pod, dc, address, error=error)
    return NodeReport(cluster, pod, dc, address, tuple(parse_status(text)), mode="NORMAL")


def test_a_node_is_recorded_when_its_own_view_shows_it_up_and_normal() -> None:
    reports = [report("ring-dc-eu-r1-0", "10.0.0.2", status()),
               report("ring-dc-eu-r2-0", "10.0.0.3", status()),
               report("ring-dc-us-r1-0", "10.0.1.2", status(), dc="dc-us", cluster="us")]
    assert observed_identities(reports) == {"dc-eu": {"ring-dc-eu-r1-0": "10.0.0.2", "ring-dc-eu-r2-0": "10.0.0.3"},
                                            "dc-us": {"ring-dc-us-r1-0": "10.0.1.2"}}


def test_a_joining_or_replacing_node_or_one_that_did_not_answer_is_not_recorded() -> None:
    reports = [report("ring-dc-eu-r1-0", "10.0.0.2", status(eu2="UJ")),
               report("ring-dc-eu-r2-0", "10.0.0.3", status(eu2="UJ")),  # bootstrapping or replacing
               report("ring-dc-us-r1-0", "10.0.1.2", "", dc="dc-us", cluster="us", error="nodetool: timed out")]
    assert observed_identities(reports) == {"dc-eu": {"ring-dc-eu-r1-0": "10.0.0.2"}}
    # a pod whose address is not in the ring it sees (a new address not gossiped yet) is not recorded either
    assert observed_identities([report("ring-dc-eu-r2-0", "10.0.0.9", status())]) == {}


def test_a_dead_nodes_entry_is_kept_a_new_address_replaces_the_old_and_nothing_unchanged_is_written() -> None:
    pods = {"ring-dc-eu-r1-0", "ring-dc-eu-r2-0"}
    current = {"ring-dc-eu-r1-0": "10.0.0.2", "ring-dc-eu-r2-0": "10.0.0.3"}
    # r2 is down (not asked): its entry is what its replacement needs
    assert merged_identities(current, {"ring-dc-eu-r1-0": "10.0.0.2"}, pods) is None
    # r2 was replaced at a new address and is UN there
    assert merged_identities(current, {"ring-dc-eu-r2-0": "10.0.0.7"}, pods) == {
        "ring-dc-eu-r1-0": "10.0.0.2", "ring-dc-eu-r2-0": "10.0.0.7"}
    # no ConfigMap yet
    assert merged_identities(None, {"ring-dc-eu-r1-0": "10.0.0.2"}, pods) == {"ring-dc-eu-r1-0": "10.0.0.2"}
    assert merged_identities(None, {}, pods) is None


def test_an_entry_of_a_pod_scaled_away_or_of_an_address_now_taken_by_another_pod_is_dropped() -> None:
    current = {"ring-dc-eu-r1-0": "10.0.0.2", "ring-dc-eu-r2-0": "10.0.0.3", "ring-dc-eu-r1-1": "10.0.0.4"}
    pods = {"ring-dc-eu-r1-0", "ring-dc-eu-r2-0"}  # r1-1 is beyond the spec's size now
    assert merged_identities(current, {}, pods) == {"ring-dc-eu-r1-0": "10.0.0.2", "ring-dc-eu-r2-0": "10.0.0.3"}
    # r1-0 is UN at r2's old address: replacing 10.0.0.3 would replace a live node, so r2's entry goes
    assert merged_identities(current, {"ring-dc-eu-r1-0": "10.0.0.3"}, pods) == {"ring-dc-eu-r1-0": "10.0.0.3"}


def test_the_pods_of_the_spec_are_each_racks_ordinals() -> None:
    specs = load_files([EXAMPLES / "fleet.yaml", EXAMPLES / "cassandra.yaml"])
    app = specs.apps[0]
    assert isinstance(app, CassandraCluster)
    pods = spec_pods(app)
    for dc in app.spec.datacenters:
        assert len(pods[dc.name]) == dc.size
        for rack, size in dc.rack_sizes().items():
            assert {p for p in pods[dc.name] if p.startswith(f"orders-{dc.name}-{rack}-")} == \
                {f"orders-{dc.name}-{rack}-{i}" for i in range(size)}
