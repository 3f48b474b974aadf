"""``render(app, fleet)``: pick the renderer for the app's kind.

A CassandraCluster's manifests are :func:`~isthmus.render.cassandra.render_cassandra`'s objects
plus the discovery objects of its member clusters (:func:`~isthmus.render.discovery.app_discovery`).

A second app kind adds one entry to :data:`RENDERERS` (and its own module); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..spec.apps import App
from ..spec.cassandra import CassandraCluster
from ..spec.charts import ChartRelease
from ..spec.fleet import Fleet
from .cassandra import render_cassandra
from .charts import chart_manifests
from .discovery import app_discovery
from .errors import RenderError
from .manifests import Manifests

__all__ = ["RENDERERS", "Renderer", "render"]

Renderer = Callable[..., Manifests]


def _cassandra(app: App, fleet: Fleet, **options: Any) -> Manifests:
    if not isinstance(app, CassandraCluster):
        raise TypeError(f"expected a CassandraCluster, got {type(app).__name__}")
    # The discovery objects the Fleet's mesh needs travel with the app: applied, pruned and deleted with it.
    discovery = app_discovery(app, fleet, mesh=options.get("mesh"),
                              **({"cluster_domain": options["cluster_domain"]} if "cluster_domain" in options else {}))
    return render_cassandra(app, fleet, **options).merge(discovery)


def _chart(app: App, fleet: Fleet, **options: Any) -> Manifests:
    """A ChartRelease: ``options["rendered"]`` holds what Helm rendered per member (see :mod:`.charts`)."""
    if not isinstance(app, ChartRelease):
        raise TypeError(f"expected a ChartRelease, got {type(app).__name__}")
    if "rendered" not in options:
        raise RenderError(f"ChartRelease {app.metadata.name}: Helm's output per cluster is needed to render it "
                          "(isthmus.rollout.render_release runs helm)")
    return chart_manifests(app, options["rendered"])


RENDERERS: Mapping[str, Renderer] = {
    "CassandraCluster": _cassandra,
    "ChartRelease": _chart,
}


def render(app: App, fleet: Fleet, **options: Any) -> Manifests:
    """The manifests of ``app`` in ``fleet``; ``options`` go to the kind's renderer unchanged."""
    renderer = RENDERERS.get(app.kind)
    if renderer is None:
        kinds = ", ".join(sorted(RENDERERS))
        raise RenderError(f"no renderer for kind {app.kind!r} (isthmus renders {kinds})")
    return renderer(app, fleet, **options)
