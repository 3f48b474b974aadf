"""The rendered CiliumNetworkPolicies validate against the CRD schema (npm @kubernetes-models/cilium).

The package is installed on first use under ``~/.cache/isthmus/node`` (never in the repo) with npm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from isthmus.render.netpolicy import render_policies
from isthmus.spec import Mesh

from ._mesh import example, planned, with_network

CACHE = Path.home() / ".cache" / "isthmus" / "node"
PACKAGE = "@kubernetes-models/cilium@4"
SCRIPT = Path(__file__).with_name("validate_cnp.mjs")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validator() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to validate against @kubernetes-models/cilium")
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "node_modules" / "@kubernetes-models" / "cilium" / "package.json").exists():
        done = subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", "--silent",
                               PACKAGE], capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            pytest.skip(f"npm could not install {PACKAGE}: {done.stderr.strip()[:300]}")
    script = CACHE / SCRIPT.name  # ESM resolves packages next to the script, so it runs from the cache
    shutil.copyfile(SCRIPT, script)
    return script


def _validate(script: Path, objects: list[dict[str, Any]]) -> dict[str, Any]:
    done = subprocess.run(["node", str(script)], input=json.dumps(objects), capture_output=True, text=True,
                          timeout=120, check=True, cwd=CACHE)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


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
