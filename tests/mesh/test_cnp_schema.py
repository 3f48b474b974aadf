"""The rendered CiliumNetworkPolicies validate against the CRD schema (npm @kubernetes-models/cilium).

The package is installed on first use under ``~/.cache/isthmus/node`` (never in the repo) with npm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fixtures.cnp import cnp_validator, validate_cnp
from isthmus.render.netpolicy import render_policies
from isthmus.spec import Mesh

from ._mesh import example, planned, with_network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validator() -> Path:
    return cnp_validator()


def _validate(script: Path, objects: list[dict[str, Any]]) -> dict[str, Any]:
    return validate_cnp(script, objects)


def test_validator_catches_a_bad_policy(validator: Path) -> None:
    bad = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "bad"},
           "spec": {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": 7000}]}]}]}}
    assert _validate(validator, [bad])["errors"]


def test_rendered_policies_are_schema_valid(validator: Path) -> None:
    fleet, app = example()
    access = app.spec.access.model_copy(update={"rules": [{"clientLabels": {"app": "sales"},
                                                           "identities": {"cidrs": ["10.20.0.0/16"]}}]})
    with_rules = app.model_copy(update={"spec": app.spec.model_copy(update={"access": access})})
    objects: list[dict[str, Any]] = []
    for a in (app, with_rules):
        f = with_network(fleet, mesh=Mesh.BOTH)
        m = render_policies(a, f, planned(f))
        objects += [o for c in m.clusters for o in m.for_cluster(c) if o["kind"] == "CiliumNetworkPolicy"]
    result = _validate(validator, objects)
    assert result == {"checked": len(objects), "errors": []}
