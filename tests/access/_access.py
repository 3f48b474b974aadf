"""Shared inputs for the access tests: the example fleet and app, with ``spec.access`` set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from isthmus.spec import CassandraCluster, Fleet, load_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

RULES: list[dict[str, Any]] = [
    {"name": "sales-app", "clientLabels": {"app": "sales"},
     "identities": {"cidrs": ["10.20.0.0/16"], "users": ["sales_app"]},
     "allow": [{"actions": ["read", "write"], "tables": ["sales.orders", "sales.line_*"]}]},
    {"name": "reports", "clientLabels": {"app": "reports"}, "identities": {"users": ["reports"]},
     "allow": [{"actions": ["select"], "tables": ["sales.*"]}]},
]
LEGACY_RULES: list[dict[str, Any]] = [
    {"name": "sales-app", "clientLabels": {"app": "sales"}, "identities": {"cidrs": ["10.20.0.0/16"]},
     "allow": [{"actions": ["read", "write"], "tables": ["sales.orders", "sales.line_*"]}]},
    {"name": "reports", "clientLabels": {"app": "reports"}, "identities": {"cidrs": ["0.0.0.0/0"]},
     "allow": [{"actions": ["select"], "tables": ["sales.*"]}]},
]


def documents() -> tuple[dict[str, Any], dict[str, Any]]:
    fleet = yaml.safe_load((EXAMPLES / "fleet.yaml").read_text())
    app = yaml.safe_load((EXAMPLES / "cassandra.yaml").read_text())
    return fleet, app


def load(fleet: dict[str, Any], app: dict[str, Any]) -> tuple[Fleet, CassandraCluster]:
    specs = load_text(yaml.safe_dump(fleet) + "---\n" + yaml.safe_dump(app))
    assert specs.fleet is not None and isinstance(specs.apps[0], CassandraCluster)
    return specs.fleet, specs.apps[0]


def with_access(access: dict[str, Any] | None) -> tuple[Fleet, CassandraCluster]:
    """The example app with ``spec.access`` set to ``access`` (omitted when None)."""
    fleet, app = documents()
    if access is not None:
        app["spec"]["access"] = access
    return load(fleet, app)
