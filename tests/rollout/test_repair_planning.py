"""Repair (issue 13 item 8) without a ring: the plan's order, bad input, nodetool's words, and a run over a
scripted ring on a fake clock (the gate's wait, a failure, an Unknown member, a resume that skips finished
nodes)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterUnreachable, ExecResult
from isthmus.rollout import BadRepair, FakeClock, Outcome, RolloutPhase, plan_repair
from isthmus.rollout.repairing import Look, RepairOptions, RepairRun
from isthmus.rollout.repairplan import (
    RepairNode,
    RepairPlan,
    check_keyspaces,
    check_selection,
    nodetool_failure,
    parse_keyspaces,
)
from isthmus.rollout.repairstate import RepairState

_, APP = load(fleet_doc(), app_doc(size=3))  # three datacenters dc1..dc3, racks ra (2 nodes) and rb (1)
ORDER = [f"{dc}/shop-{dc}-{pod}" for dc in ("dc1", "dc2", "dc3") for pod in ("ra-0", "ra-1", "rb-0")]

DESCRIBECLUSTER = """Cluster Information:
\tName: ring
\tSnitch: org.apache.cassandra.locator.DynamicEndpointSnitch
\tDynamicEndPointSnitch: enabled
\tPartitioner: org.apache.cassandra.dht.Murmur3Partitioner
\tSchema versions:
\t\t2207c2a9-f598-3971-986b-2926e09e239d: [10.0.0.2, 10.0.0.3]

Stats for all nodes:
\tLive: 2
\tJoining: 0
\tMoving: 0
\tLeaving: 0
\tUnreachable: 0

Data Centers:
\tdc1 #Nodes: 2 #Down: 0

Database versions:
\t5.0.9: [10.0.0.2:7000, 10.0.0.3:7000]

Keyspaces:
\tsystem_auth -> Replication class: NetworkTopologyStrategy {dc1=2}
\tshop -> Replication class: NetworkTopologyStrategy {dc1=2}
\tsystem_distributed -> Replication class: SimpleStrategy {replication_factor=3}
\tsystem -> Replication class: LocalStrategy {}
"""


def test_the_plan_goes_node_by_node_datacenter_by_datacenter_in_the_spec_order() -> None:
    plan = plan_repair(APP, keyspaces=["shop"])
    assert [n.id for n in plan.nodes] == ORDER
    assert plan.nodes[0] == RepairNode("dc1", "ra", "shop-dc1-ra-0", "c1")
    assert plan.commands() == (("nodetool", "repair", "-pr", "-full", "shop"),)
    assert plan_repair(APP).commands() == (("nodetool", "repair", "-pr", "-full"),)
    two = plan_repair(APP, keyspaces=["a", "b", "a"]).commands()
    assert [c[-1] for c in two] == ["a", "b"]


def test_only_the_named_datacenters_are_planned_in_the_spec_order_whatever_the_order_asked() -> None:
    plan = plan_repair(APP, datacenters=["dc3", "dc1"])
    assert [n.id for n in plan.nodes] == ORDER[:3] + ORDER[6:]
    assert plan.datacenters == ("dc1", "dc3")
    assert plan == RepairPlan.from_dict(plan.to_dict())


def test_a_datacenter_the_spec_lacks_is_refused_naming_the_ones_it_has() -> None:
    check_selection(APP, ["dc2"])
    with pytest.raises(BadRepair, match=r"--dc dc9: app shop has no datacenter 'dc9' \(its datacenters: dc1, dc2, "
                                        r"dc3\); nothing was repaired") as caught:
        check_selection(APP, ["dc2", "dc9"])
    assert caught.value.exit_code == 2


def test_keyspaces_come_from_describecluster_and_a_missing_one_is_refused() -> None:
    names = parse_keyspaces(DESCRIBECLUSTER)
    assert names == ("system_auth", "shop", "system_distributed", "system")
    assert parse_keyspaces("Cluster Information:\n\tName: x\n") == ()
    check_keyspaces("shop", ["shop", "system_auth"], names, "nodetool describecluster on c1/p")
    with pytest.raises(BadRepair, match=r"--keyspace shoq: the ring of app shop has no keyspace 'shoq' \(as "
                                        r"nodetool describecluster on c1/p lists them: shop, system_auth, "
                                        r"system_distributed\)"):
        check_keyspaces("shop", ["shoq"], names, "nodetool describecluster on c1/p")
    with pytest.raises(BadRepair, match="node-local system keyspace"):
        check_keyspaces("shop", ["system"], names, "x")


def test_a_failed_nodetool_is_reported_in_cassandras_own_words() -> None:
    stdout = ("[2026-12-02 05:50:01,000] Starting repair command #1 (ab), repairing keyspace shop with repair "
              "options (parallelism: parallel, primary range: true, incremental: false)\n"
              "[2026-12-02 05:50:02,000] Repair command #1 failed with error Endpoint not alive: /10.0.0.3:7000\n")
    stderr = ("error: Repair job has failed with the error message: Endpoint not alive: /10.0.0.3:7000\n"
              "-- StackTrace --\n")
    said = nodetool_failure(stdout, stderr)
    assert said.startswith("error: Repair job has failed with the error message: Endpoint not alive")
    assert "Repair command #1 failed with error Endpoint not alive" in said
    assert nodetool_failure("a\nb\nc\nd\n", "") == "b | c | d"
    assert nodetool_failure("", "") == "nodetool printed nothing"
    assert len(nodetool_failure("", "error: " + "x" * 1000)) == 400


# -- a run over a scripted ring -------------------------------------------------------------------------


class Ring:
    """Scripted answers: gate waits per node (how many looks before it passes), failures, Unknown members."""

    def __init__(self, *, waits: dict[str, int] | None = None, fails: dict[str, str] | None = None,
                 unknown: Sequence[str] = (), drops: Sequence[str] = ()) -> None:
        self.waits, self.fails = dict(waits or {}), dict(fails or {})
        self.unknown, self.drops = set(unknown), set(drops)
        self.ran: list[tuple[str, tuple[str, ...]]] = []
        self.looks: list[str] = []

    async def look(self, node: RepairNode) -> Look:
        self.looks.append(node.id)
        if node.cluster in self.unknown:
            return Look(unknown="no answer within 3s")
        if self.waits.get(node.id, 0) > 0:
            self.waits[node.id] -= 1
            return Look(wait="database: dc2 (shop-dc2-ra-0) sees 10.0.2.5 of dc2 rack rb DN (Down/Normal)")
        return Look()

    async def run(self, node: RepairNode, command: Sequence[str], *, within: float) -> ExecResult:
        assert within == 3600.0
        if node.id in self.drops:
            raise ClusterUnreachable(node.cluster, "connection refused")
        self.ran.append((node.id, tuple(command)))
        if node.id in self.fails:
            return ExecResult("", self.fails[node.id], 2)
        return ExecResult("Repair completed successfully", "", 0)


class Store:
    def __init__(self) -> None:
        self.saved: list[dict[str, object]] = []

    async def save(self, state: RepairState) -> None:
        self.saved.append(state.to_dict())


class Lock:
    def __init__(self) -> None:
        self.verified = 0

    async def verify(self) -> None:
        self.verified += 1


def _run(state: RepairState, ring: Ring, clock: FakeClock, **options: float) -> tuple[RepairRun, Store]:
    store = Store()
    said: list[tuple[str, str]] = []
    run = RepairRun(state, ring=ring, store=store, lock=Lock(), say=lambda w, m: said.append((w, m)),
                    options=RepairOptions(clock=clock, poll_interval=5.0, **options))
    return run, store


async def test_every_node_is_repaired_in_order_with_its_state_saved_before_and_after() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP, keyspaces=["shop"]), number=1)
    ring = Ring()
    run, store = _run(state, ring, clock)
    await run.run()
    assert [node for node, _ in ring.ran] == ORDER
    assert state.phase is RolloutPhase.SUCCEEDED and list(state.done) == ORDER
    assert run.repaired == ORDER
    assert len(store.saved) == 2 * len(ORDER)
    first = store.saved[0]["nodes"]
    assert isinstance(first, dict) and first[ORDER[0]]["outcome"] == "Running"


async def test_a_node_waits_for_the_gate_on_the_clock_then_goes_on() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP, datacenters=["dc2"]), number=1)
    ring = Ring(waits={"dc2/shop-dc2-ra-1": 2})
    run, _ = _run(state, ring, clock)
    task = asyncio.create_task(run.run())
    await clock.until_sleeping()
    assert [n for n, _ in ring.ran] == ["dc2/shop-dc2-ra-0"]  # the second node waits: not started
    await clock.advance(5)
    await clock.until_sleeping()
    assert len(ring.ran) == 1
    await clock.advance(5)
    await asyncio.wait_for(task, 5)
    assert [n for n, _ in ring.ran] == ORDER[3:6] and state.phase is RolloutPhase.SUCCEEDED


async def test_a_gate_that_never_passes_pauses_the_repair_and_says_why() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP, datacenters=["dc1"]), number=1)
    ring = Ring(waits={"dc1/shop-dc1-ra-1": 1000})
    run, _ = _run(state, ring, clock, gate_timeout=60.0)
    task = asyncio.create_task(run.run())
    for _ in range(12):
        await clock.until_sleeping()
        await clock.advance(5)
    await asyncio.wait_for(task, 5)
    assert state.phase is RolloutPhase.PAUSED
    assert state.message.startswith("paused at dc1/shop-dc1-ra-1: the database gate did not pass within 60s: "
                                    "database: dc2 (shop-dc2-ra-0) sees 10.0.2.5")
    assert [n for n, _ in ring.ran] == ORDER[:1] and state.done == (ORDER[0],)


async def test_a_failure_stops_the_repair_naming_the_node_the_command_and_cassandras_words() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP, keyspaces=["shop"]), number=1)
    ring = Ring(fails={ORDER[4]: "error: Repair job has failed with the error message: Endpoint not alive: /10.0.2.5"})
    run, _ = _run(state, ring, clock)
    await run.run()
    assert state.phase is RolloutPhase.FAILED
    assert state.message == ("c2/shop-dc2-ra-1: nodetool repair -pr -full shop exited 2: error: Repair job has "
                             "failed with the error message: Endpoint not alive: /10.0.2.5")
    assert [n for n, _ in ring.ran] == ORDER[:5]
    assert state.nodes[ORDER[4]].outcome is Outcome.FAILED and state.done == tuple(ORDER[:4])


async def test_an_unknown_member_leaves_its_nodes_not_done_and_the_repair_is_not_a_success() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP), number=1)
    ring = Ring(unknown=["c2"], drops=[ORDER[7]])
    run, _ = _run(state, ring, clock)
    await run.run()
    assert state.phase is RolloutPhase.PAUSED
    # c3 stops answering during its second node's repair: from then on, it is Unknown too.
    assert [n for n, _ in ring.ran] == ORDER[:3] + ORDER[6:7]
    assert ring.looks.count(ORDER[4]) == 0  # one look at c2 told it is Unknown; its other nodes are not asked
    for node in ORDER[3:6]:
        assert state.nodes[node].note == "Unknown: cluster c2: no answer within 3s"
    for node in ORDER[7:]:
        assert state.nodes[node].note == "Unknown: cluster c3: connection refused"
        assert state.nodes[node].outcome is Outcome.PENDING
    assert state.done == tuple(ORDER[:3] + ORDER[6:7])
    assert state.message.startswith("5 of 9 nodes not repaired (dc2/shop-dc2-ra-0, ")
    assert "c2: no answer within 3s" in state.message and "run the same repair again" in state.message


async def test_a_resumed_repair_skips_the_nodes_that_finished_and_reruns_the_one_caught_mid_way() -> None:
    clock = FakeClock()
    state = RepairState.new(plan_repair(APP, keyspaces=["shop"]), number=4)
    for node in ORDER[:4]:
        state.nodes[node].outcome = Outcome.DONE
    state.nodes[ORDER[4]].outcome = Outcome.RUNNING  # the process died during this node's repair
    stored = RepairState.from_dict(state.to_dict())  # as the store gives it back
    assert stored.plan == plan_repair(APP, keyspaces=["shop"]) and stored.done == tuple(ORDER[:4])
    ring = Ring()
    run, _ = _run(stored, ring, clock)
    await run.run()
    assert [n for n, _ in ring.ran] == ORDER[4:]
    assert stored.phase is RolloutPhase.SUCCEEDED and run.repaired == ORDER[4:]
    assert stored.summary().done == 9 and stored.summary().number == 4
