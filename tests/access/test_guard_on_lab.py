"""An access-enabled app on the lab's real API servers: accepted as rendered, and its pods become Ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterRegistry
from isthmus.lab import Lab
from isthmus.rollout import RolloutOptions, apply_rollout, delete_app, render_app, wait_healthy

from ._access import RULES

pytestmark = pytest.mark.lab


async def test_a_guarded_app_applies_and_its_pods_become_ready(
    lab3: Lab, registry: ClusterRegistry, tmp_path: Path
) -> None:
    doc = app_doc("guarded")
    doc["spec"]["access"] = {"enabled": True, "rules": RULES}
    fleet, app = load(fleet_doc(), doc)
    manifests = render_app(app, fleet)

    # The API servers accept every rendered object as it is (server-side validation, no writes).
    lab3.kubectl("c1", "create", "namespace", app.namespace)
    for cluster in manifests.clusters:
        if cluster != "c1":
            lab3.kubectl(cluster, "create", "namespace", app.namespace)
        path = tmp_path / f"{cluster}.yaml"
        path.write_text(manifests.to_yaml(cluster))
        out = lab3.kubectl(cluster, "apply", "--dry-run=server", "-f", str(path), timeout=60.0)
        assert out.count("(server dry run)") == len(manifests.for_cluster(cluster)), out

    result = await apply_rollout(app, fleet, registry, RolloutOptions(poll_interval=0.3))
    assert result.ok, result.state.to_dict()
    assert set(result.reports) == {"c1", "c2", "c3"}
    status = await wait_healthy(app, registry, within=120)
    assert status.healthy, status.to_dict()
    for cluster in ("c1", "c2", "c3"):
        pods = json.loads(lab3.kubectl(cluster, "get", "pods", "-n", app.namespace, "-o", "json"))["items"]
        assert pods
        for pod in pods:
            assert [c["name"] for c in pod["spec"]["containers"]] == ["cassandra", "cqlguard"]
            ready = [c["status"] for c in pod["status"]["conditions"] if c["type"] == "Ready"]
            assert ready == ["True"], pod["metadata"]["name"]
        policy = json.loads(lab3.kubectl(cluster, "get", "configmap", "guarded-cqlguard", "-n", app.namespace,
                                         "-o", "json"))
        assert "sales-app" in policy["data"]["policy.yaml"]
    await delete_app(app, registry)
