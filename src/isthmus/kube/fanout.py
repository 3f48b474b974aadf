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
    DONE = "Done"
    UNKNOWN = "Unknown"
    FAILED = "Failed"


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
                return ClusterOutcome(conn.name, Reach.DONE, await work(conn))
            except ClusterUnreachable as exc:
                return ClusterOutcome(conn.name, Reach.UNKNOWN, error=exc.reason)
            except IsthmusError as exc:
                return ClusterOutcome(conn.name, Reach.FAILED, error=str(exc))

    results = await asyncio.gather(*(one(c) for c in connections.values()))
    return {r.cluster: r for r in results}
