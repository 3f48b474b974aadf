"""What a watch event on a member's object means: a status update, our own write, or someone else's change."""

from __future__ import annotations

import copy
from typing import Any

from isthmus.kube import changed_by_others, fingerprint
from isthmus.operator.watches import ChangeKind, Classifier


def entry(manager: str, time: str, *, operation: str = "Apply", subresource: str = "") -> dict[str, Any]:
    out = {"manager": manager, "operation": operation, "time": time, "fieldsType": "FieldsV1", "fieldsV1": {}}
    if subresource:
        out["subresource"] = subresource
    return out


def statefulset(*managers: dict[str, Any], replicas: int = 1, ready: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "shop-dc1-ra", "namespace": "shop", "resourceVersion": "7", "generation": 2,
                         "labels": {"isthmus.dev/app": "shop"}, "managedFields": list(managers)},
            "spec": {"replicas": replicas}, "status": {"readyReplicas": ready}}


def test_a_write_by_another_manager_after_ours_is_someone_elses() -> None:
    ours = entry("isthmus", "2026-01-01T10:00:00Z")
    assert not changed_by_others(statefulset(ours))
    assert changed_by_others(statefulset(ours, entry("kubectl-edit", "2026-01-01T10:05:00Z", operation="Update")))
    assert changed_by_others(statefulset(ours, entry("kubectl", "2026-01-01T10:00:00Z")))  # the same second counts
    assert not changed_by_others(statefulset(ours, entry("kubectl-edit", "2026-01-01T09:00:00Z", operation="Update")))
    # The controllers' status writes are not changes to what we applied.
    assert not changed_by_others(statefulset(ours, entry("kube-controller-manager", "2026-01-01T11:00:00Z",
                                                         operation="Update", subresource="status")))
    assert changed_by_others(statefulset(entry("kubectl-create", "2026-01-01T10:00:00Z", operation="Update")))


def test_status_updates_our_writes_and_other_peoples_are_told_apart() -> None:
    ours = entry("isthmus", "2026-01-01T10:00:00Z")
    classifier = Classifier()
    base = statefulset(ours)
    classifier.sync([base])

    status_moved = copy.deepcopy(base)
    status_moved["status"] = {"readyReplicas": 0}
    status_moved["metadata"]["resourceVersion"] = "8"
    status_moved["metadata"]["managedFields"].append(
        entry("kube-controller-manager", "2026-01-01T12:00:00Z", operation="Update", subresource="status"))
    assert fingerprint(status_moved) == fingerprint(base)
    assert classifier.classify("MODIFIED", status_moved) is ChangeKind.STATUS

    reapplied = statefulset(entry("isthmus", "2026-01-01T13:00:00Z"), replicas=2)
    assert classifier.classify("MODIFIED", reapplied) is ChangeKind.OURS

    scaled = statefulset(entry("isthmus", "2026-01-01T13:00:00Z"),
                         entry("kubectl", "2026-01-01T14:00:00Z", operation="Update", subresource="scale"), replicas=5)
    assert classifier.classify("MODIFIED", scaled) is ChangeKind.FOREIGN
    assert classifier.classify("MODIFIED", scaled) is ChangeKind.STATUS, "the same content again is no change"
    assert classifier.classify("DELETED", scaled) is ChangeKind.FOREIGN
