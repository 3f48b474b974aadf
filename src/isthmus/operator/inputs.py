"""Reading a CassandraCluster or ChartRelease object and its Fleet into spec models, checked as the CLI checks
them. Pure.

Everything here happens before any write: an :class:`Invalid` names the condition reason and the
offending field, and the reconcile applies nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import IsthmusError
from ..spec import (
    CassandraCluster,
    ChartRelease,
    Document,
    Fleet,
    SpecError,
    SpecSet,
    bind_release,
    check_consistency,
    load_text,
)

__all__ = ["App", "Invalid", "choose_fleet", "parse_app", "spec_revision"]

App = CassandraCluster | ChartRelease
"""The kinds the operator reconciles."""


class Invalid(IsthmusError):
    """Something wrong before any write; ``reason`` is the condition's reason."""

    def __init__(self, reason: str, message: str, *, app: Any = None) -> None:
        self.reason = reason
        self.app = app
        """The app when it parsed (the error is in its Fleet or placement), else None."""
        super().__init__(message)


def _document(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta}, "spec": dict(body.get("spec") or {})}


def _fleet_document(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": "Fleet",
            "metadata": {"name": (body.get("metadata") or {}).get("name")}, "spec": dict(body.get("spec") or {})}


def _problems_text(exc: SpecError) -> str:
    return "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in exc.problems)


def parse_app(body: Mapping[str, Any]) -> App:
    """The app (a CassandraCluster or a ChartRelease, by ``kind``), validated by the spec models; an error names
    the field as the CLI's loader does.

    A valid object is validated directly; only an invalid one goes through the YAML loader that
    locates errors (ten times slower, and on the path of every spec change).
    """
    model: type[App] = ChartRelease if body.get("kind") == "ChartRelease" else CassandraCluster
    try:
        return model.model_validate(_document(body))
    except (ValidationError, ValueError):
        pass  # the loader below says what is wrong, with the field
    meta = body.get("metadata") or {}
    try:
        where = f"{model.__name__} {meta.get('namespace')}/{meta.get('name')}"
        specs = load_text(yaml.safe_dump(_document(body)), where)
    except SpecError as exc:
        raise Invalid("InvalidSpec", _problems_text(exc)) from exc
    app = specs.apps[0]
    assert isinstance(app, model)
    return app


def choose_fleet(app: App, fleets: Sequence[Mapping[str, Any]]) -> tuple[App, Fleet]:
    """The Fleet ``spec.fleet`` names, or the only one, checked against the app like the CLI does; and the app
    with its placement resolved against it (a ChartRelease's clusters)."""
    names = sorted(str((f.get("metadata") or {}).get("name")) for f in fleets)
    wanted = app.spec.fleet
    chosen = [f for f in fleets if (f.get("metadata") or {}).get("name") == wanted] if wanted else list(fleets)
    if not chosen:
        raise Invalid("FleetNotFound", f"spec.fleet: no Fleet named {wanted!r} (Fleets: {', '.join(names) or 'none'})")
    if len(chosen) > 1:
        raise Invalid("FleetAmbiguous", f"spec.fleet: {len(chosen)} Fleets exist ({', '.join(names)}); name one")
    kind = type(app).__name__
    try:  # the fast path for a valid pair; the loader below explains an invalid one
        fleet = Fleet.model_validate(_fleet_document(chosen[0]))
        check_consistency(SpecSet([Document(fleet, "Fleet", {}), Document(app, kind, {})]))
        return _bound(app, fleet), fleet
    except (ValidationError, ValueError, SpecError):
        pass
    text = yaml.safe_dump(_fleet_document(chosen[0])) + "---\n" + yaml.safe_dump(_document_of(app))
    try:
        specs = load_text(text, f"Fleet and {kind}")
        check_consistency(specs)
    except SpecError as exc:
        reason = "InvalidFleet" if any((p.field or "").startswith("spec.clusters") for p in exc.problems) else (
            "InvalidPlacement")
        raise Invalid(reason, _problems_text(exc)) from exc
    assert specs.fleet is not None
    try:
        return _bound(app, specs.fleet), specs.fleet
    except SpecError as exc:  # the release's clusters, canary or overrides name what the Fleet lacks
        raise Invalid("InvalidPlacement", _problems_text(exc)) from exc


def _bound(app: App, fleet: Fleet) -> App:
    """A ChartRelease's placement resolved (:func:`isthmus.spec.bind_release`: SpecError for a cluster, canary or
    override the Fleet does not have); a CassandraCluster as it is."""
    return bind_release(app, fleet) if isinstance(app, ChartRelease) else app


def _document_of(app: App) -> dict[str, Any]:
    return app.model_dump(by_alias=True, mode="json", exclude_none=True)


def spec_revision(body: Mapping[str, Any]) -> str:
    canonical = json.dumps(body.get("spec") or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]
