"""The pure decisions of a rack's roll: recreate for the pod management, replicas raised one at a time,
which pods a rack-at-once restart deletes."""

from __future__ import annotations

from typing import Any

from isthmus.rollout.rackrolling import first_nodes, joining_steps, needs_recreate, outdated_pods


def _sts(replicas: int, policy: str | None = "Parallel", revision: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": replicas}
    if policy is not None:
        spec["podManagementPolicy"] = policy
    return {"kind": "StatefulSet", "metadata": {"name": "ring-dc-eu-r1"}, "spec": spec,
            "status": {"updateRevision": revision} if revision else {}}


def _pod(name: str, revision: str, *, going: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"controller-revision-hash": revision}}
    if going:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_only_a_live_statefulset_managed_otherwise_is_recreated() -> None:
    assert needs_recreate(_sts(2, "OrderedReady"), _sts(2))
    assert needs_recreate(_sts(2, None), _sts(2))  # the server's default is OrderedReady
    assert not needs_recreate(_sts(2), _sts(3))
    assert not needs_recreate(None, _sts(2))


def test_new_nodes_join_one_at_a_time() -> None:
    assert joining_steps(None, _sts(3), 0) == [1, 2]  # then 3
    assert joining_steps(None, _sts(1), 0) == []
    assert joining_steps(_sts(1), _sts(3), 1) == [2]
    assert joining_steps(_sts(3), _sts(3), 3) == []
    assert joining_steps(_sts(3), _sts(2), 3) == []  # fewer: no steps up
    # A recreate cut short leaves orphans: they are adopted with the count they have, not started one by one.
    assert joining_steps(None, _sts(3), 3) == []
    assert joining_steps(None, _sts(3), 2) == []
    assert joining_steps(None, _sts(3, "OrderedReady"), 0) == []  # the controller orders those itself


def test_a_rack_at_once_deletes_every_pod_not_on_the_update_revision() -> None:
    pods = [_pod("p-0", "old"), _pod("p-1", "new"), _pod("p-2", "old"), _pod("p-3", "old", going=True)]
    assert outdated_pods(_sts(4, revision="new"), pods) == ["p-0", "p-2"]
    assert outdated_pods(_sts(4), pods) == []  # the controller has not said which revision is current


def _named(name: str, replicas: int) -> dict[str, Any]:
    return {"kind": "StatefulSet", "metadata": {"name": name}, "spec": {"replicas": replicas}}


def test_the_first_node_of_every_rack_comes_before_any_rack_grows() -> None:
    three = [_named("r1", 2), _named("r2", 2), _named("r3", 2)]
    assert first_nodes(three, []) == ["r1", "r2", "r3"]  # a new datacenter: r1-0, r2-0, r3-0, then r1-1 ...
    assert first_nodes(three, ["r1"]) == ["r2", "r3"]  # resumed after r1 was created
    assert first_nodes(three, ["r1", "r2", "r3"]) == []
    assert first_nodes([_named("r1", 1), _named("r2", 1), _named("r3", 1)], []) == []  # one node per rack
    assert first_nodes([_named("r1", 3), _named("r2", 3)], []) == []  # two racks allocate for 2: any order
    assert first_nodes([*three, _named("r4", 0)], []) == ["r1", "r2", "r3"]  # an empty rack starts nothing


def test_a_datacenter_of_two_racks_allocates_tokens_for_two() -> None:
    import yaml

    from isthmus.render.cassandra_config import cassandra_yaml
    from isthmus.spec import API_VERSION, CassandraCluster

    def allocation(racks: int) -> int:
        doc = {"apiVersion": API_VERSION, "kind": "CassandraCluster", "metadata": {"name": "ring"},
               "spec": {"version": "5.0.2", "datacenters": [{"name": "dc1", "cluster": "c1", "size": racks * 2,
                                                              "racks": [{"name": f"r{i}", "zone": f"z{i}"}
                                                                        for i in range(1, racks + 1)]}]}}
        app = CassandraCluster.model_validate(doc)
        text = cassandra_yaml(app, app.spec.datacenters[0], cluster_domain="cluster.local",
                              clusterset_domain="clusterset.local")
        return int(yaml.safe_load(text)["allocate_tokens_for_local_replication_factor"])

    assert [allocation(n) for n in (1, 2, 3, 4)] == [3, 2, 3, 3]
