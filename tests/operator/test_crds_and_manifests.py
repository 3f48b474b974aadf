"""The CRDs and the install manifests are generated from code, structural, and committed without drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.operator.crds import crd_documents, crds_yaml, structural_schema
from isthmus.operator.manifests import operator_objects, operator_yaml
from isthmus.operator.status import CassandraClusterStatus
from isthmus.spec import CassandraCluster, Fleet

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REGENERATE = ("regenerate with `isthmus operator crds > deploy/crds.yaml` and "
              "`isthmus operator manifests > deploy/operator.yaml`")


def test_committed_crds_match_the_models() -> None:
    assert (DEPLOY / "crds.yaml").read_text() == crds_yaml(), REGENERATE


def test_committed_operator_manifests_match_the_generator() -> None:
    assert (DEPLOY / "operator.yaml").read_text() == operator_yaml(), REGENERATE


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("model", [Fleet, CassandraCluster, CassandraClusterStatus])
def test_schemas_are_structural(model: type[Any]) -> None:
    schema = structural_schema(model)
    for path, node in _walk(schema):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not {"$ref", "anyOf", "oneOf", "allOf", "const", "title", "default", "$defs"} & set(node), path
        assert node.get("additionalProperties") is not False, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path


def test_cassandra_crd_shape() -> None:
    fleet, cassandra, _chart = crd_documents()
    assert fleet["spec"]["scope"] == "Cluster" and cassandra["spec"]["scope"] == "Namespaced"
    version = cassandra["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Ready", "DCs", "Revision", "Phase", "Age"]
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    dc = spec["properties"]["datacenters"]["items"]
    assert dc["properties"]["size"] == {"description": "Cassandra nodes in this datacenter", "maximum": 1000,
                                        "minimum": 1, "type": "integer"}
    assert spec["properties"]["fleet"]["nullable"] is True
    assert spec["properties"]["access"]["properties"]["rules"]["items"] == {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    status = schema["properties"]["status"]["properties"]
    assert {"observedGeneration", "conditions", "datacenters", "members", "readyDCs", "phase"} <= set(status)
    assert "lastSeenTime" in status["members"]["items"]["properties"]["conditions"]["items"]["properties"]


def test_rbac_is_least_privilege() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in operator_objects()}
    cluster_rules = objects[("ClusterRole", "isthmus-operator")]["rules"]
    assert not any("secrets" in r["resources"] for r in cluster_rules), "Secrets only through the namespaced Role"
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in cluster_rules)
    role = objects[("Role", "isthmus-operator")]
    assert role["metadata"]["namespace"] == "isthmus-system"
    assert any(r["resources"] == ["secrets"] and r["verbs"] == ["get", "list", "watch"] for r in role["rules"])
    deployment = objects[("Deployment", "isthmus-operator")]
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["operator", "run"]


def test_cli_prints_the_committed_files() -> None:
    from typer.testing import CliRunner

    from isthmus.cli import app

    result = CliRunner().invoke(app, ["operator", "crds"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load_all(result.output) is not None
    assert result.output == crds_yaml()
