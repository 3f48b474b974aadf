"""Rolling out, end to end on the lab: a first apply, a change, a no-op, history."""

from __future__ import annotations

import json

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterRegistry
from isthmus.lab import Lab
from isthmus.rollout import RolloutOptions, RolloutPhase, apply_rollout, history

pytestmark = pytest.mark.lab
FAST = RolloutOptions(poll_interval=0.3)


def generations(lab: Lab, cluster: str, namespace: str) -> dict[str, int]:
    out = json.loads(lab.kubectl(cluster, "get", "statefulsets", "-n", namespace, "-o", "json"))
    return {i["metadata"]["name"]: i["metadata"]["generation"] for i in out["items"]}


async def test_first_apply_then_a_change_rolls_rack_by_rack(lab3: Lab, registry: ClusterRegistry) -> None:
    fleet, app = load(fleet_doc(), app_doc("smk"))
    first = await apply_rollout(app, fleet, registry, FAST)
    assert first.phase is RolloutPhase.SUCCEEDED, first.state.to_dict()
    assert first.state.revision == 1
    _, changed = load(fleet_doc(), app_doc("smk", heap="512M"))
    second = await apply_rollout(changed, fleet, registry, FAST)
    assert second.phase is RolloutPhase.SUCCEEDED, second.state.to_dict()
    assert second.state.revision == 2
    assert all(g == 2 for c in ("c1", "c2", "c3") for g in generations(lab3, c, "smk").values())
    again = await apply_rollout(changed, fleet, registry, FAST)
    assert again.state.revision == 2 and again.phase is RolloutPhase.SUCCEEDED
    assert all(g == 2 for c in ("c1", "c2", "c3") for g in generations(lab3, c, "smk").values())
    hist = await history(registry, "c1", ["c1", "c2", "c3"], "smk", "smk")
    assert [r.number for r in hist.revisions] == [1, 2]
    assert hist.state_of(2) == {"c1": "Running", "c2": "Running", "c3": "Running"}
