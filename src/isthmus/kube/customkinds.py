"""Whether a member serves the custom kinds an app's objects need, found by reading only.

Owns: reading the CustomResourceDefinitions named by :data:`isthmus.render.customkinds.CUSTOM_KINDS`
and judging each one served (present, ``Established``, the version served). Must not: install or
change a CRD (a member's CRDs belong to whoever runs its mesh), or decide what to do about an
absent one (the rollout refuses before any write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from ..render.customkinds import CustomKind, required_kinds
from .connection import ClusterConnection
from .fetching import get_object
from .objects import KubeObject

__all__ = ["absent_kinds", "established", "serves"]


def established(crd: Any) -> bool:
    """Whether the live CRD ``crd`` (a lightkube resource) is ``Established``: its kind can be used."""
    conditions = (crd.status.conditions if crd.status is not None else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def serves(crd: Any, kind: CustomKind) -> bool:
    """Whether the live CRD ``crd`` (a lightkube resource) serves ``kind`` now."""
    versions = (crd.spec.versions or []) if crd.spec is not None else []
    return any(v.name == kind.version and v.served for v in versions) and established(crd)


async def absent_kinds(conn: ClusterConnection, objects: Sequence[KubeObject]) -> tuple[CustomKind, ...]:
    """The custom kinds among ``objects`` that ``conn``'s cluster does not serve (one GET per kind)."""

    async def one(kind: CustomKind) -> CustomKind | None:
        crd = await get_object(conn, CustomResourceDefinition, kind.crd_name)
        return None if crd is not None and serves(crd, kind) else kind

    found = await asyncio.gather(*(one(k) for k in required_kinds(objects)))
    return tuple(k for k in found if k is not None)
