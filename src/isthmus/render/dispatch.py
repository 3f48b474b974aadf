"""``render(app, fleet)``: pick the renderer for the app's kind.

A second app kind adds one entry to :data:`RENDERERS` (and its own module); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..spec.apps import App
from ..spec.cassandra import CassandraCluster
from ..spec.fleet import Fleet
from .cassandra import render_cassandra
from .errors import RenderError
from .manifests import Manifests

__all__ = ["RENDERERS", "Renderer", "render"]

Renderer = Callable[..., Manifests]


def _cassandra(app: App, fleet: Fleet, **options: Any) -> Manifests:
    if not isinstance(app, CassandraCluster):
        raise TypeError(f"expected a CassandraCluster, got {type(app).__name__}")
    return render_cassandra(app, fleet, **options)


RENDERERS: Mapping[str, Renderer] = {
    "CassandraCluster": _cassandra,
}


def render(app: App, fleet: Fleet, **options: Any) -> Manifests:
    """The manifests of ``app`` in ``fleet``; ``options`` go to the kind's renderer unchanged."""
    renderer = RENDERERS.get(app.kind)
    if renderer is None:
        kinds = ", ".join(sorted(RENDERERS))
        raise RenderError(f"no renderer for kind {app.kind!r} (isthmus renders {kinds})")
    return renderer(app, fleet, **options)
