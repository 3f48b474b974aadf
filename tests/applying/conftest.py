"""A Fleet and a CassandraCluster that match the session lab (clusters c1..c3, zones region-<i>a/b)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab
from isthmus.spec import CassandraCluster, Fleet, load_text


def fleet_doc() -> dict[str, object]:
    return {
        "apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": "lab"},
        "spec": {
            "controlPlane": "c1",
            "network": {"podSupernet": "10.0.0.0/8", "serviceSupernet": "172.16.0.0/12"},
            "clusters": [
                {"name": f"c{i}", "region": f"region-{i}", "context": f"lab-c{i}",
                 "zones": [{"name": f"region-{i}a", "nodes": 2}, {"name": f"region-{i}b", "nodes": 2}]}
                for i in (1, 2, 3)
            ],
        },
    }


def app_doc(name: str = "shop", *, size: int = 2, heap: str = "1G") -> dict[str, object]:
    return {
        "apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
        "metadata": {"name": name, "namespace": name},
        "spec": {
            "datacenters": [
                {"name": f"dc{i}", "cluster": f"c{i}", "size": size,
                 "racks": [{"name": "ra", "zone": f"region-{i}a"}, {"name": "rb", "zone": f"region-{i}b"}]}
                for i in (1, 2, 3)
            ],
            "resources": {"cpu": "500m", "memory": "2Gi", "heap": heap},
            "storage": {"size": "1Gi"},
        },
    }


def load(fleet: dict[str, object], app: dict[str, object]) -> tuple[Fleet, CassandraCluster]:
    specs = load_text(yaml.safe_dump(fleet) + "---\n" + yaml.safe_dump(app))
    assert specs.fleet is not None and isinstance(specs.apps[0], CassandraCluster)
    return specs.fleet, specs.apps[0]


def write_specs(folder: Path, fleet: dict[str, object], app: dict[str, object]) -> list[Path]:
    (folder / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    (folder / "app.yaml").write_text(yaml.safe_dump(app))
    return [folder / "fleet.yaml", folder / "app.yaml"]


@pytest.fixture
async def registry(lab3: Lab) -> AsyncIterator[ClusterRegistry]:
    fleet, _ = load(fleet_doc(), app_doc())
    reg = ClusterRegistry.from_fleet(fleet, lab3.kubeconfig, settings=ConnectionSettings(timeout=5.0))
    try:
        yield reg
    finally:
        await reg.close()
