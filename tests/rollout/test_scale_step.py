"""The ``scale`` step's walk (:class:`isthmus.rollout.scaling.RingScaling`) over a scripted ring: the member's
StatefulSets, pods and ``nodetool`` are an in-memory stand-in here (the real ring runs it in
tests/ring/test_scaling.py), so the order of its writes, its resume and its failures are shown exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ExecResult, Reach
from isthmus.rollout import plan_rollout
from isthmus.rollout import scaling as scaling_module
from isthmus.rollout.gates import ClusterView, GateResult, GateVerdict
from isthmus.rollout.scaleplan import scale_plans
from isthmus.rollout.scaling import RingScaling, ScaleError
from isthmus.spec import CassandraCluster


class FakeRing:
    """One member (c2) with the app's StatefulSets: a pod appears (not Ready, then Ready at the next look) for
    each ordinal below the replicas and goes for each at or above them; nodetool answers from a script."""

    def __init__(self, replicas: Mapping[str, int], *, decommissioned: Sequence[str] = (),
                 refuse: Mapping[str, str] | None = None) -> None:
        self.replicas = dict(replicas)
        self.pods: dict[str, bool] = {f"{s}-{i}": True for s, n in self.replicas.items() for i in range(n)}
        self.claims = set(self.pods)
        self.decommissioned = set(decommissioned)
        self.refuse = dict(refuse or {})
        self.log: list[str] = []

    async def observe(self, _conns: Any, _app: str, _ns: str) -> dict[str, ClusterView]:
        wanted = {f"{s}-{i}" for s, n in self.replicas.items() for i in range(n)}
        for pod in list(self.pods):
            if pod not in wanted:
                del self.pods[pod]
        for pod in wanted:
            if pod in self.pods:
                self.pods[pod] = True  # Ready at the next look
            else:
                self.pods[pod] = False
                self.claims.add(pod)
        sts = tuple({"metadata": {"name": s}, "spec": {"replicas": n}} for s, n in self.replicas.items())
        pods = tuple({"metadata": {"name": p}, "status": {"conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}} for p, ready in sorted(self.pods.items()))
        return {"c2": ClusterView("c2", Reach.REACHED, sts, pods)}

    async def pod_exec(self, _conn: Any, _ns: str, pod: str, _container: str, command: Sequence[str], *,
                       within: float) -> ExecResult:
        verb = command[1]
        if verb == "netstats":
            return ExecResult(f"Mode: {'DECOMMISSIONED' if pod in self.decommissioned else 'NORMAL'}\n", "", 0)
        self.log.append(f"{pod}: nodetool {verb}")
        if verb in self.refuse:
            return ExecResult("", f"error: {self.refuse[verb]}\n-- StackTrace --\n", 1)
        if verb == "decommission":
            self.decommissioned.add(pod)
        return ExecResult("", "", 0)

    async def set_replicas(self, _conn: Any, _ns: str, name: str, replicas: int) -> None:
        self.log.append(f"{name}: replicas {replicas}")
        self.replicas[name] = replicas

    async def delete_claim(self, _conn: Any, _ns: str, name: str) -> bool:
        pod = name.removeprefix("data-")
        if pod not in self.claims:
            return False
        self.log.append(f"claim {name} deleted")
        self.claims.discard(pod)
        return True


class PassingGate:
    async def check(self, _ctx: Any) -> GateResult:
        return GateResult("database", GateVerdict.PASS)


def _app(size: int) -> CassandraCluster:
    return load(fleet_doc(), app_doc(size=size))[1]  # dc1..dc3, racks ra and rb


def _work(app: CassandraCluster, ring: FakeRing, monkeypatch: pytest.MonkeyPatch) -> RingScaling:
    for name in ("observe", "pod_exec", "set_replicas", "delete_claim"):
        monkeypatch.setattr(scaling_module, name, getattr(ring, name))
    work = RingScaling({c: object() for c in app.member_clusters()}, app, poll_interval=0.0)  # type: ignore[arg-type]
    work.gate = PassingGate()  # type: ignore[assignment]
    return work


def _step(app: CassandraCluster, before: dict[str, int]) -> Any:
    return plan_rollout(app, scaling=scale_plans(app, {"dc2": before})).step("scale/dc2")


async def test_scale_up_adds_one_node_at_a_time_then_cleans_the_old_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(4)
    ring = FakeRing({"shop-dc2-ra": 1, "shop-dc2-rb": 1})
    note, wrote = await _work(app, ring, monkeypatch).apply(_step(app, {"ra": 1, "rb": 1}))
    assert ring.log == ["shop-dc2-ra: replicas 2", "shop-dc2-rb: replicas 2",
                        "shop-dc2-ra-0: nodetool cleanup", "shop-dc2-rb-0: nodetool cleanup"]
    assert wrote and note == ("dc2 2 -> 4: bootstrapped shop-dc2-ra-1, shop-dc2-rb-1; nodetool cleanup on "
                              "shop-dc2-ra-0, shop-dc2-rb-0")
    # Run again (a resume): nothing joins twice, cleanup repeats (cheap), nothing else is written.
    ring.log.clear()
    note, wrote = await _work(app, ring, monkeypatch).apply(_step(app, {"ra": 1, "rb": 1}))
    assert ring.log == ["shop-dc2-ra-0: nodetool cleanup", "shop-dc2-rb-0: nodetool cleanup"] and not wrote
    assert note.startswith("dc2 2 -> 4: bootstrapped nothing (present already)")


async def test_scale_down_decommissions_before_lowering_and_deletes_the_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(2)
    ring = FakeRing({"shop-dc2-ra": 2, "shop-dc2-rb": 2})
    note, wrote = await _work(app, ring, monkeypatch).apply(_step(app, {"ra": 2, "rb": 2}))
    assert ring.log == ["shop-dc2-rb-1: nodetool decommission", "shop-dc2-rb: replicas 1",
                        "claim data-shop-dc2-rb-1 deleted",
                        "shop-dc2-ra-1: nodetool decommission", "shop-dc2-ra: replicas 1",
                        "claim data-shop-dc2-ra-1 deleted"]
    assert wrote and note == "dc2 4 -> 2: decommissioned shop-dc2-rb-1, shop-dc2-ra-1"


async def test_a_resumed_scale_down_does_not_decommission_a_node_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(3)
    # Killed after the decommission of ra-1, before its StatefulSet was lowered.
    ring = FakeRing({"shop-dc2-ra": 3, "shop-dc2-rb": 1}, decommissioned=["shop-dc2-ra-2"])
    await _work(app, ring, monkeypatch).apply(_step(app, {"ra": 3, "rb": 1}))
    assert ring.log == ["shop-dc2-ra: replicas 2", "claim data-shop-dc2-ra-2 deleted"]


async def test_a_decommission_cassandra_refuses_names_the_node_the_command_and_its_words(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(2)
    ring = FakeRing({"shop-dc2-ra": 2, "shop-dc2-rb": 1},
                    refuse={"decommission": "Not enough live nodes to maintain replication factor in keyspace shop"})
    with pytest.raises(ScaleError) as failed:
        await _work(app, ring, monkeypatch).apply(_step(app, {"ra": 2, "rb": 1}))
    assert str(failed.value) == ("c2/shop-dc2-ra-1: nodetool decommission exited 1: error: Not enough live nodes to "
                                 "maintain replication factor in keyspace shop")
    assert ring.replicas == {"shop-dc2-ra": 2, "shop-dc2-rb": 1} and "shop-dc2-ra-1" in ring.claims  # untouched


class RunningRing(FakeRing):
    """The same member, its pods reporting container IDs: real database processes (dbgate.has_runtime)."""

    async def observe(self, _conns: Any, _app: str, _ns: str) -> dict[str, ClusterView]:
        view = (await super().observe(_conns, _app, _ns))["c2"]
        pods = tuple({**p, "status": {**p["status"], "containerStatuses": [{"containerID": "containerd://1"}]}}
                     for p in view.pods)
        return {"c2": ClusterView("c2", Reach.REACHED, view.statefulsets, pods)}


def _rack(name: str, replicas: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": "shop"},
             "spec": {"replicas": replicas}}]


async def test_a_rack_write_that_would_drop_running_nodes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No scale step was planned (a member did not answer when the sizes were read, or someone scaled by hand):
    the rack step must not lower the replicas of pods that run Cassandra, which would drop nodes undecommissioned."""
    app = _app(2)
    step = plan_rollout(app).step("rack/dc2/ra")
    work = _work(app, RunningRing({"shop-dc2-ra": 2, "shop-dc2-rb": 1}), monkeypatch)
    with pytest.raises(ScaleError) as refused:
        await work.check_rack(step, _rack("shop-dc2-ra", 1))
    assert "StatefulSet shop/shop-dc2-ra runs 2 nodes and this revision asks for 1" in str(refused.value)
    assert "without decommissioning" in str(refused.value)
    await work.check_rack(step, _rack("shop-dc2-ra", 2))  # the same size, or more: written as before
    await work.check_rack(step, _rack("shop-dc2-ra", 3))
    # Simulated pods (kwok: no process) carry no data: the rack step sets their replicas, as before.
    await _work(app, FakeRing({"shop-dc2-ra": 2, "shop-dc2-rb": 1}), monkeypatch).check_rack(
        step, _rack("shop-dc2-ra", 1))
