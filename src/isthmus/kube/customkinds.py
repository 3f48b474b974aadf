"""Whether a member serves the custom kinds an app's objects need, found by reading only.

Owns: reading the CustomResourceDefinitions named by :data:`isthmus.render.customkinds.CUSTOM_KINDS`
and judging each one served (present, ``Established``, the version served), and the connection's
hint of which kinds it last found served, and when. Must not: install or change a CRD (a member's
CRDs belong to whoever runs its mesh), or decide what to do about an absent one (the rollout
refuses before any write).

The hint: every check records, in the connection's :class:`~isthmus.kube.session.Session`, the
kinds it found served and when. A caller that accepts an answer ``fresh_for`` seconds old (the
operator, whose member probe :func:`reconfirm_kinds` every few seconds) skips the round trip to a
far member for kinds confirmed that recently; the CLI passes 0 and always reads. A kind found
absent is forgotten at once. Trusting a recent answer is the same bargain the check always made
(a CRD deleted between the check and the write fails that write with the server's own error),
over a window of ``fresh_for`` seconds instead of one round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from ..render.customkinds import CustomKind, required_kinds
from .connection import ClusterConnection
from .fetching import get_object
from .objects import KubeObject

__all__ = ["absent_kinds", "established", "reconfirm_kinds", "serves"]


def established(crd: Any) -> bool:
    """Whether the live CRD ``crd`` (a lightkube resource) is ``Established``: its kind can be used."""
    conditions = (crd.status.conditions if crd.status is not None else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def serves(crd: Any, kind: CustomKind) -> bool:
    """Whether the live CRD ``crd`` (a lightkube resource) serves ``kind`` now."""
    versions = (crd.spec.versions or []) if crd.spec is not None else []
    return any(v.name == kind.version and v.served for v in versions) and established(crd)


def _served(conn: ClusterConnection) -> dict[CustomKind, float]:
    """The connection's hint: each kind found served, with the clock time it was."""
    return conn.session.part(__name__, dict)


async def _check(conn: ClusterConnection, kinds: Sequence[CustomKind],
                 clock: Callable[[], float]) -> tuple[CustomKind, ...]:
    served = _served(conn)

    async def one(kind: CustomKind) -> CustomKind | None:
        asked = clock()
        crd = await get_object(conn, CustomResourceDefinition, kind.crd_name)
        if crd is not None and serves(crd, kind):
            served[kind] = asked
            return None
        served.pop(kind, None)
        return kind

    found = await asyncio.gather(*(one(k) for k in kinds))
    return tuple(k for k in found if k is not None)


async def absent_kinds(conn: ClusterConnection, objects: Sequence[KubeObject], *, fresh_for: float = 0.0,
                       clock: Callable[[], float] = time.monotonic) -> tuple[CustomKind, ...]:
    """The custom kinds among ``objects`` that ``conn``'s cluster does not serve (one GET per kind, except
    for kinds this connection found served less than ``fresh_for`` seconds ago)."""
    served = _served(conn)
    now = clock()
    unsure = [k for k in required_kinds(objects) if now - served.get(k, float("-inf")) >= fresh_for]
    return await _check(conn, unsure, clock) if unsure else ()


async def reconfirm_kinds(conn: ClusterConnection, *,
                          clock: Callable[[], float] = time.monotonic) -> tuple[CustomKind, ...]:
    """Read again every kind the connection's hint holds (the operator's member probe does, so the hint stays
    fresh); returns those no longer served, which the hint forgets."""
    return await _check(conn, list(_served(conn)), clock)
