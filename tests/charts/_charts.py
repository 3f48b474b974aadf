"""Shared bits of the ChartRelease tests: the real charts, the lab Fleet, release documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fixtures.charts import CHARTS, ETCD, REDIS

__all__ = ["CHARTS", "ETCD", "REDIS", "load_release", "release_doc"]
from fixtures.labspecs import fleet_doc
from isthmus.spec import ChartRelease, Fleet, bind_release, load_text


def release_doc(name: str, chart: Path = ETCD, *, values: dict[str, Any] | None = None,
                overrides: list[dict[str, Any]] | None = None, rollout: dict[str, Any] | None = None,
                **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "ChartRelease", "metadata": {"name": name},
                           "spec": {"chart": str(chart), "namespace": name, "values": values or {},
                                    "overrides": overrides or [], **spec}}
    if rollout:
        doc["spec"]["rollout"] = rollout
    return doc


def load_release(doc: dict[str, Any], fleet: dict[str, Any] | None = None) -> tuple[Fleet, ChartRelease]:
    specs = load_text(yaml.safe_dump(fleet or fleet_doc()) + "---\n" + yaml.safe_dump(doc))
    assert specs.fleet is not None and isinstance(specs.apps[0], ChartRelease)
    return specs.fleet, bind_release(specs.apps[0], specs.fleet)
