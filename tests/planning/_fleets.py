"""Building Fleets the way users write them: camelCase YAML-style keys through ``model_validate``."""

from __future__ import annotations

from typing import Any

from isthmus.spec.fleet import Fleet


def cluster(name: str, nodes: int = 3, **extra: Any) -> dict[str, Any]:
    return {"name": name, "region": extra.pop("region", "eu"), "zones": [{"name": "a", "nodes": nodes}], **extra}


def make_fleet(clusters: list[dict[str, Any]], **network: Any) -> Fleet:
    return Fleet.model_validate(
        {
            "metadata": {"name": "test"},
            "spec": {"controlPlane": clusters[0]["name"], "network": network, "clusters": clusters},
        }
    )
