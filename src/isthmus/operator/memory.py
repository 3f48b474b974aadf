"""What the operator remembers of each app (CassandraCluster or ChartRelease) between reconciles, and the parse
it keeps.

One :class:`Memory` per object, in this process only (a new leader starts empty and reads
everything afresh): the newest object seen, which generation was attempted and which reached
every member, the status last written, the health last read, the drift last found and the
members a watch suspects. :func:`parse_once` checks and renders the spec, again only when the spec
or a Fleet changed (and remembers an invalid input, so the same mistake is not parsed twice). A
ChartRelease is rendered by Helm against its members (:func:`.rollouts.render_chart`), so its parse
leaves ``manifests`` to the reconcile (:meth:`Parsed.with_manifests`).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..helm import chart_problem
from ..render import Manifests, RenderError, render
from ..rollout import StatusReport
from ..spec import ChartRelease, Fleet
from .inputs import App, Invalid, choose_fleet, parse_app, spec_revision
from .rollup import OperatorEvent
from .status import CassandraClusterStatus

__all__ = ["Memory", "Parsed", "parse_once"]


@dataclass(frozen=True)
class Parsed:
    """An app and its Fleet as last parsed and rendered, reused while neither changes."""

    revision: str
    fleets: str
    app: App
    fleet: Fleet
    manifests: Manifests | None
    """A CassandraCluster's with the password placeholder (what drift checks compare with); a ChartRelease's as
    Helm rendered them for its members (None until the reconcile renders them; in this process only)."""
    kinds: dict[str, frozenset[tuple[str, str]]]
    """Per member: (apiVersion, kind) of the objects the app has in its namespace there."""

    @property
    def rendered(self) -> Manifests:
        assert self.manifests is not None, "a ChartRelease is rendered by the reconcile before it is used"
        return self.manifests

    def with_manifests(self, manifests: Manifests) -> Parsed:
        return replace(self, manifests=manifests, kinds=_kinds(self.app, manifests))


def _kinds(app: App, manifests: Manifests) -> dict[str, frozenset[tuple[str, str]]]:
    return {c: frozenset((o["apiVersion"], o["kind"]) for o in manifests.for_cluster(c)
                         if o["metadata"].get("namespace") == app.namespace) for c in manifests.clusters}


@dataclass
class Memory:
    last_apply: float = 0.0
    attempted_generation: int | None = None
    applied_generation: int | None = None
    """The generation whose rollout last reached every member (then a resync only looks for drift)."""
    pending_events: list[OperatorEvent] = field(default_factory=list)
    status: CassandraClusterStatus | None = None
    """The status this process last wrote: newer than a timer's body, which kopf may have read before the patch."""
    body: dict[str, Any] | None = None
    """The newest object seen (background work always uses this one, never an older snapshot)."""
    fleets: list[Mapping[str, Any]] = field(default_factory=list)
    parsed: Parsed | None = None
    dirty: bool = True
    """Something the status shows may have changed (a StatefulSet event, a rollout) since the last refresh."""
    refreshed: float = -1e9
    members_seen: tuple[Any, ...] = ()
    """The members' reachability (and connections) at the last refresh."""
    drifted: dict[str, list[str]] | None = None
    """Per member, the drift the last check found there; None until a check ran."""
    suspects: set[str] = field(default_factory=set)
    """Members where a watch saw a change made by someone else since the last drift check."""
    check: asyncio.TimerHandle | None = None
    last_check: float = -1e9
    invalid: tuple[str, str, Invalid] | None = None
    """The spec and Fleets (their digests) last found invalid, and why."""
    report: StatusReport | None = None
    """The datacenters' health as last read, with the datacenters it was read for and when."""
    report_shape: tuple[tuple[str, str], ...] = ()
    report_read: float = -1e9

    def keep(self, body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]]) -> None:
        """Keep the newest object seen (and the Fleets with it), for background work that starts later."""
        generation = (body.get("metadata") or {}).get("generation") or 0
        known = ((self.body or {}).get("metadata") or {}).get("generation") or 0
        if self.body is None or generation >= known:
            self.body, self.fleets = copy.deepcopy(dict(body)), list(fleets)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_once(body: Mapping[str, Any], fleets: Sequence[Mapping[str, Any]], memory: Memory) -> Parsed:
    """The app and its Fleet, checked and rendered; parsed again only when the spec or a Fleet changed."""
    revision, fleets_digest = spec_revision(body), _digest([dict(f) for f in fleets])
    known = memory.parsed
    if known is not None and (known.revision, known.fleets) == (revision, fleets_digest):
        return known
    if memory.invalid is not None and memory.invalid[:2] == (revision, fleets_digest):
        known_error = memory.invalid[2]  # the same input is wrong the same way: no need to parse it again
        raise Invalid(known_error.reason, str(known_error), app=known_error.app)
    try:
        app = parse_app(body)
        try:
            app, fleet = choose_fleet(app, fleets)
            manifests = _render(app, fleet)
        except Invalid as exc:
            exc.app = app
            raise
        except RenderError as exc:
            raise Invalid("InvalidSpec", str(exc), app=app) from exc
    except Invalid as exc:
        memory.invalid = (revision, fleets_digest, exc)
        raise
    memory.invalid = None
    kinds = _kinds(app, manifests) if manifests is not None else {}
    memory.parsed = Parsed(revision, fleets_digest, app, fleet, manifests, kinds)
    return memory.parsed


def _render(app: App, fleet: Fleet) -> Manifests | None:
    """A CassandraCluster's manifests; None for a ChartRelease, whose chart is checked here (it is read from the
    operator's own filesystem) and rendered by Helm in the reconcile."""
    if not isinstance(app, ChartRelease):
        return render(app, fleet)
    chart = Path(app.spec.chart)
    if not chart.is_absolute():
        raise Invalid("InvalidSpec", f"spec.chart: {app.spec.chart} is relative; the operator reads charts from its "
                      "own filesystem: give the absolute path of a chart folder or .tgz mounted in its pod")
    if (problem := chart_problem(chart)) is not None:
        raise Invalid("InvalidSpec", f"spec.chart: {problem} (in the operator's filesystem: mount it in its pod)")
    return None
