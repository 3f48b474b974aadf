"""One member failing in a rollout does not mark the others failed (issue 12, item 6), on the lab.

The operator's reconcile runs in this process against the lab's real API servers, with the member
registry fed the same kubeconfig Secrets the operator reads. In c2 someone else's field manager owns a
field of a ConfigMap the app writes, so c2's ``prepare`` is refused with a conflict; c1 and c3 are
reported as they are: reached, with what was written there, and not failed.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fixtures.labspecs import app_doc, fleet_doc
from fixtures.opharness import apply_doc, member_kubeconfig
from isthmus.kube import ApplyReport, Reach
from isthmus.kube.members import MemberSecret
from isthmus.lab import Lab
from isthmus.operator.members import MemberRegistry
from isthmus.operator.memory import Memory, parse_once
from isthmus.operator.metrics import OperatorMetrics
from isthmus.operator.reconciling import Reconciler, Trigger
from isthmus.operator.rollouts import roll_out
from isthmus.operator.settings import OperatorSettings

pytestmark = pytest.mark.lab
APP = "pmo"


@pytest.fixture
async def reconciler(lab3: Lab) -> AsyncIterator[Reconciler]:
    members = MemberRegistry()
    members.sync([MemberSecret(c, f"member-{c}", member_kubeconfig(lab3, c)) for c in ("c1", "c2", "c3")])
    rec = Reconciler(members=members, metrics=OperatorMetrics(), settings=OperatorSettings(identity="pmo-test"))
    try:
        yield rec
    finally:
        await rec.close()
        for state in members:
            if state.connection is not None:
                await state.connection.close()


def taken_by_someone_else(lab: Lab, cluster: str) -> None:
    """The app's namespace, and its dc2 ConfigMap with a key owned by another field manager."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{APP}-dc2-config", "namespace": APP},
         "data": {"cassandra.yaml": "owned: by someone else\n"}}]
    for doc in docs:
        apply_doc(lab, cluster, doc, "--field-manager=someone-else")


async def test_one_failed_member_is_reported_failed_and_the_others_as_they_are(
        lab3: Lab, reconciler: Reconciler) -> None:
    taken_by_someone_else(lab3, "c2")
    body = copy.deepcopy(app_doc(APP))
    body["metadata"] = {**body["metadata"], "generation": 1, "uid": "pmo-uid", "resourceVersion": "1"}
    try:
        outcome = await reconciler.reconcile(body, [fleet_doc()], trigger=Trigger.CREATE)
        failed = [e for e in outcome.events if e.reason == "RolloutFailed"]
        assert [e.message.split(":")[0] for e in failed] == ["c2"], outcome.events
        assert "conflict" in failed[0].message.lower() and "prepare/c2" in failed[0].message
        assert "apply on c2: Failed" in outcome.status.message
        assert "apply on c1" not in outcome.status.message and "apply on c3" not in outcome.status.message
        degraded = next(c for c in outcome.status.conditions if c.type == "Degraded")
        assert (degraded.status, degraded.reason) == ("True", "ApplyFailed")
        applied = next(e for e in outcome.events if e.reason == "Applied")
        assert applied.message.startswith("c1: ") and "; c3: " in applied.message and "c2" not in applied.message

        # The same, one level down: each member's own outcome from the engine, and its report.
        parsed = parse_once(body, [fleet_doc()], Memory())
        registry = reconciler.members.registry(["c1", "c2", "c3"])
        by_member = await roll_out(parsed.app, parsed.fleet, registry, parsed.manifests,
                                   members=reconciler.members, options=reconciler.rollout_options,
                                   metrics=reconciler.metrics)
        assert {c: o.reach for c, o in by_member.outcomes.items()} == {
            "c1": Reach.REACHED, "c2": Reach.FAILED, "c3": Reach.REACHED}
        assert not by_member.rolled_out and "prepare/c2" in by_member.outcomes["c2"].error
        # The same revision carries on where it stopped: c1's prepare is done, so nothing is repeated there.
        assert by_member.outcomes["c1"].value == ApplyReport("c1", ())
    finally:
        for cluster in ("c1", "c2", "c3"):
            lab3.kubectl(cluster, "delete", "namespace", APP, "--ignore-not-found", "--wait=false")

