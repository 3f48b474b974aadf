"""A rack's StatefulSet on the lab's real API servers and controllers (kwok's pods): new nodes join one at a
time although the racks manage their pods in parallel, and a rack made before (``OrderedReady``, a field a
live StatefulSet cannot change) is recreated in place: its pods are adopted, none restarts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterRegistry
from isthmus.lab import Lab
from isthmus.render import Manifests, render
from isthmus.render.hashing import stamp
from isthmus.rollout import RolloutOptions, RolloutPhase, apply_rollout

pytestmark = pytest.mark.lab
FAST = RolloutOptions(poll_interval=0.3)


def _statefulsets(lab: Lab, cluster: str, namespace: str) -> dict[str, Any]:
    out = json.loads(lab.kubectl(cluster, "get", "statefulsets", "-n", namespace, "-o", "json"))
    return {i["metadata"]["name"]: i for i in out["items"]}


def _pods(lab: Lab, cluster: str, namespace: str) -> dict[str, tuple[str, str]]:
    """Pod -> (uid, the uid of the StatefulSet that owns it)."""
    out = json.loads(lab.kubectl(cluster, "get", "pods", "-n", namespace, "-o", "json"))
    return {p["metadata"]["name"]: (p["metadata"]["uid"],
                                    next((o["uid"] for o in p["metadata"].get("ownerReferences") or []
                                          if o.get("controller")), ""))
            for p in out["items"]}


def _ordered(manifests: Manifests) -> Manifests:
    """The manifests as a version before this one rendered them: racks started their pods in order."""
    def old(obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("kind") != "StatefulSet":
            return obj
        spec = dict(obj["spec"])
        spec["podManagementPolicy"] = "OrderedReady"
        return stamp({**obj, "spec": spec})  # its own content hash, as that version wrote it
    return Manifests({c: tuple(old(o) for o in manifests.for_cluster(c)) for c in manifests.clusters})


async def test_an_ordered_rack_is_recreated_with_its_pods_adopted_and_new_nodes_join_one_at_a_time(
        lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("rrl", size=4))  # two racks of two nodes per datacenter
    first = await apply_rollout(app, fleet, registry, FAST, rendered=_ordered(render(app, fleet)))
    assert first.phase is RolloutPhase.SUCCEEDED, first.state.to_dict()
    before = {c: _statefulsets(lab3, c, "rrl") for c in ("c1", "c2", "c3")}
    assert {s["spec"]["podManagementPolicy"] for sets in before.values() for s in sets.values()} \
        == {"OrderedReady"}
    pods_before = {c: _pods(lab3, c, "rrl") for c in ("c1", "c2", "c3")}
    assert sum(len(p) for p in pods_before.values()) == 12

    said: list[str] = []
    second = await apply_rollout(app, fleet, registry, FAST, progress=lambda c, m: said.append(f"{c}: {m}"))
    assert second.phase is RolloutPhase.SUCCEEDED, second.state.to_dict()
    for cluster in ("c1", "c2", "c3"):
        after = _statefulsets(lab3, cluster, "rrl")
        assert set(after) == set(before[cluster])
        pods = _pods(lab3, cluster, "rrl")
        for name, sts in after.items():
            assert sts["spec"]["podManagementPolicy"] == "Parallel"
            assert sts["metadata"]["uid"] != before[cluster][name]["metadata"]["uid"]
            owned = {p for p, (_, owner) in pods.items() if owner == sts["metadata"]["uid"]}
            assert len(owned) == 2, f"{cluster}/{name} adopted {owned}"
        # Adopted, not replaced: the same pods (uids) as before the recreate.
        assert {p: uid for p, (uid, _) in pods.items()} == {p: uid for p, (uid, _) in pods_before[cluster].items()}
    notes = [r.note for r in second.state.steps.values() if r.note]
    assert sum("recreated (OrderedReady -> Parallel" in n for n in notes) == 6, notes

    # A new datacenter's racks: the replicas are raised one at a time, each count waited on until Ready.
    _, grown = load(fleet_doc(), app_doc("rrn", size=4))
    said.clear()
    third = await apply_rollout(grown, fleet, registry, FAST, progress=lambda c, m: said.append(f"{c}: {m}"))
    assert third.phase is RolloutPhase.SUCCEEDED, third.state.to_dict()
    joined = [m for m in said if "one joins at a time" in m]
    assert len(joined) == 6, said  # 1 of 2 then the full count, in each of the 6 racks
    for cluster in ("c1", "c2", "c3"):
        for sts in _statefulsets(lab3, cluster, "rrn").values():
            assert sts["spec"]["podManagementPolicy"] == "Parallel"
            assert sts["spec"]["replicas"] == 2 and sts["status"]["readyReplicas"] == 2
            assert sts["metadata"]["generation"] == 2  # written at 1, then at 2
