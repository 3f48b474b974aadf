"""``spec.keyspaces``: what replication a spec may declare, and every refusal located, with the numbers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from fixtures.labspecs import app_doc, fleet_doc
from isthmus.spec import CassandraCluster, Consistency, SpecError, check_consistency, json_schema, load_text
from isthmus.spec.keyspaces import replicas_needed


def _problems(keyspaces: list[dict[str, Any]], *, size: int = 2) -> list[str]:
    app = app_doc("ks", size=size)
    app["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    text = yaml.safe_dump(fleet_doc()) + "---\n" + yaml.safe_dump(app, sort_keys=False)
    try:
        check_consistency(load_text(text, "ks.yaml"))
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return []


def _line(keyspaces: list[dict[str, Any]], needle: str) -> int:
    """The line of ``needle`` in the text :func:`_problems` loads."""
    app = app_doc("ks")
    app["spec"]["keyspaces"] = keyspaces  # type: ignore[index]
    text = yaml.safe_dump(fleet_doc()) + "---\n" + yaml.safe_dump(app, sort_keys=False)
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_declared_keyspace_loads_with_its_defaults() -> None:
    app = app_doc("ks")
    app["spec"]["keyspaces"] = [  # type: ignore[index]
        {"name": "shop", "replication": {"dc1": 2, "dc2": 2}, "consistency": "ONE"},
        {"name": "system_auth", "replication": {"dc1": 2, "dc2": 2, "dc3": 2}, "consistency": "QUORUM"}]
    model = CassandraCluster.model_validate(app)
    shop, auth = model.spec.keyspaces
    assert shop.replication == {"dc1": 2, "dc2": 2} and shop.consistency is Consistency.ONE
    assert shop.replication_text() == "NetworkTopologyStrategy dc1=2, dc2=2"
    assert auth.name == "system_auth"
    assert model.spec.keyspace_problems() == []
    assert CassandraCluster.model_validate(app_doc("ks")).spec.keyspaces == []
    default = CassandraCluster.model_validate({**app, "spec": {**app["spec"], "keyspaces": [  # type: ignore[dict-item]
        {"name": "k", "replication": {"dc1": 2}}]}})
    assert default.spec.keyspaces[0].consistency is Consistency.LOCAL_QUORUM


def test_more_replicas_than_nodes_is_refused_with_the_numbers_and_the_line() -> None:
    keyspaces = [{"name": "shop", "replication": {"dc1": 3, "dc2": 2}, "consistency": "ONE"}]
    assert _problems(keyspaces) == [
        f"ks.yaml:{_line(keyspaces, 'dc1: 3')}: spec.keyspaces[0].replication.dc1: keyspace 'shop' asks for 3 "
        "replicas in datacenter 'dc1', which has 2 nodes (spec.datacenters[0].size); a datacenter holds at most "
        "one replica per node: lower the replicas or grow the datacenter"]


def test_a_datacenter_the_spec_lacks_is_refused() -> None:
    [problem] = _problems([{"name": "shop", "replication": {"dc9": 1, "dc1": 2}, "consistency": "ONE"}])
    assert problem.endswith("spec.keyspaces[0].replication.dc9: keyspace 'shop' replicates to datacenter 'dc9', "
                            "which the spec does not have (datacenters: dc1, dc2, dc3)")


def test_local_quorum_on_two_replicas_is_unreadable_during_a_restart() -> None:
    problem = _problems([{"name": "shop", "replication": {"dc1": 2, "dc2": 2}}], size=2)[0]
    assert "spec.keyspaces[0].replication.dc1: keyspace 'shop' is read at LOCAL_QUORUM, which needs 2 of the 2 " \
           "replicas in datacenter 'dc1'" in problem
    assert "LOCAL_QUORUM needs at least 3 replicas per datacenter; datacenter 'dc1' has 2 nodes, so grow it " \
           "first" in problem
    # dc2 is refused too, each located at its own key
    both = _problems([{"name": "shop", "replication": {"dc1": 2, "dc2": 2}}], size=2)
    assert len(both) == 2 and "replication.dc2" in both[1]
    assert _problems([{"name": "shop", "replication": {"dc1": 3, "dc2": 3}}], size=3) == []


def test_local_one_needs_two_replicas_and_the_global_levels_count_every_datacenter() -> None:
    [one] = _problems([{"name": "k", "replication": {"dc1": 1}, "consistency": "LOCAL_ONE"}])
    assert "is read at LOCAL_ONE, which needs 1 of the 1 replicas in datacenter 'dc1'" in one
    assert "LOCAL_ONE needs at least 2 replicas per datacenter, or read at a lower consistency" in one
    assert _problems([{"name": "k", "replication": {"dc1": 2}, "consistency": "LOCAL_ONE"}]) == []
    assert _problems([{"name": "k", "replication": {"dc1": 1, "dc2": 1}, "consistency": "ONE"}]) == []
    [quorum] = _problems([{"name": "k", "replication": {"dc1": 1, "dc2": 1}, "consistency": "QUORUM"}])
    assert quorum.endswith("spec.keyspaces[0].consistency: keyspace 'k' is read at QUORUM, which needs 2 of its 2 "
                           "replicas: a restart of one node (every rollout restarts nodes) leaves it unreadable; "
                           "QUORUM needs at least 3 replicas in all, or read at a lower consistency")
    assert _problems([{"name": "k", "replication": {"dc1": 1, "dc2": 1, "dc3": 1}, "consistency": "QUORUM"}]) == []
    [everything] = _problems([{"name": "k", "replication": {"dc1": 2, "dc2": 2}, "consistency": "ALL"}])
    assert "is read at ALL, which needs all 4 replicas" in everything
    assert [replicas_needed(Consistency.LOCAL_QUORUM, n) for n in (1, 2, 3, 5)] == [1, 2, 2, 3]
    assert replicas_needed(Consistency.EACH_QUORUM, 4) == 3 and replicas_needed(Consistency.THREE, 5) == 3


@pytest.mark.parametrize(("name", "message"), [
    ("system_schema", "keyspace 'system_schema' is node-local (LocalStrategy): it has no replication to declare"),
    ("system_views", "keyspace 'system_views' is node-local"),
    ("system_cluster_metadata", "of the system keyspaces only system_auth, system_distributed, system_traces may "
                                "be declared"),
    ("Shop", "String should match pattern"),
])
def test_names_that_cannot_be_declared(name: str, message: str) -> None:
    [problem] = _problems([{"name": name, "replication": {"dc1": 2}, "consistency": "ONE"}])
    assert "spec.keyspaces[0].name" in problem and message in problem


def test_a_keyspace_declared_twice_and_an_empty_replication() -> None:
    twice = _problems([{"name": "k", "replication": {"dc1": 2}, "consistency": "ONE"},
                       {"name": "k", "replication": {"dc2": 2}, "consistency": "ONE"}])
    assert twice == [twice[0]] and twice[0].endswith(
        "spec.keyspaces[1].name: keyspace 'k' is declared twice; declare each keyspace once")
    [empty] = _problems([{"name": "k", "replication": {}}])
    assert "spec.keyspaces[0].replication" in empty and "at least 1 item" in empty
    [zero] = _problems([{"name": "k", "replication": {"dc1": 0}}])
    assert "spec.keyspaces[0].replication.dc1" in zero and "greater than or equal to 1" in zero


def test_the_json_schema_describes_keyspaces() -> None:
    schema = json_schema("CassandraCluster")
    spec = schema["$defs"]["CassandraSpec"]["properties"]
    assert spec["keyspaces"]["items"] == {"$ref": "#/$defs/Keyspace"}
    keyspace = schema["$defs"]["Keyspace"]
    assert keyspace["required"] == ["name", "replication"]
    assert keyspace["properties"]["replication"]["additionalProperties"]["minimum"] == 1
