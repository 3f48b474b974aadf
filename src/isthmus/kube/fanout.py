"""Running one coroutine per cluster, concurrently and bounded, where an unreachable cluster
becomes an Unknown outcome instead of an exception that stops the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from ..errors import IsthmusError
from .connection import ClusterConnection
from .errors import ClusterUnreachable

__all__ = ["ClusterOutcome", "Reach", "across"]

T = TypeVar("T")


class Reach(StrEnum):
    """Whether a cluster was reached. The values are the ones written to status (``reach``), kept as they were."""

    REACHED = "Done"  # the API server answered and the work finished
    UNREACHABLE = "Unknown"  # no answer: nothing is known about the cluster
    FAILED = "Failed"  # reached, but the API server refused the work (it says nothing about reach)


@dataclass(frozen=True)
class ClusterOutcome(Generic[T]):
    cluster: str
    reach: Reach
    value: T | None = None
    error: str = ""


async def across(
    connections: Mapping[str, ClusterConnection],
    work: Callable[[ClusterConnection], Awaitable[T]],
    *,
    concurrency: int = 16,
) -> dict[str, ClusterOutcome[T]]:
    """Run ``work`` on every cluster; each cluster's fate is its own."""
    gate = asyncio.Semaphore(concurrency)

    async def one(conn: ClusterConnection) -> ClusterOutcome[T]:
        async with gate:
            try:
                return ClusterOutcome(conn.name, Reach.REACHED, await work(conn))
            except ClusterUnreachable as exc:
                return ClusterOutcome(conn.name, Reach.UNREACHABLE, error=exc.reason)
            except IsthmusError as exc:
                return ClusterOutcome(conn.name, Reach.FAILED, error=str(exc))

    results = await asyncio.gather(*(one(c) for c in connections.values()))
    return {r.cluster: r for r in results}
