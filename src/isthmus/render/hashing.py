"""Content hashes of rendered objects, so drift between rendered and live objects is visible.

The hash of an object is the first 16 hex digits of the SHA-256 of its canonical JSON (sorted keys,
no whitespace) with the :data:`CONTENT_HASH_ANNOTATION` itself removed, so stamping is idempotent:
``content_hash(stamp(obj)) == content_hash(obj)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["CONTENT_HASH_ANNOTATION", "HASH_HEX_DIGITS", "canonical_json", "content_hash", "digest", "stamp"]

CONTENT_HASH_ANNOTATION = "isthmus.dev/content-hash"
HASH_HEX_DIGITS = 16  # 64 bits: collisions between two renders of one object are not a practical concern


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no insignificant whitespace, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest(value: Any) -> str:
    """The first :data:`HASH_HEX_DIGITS` hex digits of the SHA-256 of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:HASH_HEX_DIGITS]


def content_hash(obj: Mapping[str, Any]) -> str:
    """The hash of a Kubernetes object, ignoring its own content-hash annotation."""
    return digest(_without_hash(obj))


def _without_hash(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """``obj`` minus its content-hash annotation; copies only the two levels it changes."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping) or CONTENT_HASH_ANNOTATION not in annotations:
        return obj
    assert isinstance(metadata, Mapping)
    rest = {k: v for k, v in annotations.items() if k != CONTENT_HASH_ANNOTATION}
    meta = {k: v for k, v in metadata.items() if k != "annotations"} | ({"annotations": rest} if rest else {})
    return {**obj, "metadata": meta}


def stamp(obj: Mapping[str, Any], *, hashed_as: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``obj`` carrying its content hash annotation.

    ``hashed_as`` hashes a different object instead (a Secret with its values masked, so the
    annotation never reveals anything about a password).
    """
    out = copy.deepcopy(dict(obj))
    value = content_hash(obj if hashed_as is None else hashed_as)
    out.setdefault("metadata", {}).setdefault("annotations", {})[CONTENT_HASH_ANNOTATION] = value
    return out
