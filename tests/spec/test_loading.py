"""Spec loading: every error says what, where (file:line) and which field, and suggests a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.spec import CassandraCluster, Fleet, SpecError, check_consistency, load_files, load_text
from isthmus.spec.apps import App

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FLEET = """\
apiVersion: isthmus.dev/v1alpha1
kind: Fleet
metadata: {name: g}
spec:
  controlPlane: a
  clusters:
    - name: a
      region: r1
      zones: [{name: z1, nodes: 3}]
    - name: b
      region: r2
      zones: [{name: z2, nodes: 3}]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text, "spec.yaml")
    return [str(p) for p in info.value.problems]


def test_examples_load_and_agree() -> None:
    specs = load_files([EXAMPLES / "fleet.yaml", EXAMPLES / "cassandra.yaml"])
    check_consistency(specs)
    assert isinstance(specs.fleet, Fleet)
    assert [type(a) for a in specs.apps] == [CassandraCluster]
    assert specs.fleet.spec.clusters[2].underlay_mtu == 1460


def test_unknown_field_suggests_the_right_one_with_line() -> None:
    text = FLEET.replace("      region: r1\n", "      regoin: r1\n")
    found = problems_of(text)
    assert "spec.yaml:8: spec.clusters[0].regoin: unknown field 'regoin'; did you mean 'region'?" in found
    assert any("spec.clusters[0].region" in p and "missing" in p for p in found)


def test_unknown_field_without_close_match_lists_allowed() -> None:
    found = problems_of(FLEET.replace("  controlPlane: a\n", "  controlPlane: a\n  zzz: 1\n"))
    assert found == ["spec.yaml:6: spec.zzz: unknown field 'zzz'; allowed: controlPlane, network, clusters"]


def test_malformed_yaml_names_the_line() -> None:
    found = problems_of(FLEET.replace("zones: [{name: z2, nodes: 3}]", "zones: [{name: z2, nodes: 3}"))
    assert len(found) == 1 and found[0].startswith("spec.yaml:13:") and "not valid YAML" in found[0]


def test_duplicate_key_is_refused() -> None:
    found = problems_of(FLEET.replace("      region: r2\n", "      region: r2\n      region: r3\n"))
    assert found == ["spec.yaml:12: spec.clusters[1].region: key 'region' appears twice"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: b", "name: a", "two clusters share the name 'a'"),
        ("name: b", "name: B_2", "breaks Cilium's rule"),
        ("name: b", "name: " + "x" * 33, "at most 32 characters"),
        ("controlPlane: a", "controlPlane: c", "controlPlane 'c' is not one of the clusters (a, b)"),
        ("region: r2\n", "region: r2\n      podCIDR: 10.0.0.1/8\n", "has host bits set"),
        ("region: r2\n", "region: r2\n      podCIDR: 10.0.0.0/33\n", "is not a valid CIDR"),
        ("region: r2\n", "region: r2\n      clusterID: 0\n", "greater than or equal to 1"),
        ("nodes: 3}]\n    - name: b", "nodes: -1}]\n    - name: b", "greater than or equal to 0"),
        ("kind: Fleet", "kind: Flete", "unknown kind 'Flete'; did you mean 'Fleet'?"),
        ("apiVersion: isthmus.dev/v1alpha1", "apiVersion: v1", "apiVersion must be 'isthmus.dev/v1alpha1'"),
    ],
)
def test_bad_fleet_values(old: str, new: str, expected: str) -> None:
    text = FLEET.replace(old, new, 1)
    assert text != FLEET
    found = problems_of(text)
    assert any(expected in p for p in found), found
    assert all(p.startswith("spec.yaml:") for p in found)


def test_id_limit_follows_max_connected_clusters() -> None:
    text = FLEET.replace("region: r2\n", "region: r2\n      clusterID: 300\n").replace(
        "  controlPlane: a\n", "  controlPlane: a\n  network: {maxConnectedClusters: 511}\n")
    fleet = load_text(text).fleet
    assert fleet is not None and fleet.spec.clusters[1].cluster_id == 300


def test_empty_and_non_mapping_documents() -> None:
    assert "no spec documents" in problems_of("# nothing\n")[0]
    assert "must be a mapping" in problems_of("- a\n- b\n")[0]


CASSANDRA = """\
apiVersion: isthmus.dev/v1alpha1
kind: CassandraCluster
metadata: {name: db, namespace: data}
spec:
  datacenters:
    - name: dc1
      cluster: a
      size: 3
      racks: [{name: r1, zone: z1}]
    - name: dc2
      cluster: c
      size: 3
      racks: [{name: r1, zone: z9}]
"""


def test_app_against_fleet_reports_every_mismatch_with_lines() -> None:
    specs = load_text(FLEET + "---\n" + CASSANDRA, "all.yaml")
    with pytest.raises(SpecError) as info:
        check_consistency(specs)
    found = [str(p) for p in info.value.problems]
    assert len(found) == 1
    assert found[0].startswith("all.yaml:24: spec.datacenters[1].cluster: datacenter 'dc2' is mapped to cluster 'c'")
    specs = load_text(FLEET + "---\n" + CASSANDRA.replace("cluster: c", "cluster: b"), "all.yaml")
    with pytest.raises(SpecError) as info:
        check_consistency(specs)
    assert [str(p) for p in info.value.problems] == [
        "all.yaml:26: spec.datacenters[1].racks[0].zone: rack 'r1' of datacenter 'dc2' is pinned to zone 'z9', "
        "but cluster 'b' has zones z2"
    ]


def test_duplicate_datacenters_and_small_dc() -> None:
    assert any("two datacenters are named 'dc1'" in p for p in problems_of(CASSANDRA.replace("dc2", "dc1")))
    text = CASSANDRA.replace("size: 3\n      racks: [{name: r1, zone: z1}]",
                             "size: 1\n      racks: [{name: r1, zone: z1}, {name: r2, zone: z1}]")
    assert any("has 2 racks but only 1 nodes" in p for p in problems_of(text))


def test_rack_sizes_spread_evenly() -> None:
    specs = load_files([EXAMPLES / "cassandra.yaml"])
    app = specs.apps[0]
    assert isinstance(app, CassandraCluster)
    dc = app.spec.datacenters[0].model_copy(update={"size": 5})
    assert dc.rack_sizes() == {"rack-b": 2, "rack-c": 2, "rack-d": 1}


def test_a_new_kind_registers_without_touching_cassandra() -> None:
    from typing import Literal

    from isthmus.spec import KINDS, register_kind
    from isthmus.spec._base import SpecModel

    class KafkaSpec(SpecModel):
        brokers: int

    @register_kind("KafkaCluster")
    class KafkaCluster(App):
        kind: Literal["KafkaCluster"] = "KafkaCluster"
        spec: KafkaSpec

    try:
        specs = load_text("apiVersion: isthmus.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: k}\n"
                          "spec: {brokers: 3}\n")
        assert isinstance(specs.apps[0], KafkaCluster)
    finally:
        del KINDS["KafkaCluster"]


def test_missing_file() -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: file not found"):
        load_files(["nope.yaml"])


def test_json_schema_covers_every_kind() -> None:
    from isthmus.spec import json_schema

    schema = json_schema()
    assert {"Fleet", "CassandraCluster"} <= set(schema["$defs"])
    fleet = json_schema("Fleet")
    assert fleet["additionalProperties"] is False
    assert "maxPodsPerNode" in str(fleet)
