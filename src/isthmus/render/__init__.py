"""Rendering: spec in, per-cluster Kubernetes objects out, as a pure function.

Owns: turning an app spec (and the Fleet it lands in) into :class:`Manifests` — plain JSON-able
dicts per member cluster, their apply order, their YAML and their content hashes.
Must not: do I/O of any kind (no files, sockets, asyncio, subprocess, Kubernetes client), read
the clock or draw randomness. The same input renders the same bytes; secrets come in as
arguments. Applying, diffing and pruning belong to ``isthmus.kube``.
"""

from .cassandra import SUPERUSER_PASSWORD_PLACEHOLDER, SUPERUSER_USERNAME, render_cassandra
from .dispatch import RENDERERS, render
from .errors import RenderError
from .hashing import CONTENT_HASH_ANNOTATION, content_hash
from .manifests import ApplyPhase, Manifests, apply_rank

__all__ = [
    "CONTENT_HASH_ANNOTATION",
    "RENDERERS",
    "SUPERUSER_PASSWORD_PLACEHOLDER",
    "SUPERUSER_USERNAME",
    "ApplyPhase",
    "Manifests",
    "RenderError",
    "apply_rank",
    "content_hash",
    "render",
    "render_cassandra",
]
