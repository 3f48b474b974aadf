"""Shared bits of the ChartRelease tests: the real charts, the lab Fleet, release documents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fixtures.labspecs import fleet_doc
from isthmus.spec import ChartRelease, Fleet, bind_release, load_text


def _charts_root() -> Path:
    """``../shared/charts`` beside the repository (a worktree's repository is the main one's sibling folder)."""
    if os.environ.get("ISTHMUS_TEST_CHARTS"):
        return Path(os.environ["ISTHMUS_TEST_CHARTS"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "charts" / "etcd" / "Chart.yaml").is_file():
            return parent / "shared" / "charts"
    raise RuntimeError("the real charts (../shared/charts) are not found; set ISTHMUS_TEST_CHARTS")


CHARTS = _charts_root()
ETCD = CHARTS / "etcd"
REDIS = CHARTS / "redis"


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
