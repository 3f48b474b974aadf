"""The CustomResourceDefinitions, generated from the spec models: one source of truth. Pure.

``deploy/crds.yaml`` is the output of :func:`crds_yaml` (``isthmus operator crds``), and a
test fails when the committed file drifts from it.

How pydantic's JSON Schema becomes a *structural* OpenAPI v3 schema (what the API server
demands of a ``apiextensions.k8s.io/v1`` CRD):

- every ``$ref`` is inlined from ``$defs`` (CRD schemas have no references); a description
  written next to a ``$ref`` wins over the referenced model's own;
- ``X | None`` (``anyOf`` with ``{"type": "null"}``) becomes ``X`` with ``nullable: true``;
- ``const`` becomes a one-value ``enum``; a JSON Schema 2020 numeric ``exclusiveMinimum``
  becomes OpenAPI's ``minimum`` + ``exclusiveMinimum: true``;
- ``additionalProperties: false`` (the models' ``extra="forbid"``) is dropped: a structural
  schema may not combine it with ``properties``. Kubernetes prunes unknown fields by
  default, and ``kubectl apply`` (field validation ``Strict``) rejects them with their path;
- ``additionalProperties: true`` (a free-form ``dict[str, Any]``) becomes
  ``x-kubernetes-preserve-unknown-fields: true``, the only place unknown fields are kept;
- ``title`` and ``default`` are dropped: defaults stay the models' business, so what is stored
  is what the user wrote, and the operator applies the same defaults as the CLI;
- ``apiVersion``, ``kind`` and ``metadata`` are left to the API server.

Cross-field rules (unique datacenter names, racks <= size, a rack's zone in its cluster) are
the models' validators and the Fleet consistency check: the operator reports them as a
condition with a reason and applies nothing.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import yaml
from pydantic import BaseModel

from ..spec import API_VERSION, CassandraCluster, ChartRelease, Fleet
from .status import CassandraClusterStatus

__all__ = ["GROUP", "VERSION", "crd_documents", "crds_yaml", "structural_schema"]

GROUP: Final = API_VERSION.split("/")[0]
VERSION: Final = API_VERSION.split("/")[1]
_DROP: Final = frozenset({"title", "default", "$defs", "$schema", "examples"})
_REF_PREFIX: Final = "#/$defs/"


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (by alias, validation mode) as a structural OpenAPI v3 schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = schema.get("$defs", {})
    return _convert(schema, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith(_REF_PREFIX):
            raise ValueError(f"cannot inline the reference {ref!r}")
        merged = {**copy.deepcopy(defs[ref[len(_REF_PREFIX):]]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise ValueError(f"a union of {len(options)} types has no structural form: {node['anyOf']}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        inner = _convert({**options[0], **rest}, defs)
        if nullable:
            inner["nullable"] = True
        return inner
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs)
            # False: dropped, see the module docstring
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = copy.deepcopy(value)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise ValueError(f"schema node without a type is not structural: {node}")
    return out


def _top_level(model: type[BaseModel], status: type[BaseModel] | None) -> dict[str, Any]:
    full = structural_schema(model)
    props: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": full["properties"]["spec"],
    }
    if status is not None:
        props["status"] = structural_schema(status)
    schema: dict[str, Any] = {"type": "object", "required": ["spec"], "properties": props}
    if "description" in full:
        schema["description"] = full["description"]
    return schema


def _crd(*, kind: str, plural: str, short: list[str], scope: str, schema: dict[str, Any],
         columns: list[dict[str, Any]], status: bool) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns,
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "isthmus"}},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short, "categories": ["isthmus"]},
            "versions": [version],
        },
    }


_AGE: Final = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def crd_documents() -> list[dict[str, Any]]:
    """The Fleet (cluster-scoped), CassandraCluster and ChartRelease (namespaced) CRDs.

    A ChartRelease's status has the CassandraCluster's shape (its ``readyDCs`` counts healthy member clusters).
    """
    fleet = _crd(
        kind="Fleet", plural="fleets", short=["fl"], scope="Cluster", status=False,
        schema=_top_level(Fleet, None),
        columns=[{"name": "Control-Plane", "type": "string", "jsonPath": ".spec.controlPlane"}, _AGE],
    )
    cassandra = _crd(
        kind="CassandraCluster", plural="cassandraclusters", short=["cass", "cc"], scope="Namespaced", status=True,
        schema=_top_level(CassandraCluster, CassandraClusterStatus),
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "DCs", "type": "string", "jsonPath": ".status.readyDCs",
             "description": "Healthy datacenters / all datacenters"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _AGE,
        ],
    )
    chart = _crd(
        kind="ChartRelease", plural="chartreleases", short=["cr", "chrel"], scope="Namespaced", status=True,
        schema=_top_level(ChartRelease, CassandraClusterStatus),
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Chart", "type": "string", "jsonPath": ".spec.chart"},
            {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            _AGE,
        ],
    )
    return [fleet, cassandra, chart]


HEADER: Final = "# Generated by `isthmus operator crds` from the spec models; do not edit by hand.\n"


def crds_yaml() -> str:
    return HEADER + "".join(
        "---\n" + yaml.safe_dump(doc, sort_keys=False, width=120) for doc in crd_documents()
    )
