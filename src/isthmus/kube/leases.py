"""Leases (``coordination.k8s.io/v1``): the record, compare-and-swap writes, and one rule for expiry.

Two holders use them: the rollout's per-app lock (:mod:`isthmus.rollout.locking`) and the
operator's leader election (:mod:`isthmus.operator.leadership`). Both judge a lease by the rule
below, and both write it by compare-and-swap on ``resourceVersion`` (:func:`write_lease`), so two
candidates can never both win one term.

**Someone else's lease** (:class:`LeaseObserver`). A holder is live until ``leaseDurationSeconds``
after its last renewal, as this process knows it:

- a renewal this process saw happen (the record's holder or ``renewTime`` differs from what its
  previous read showed) counts from the read that showed it, on this process's monotonic clock.
  This is client-go's rule (``observedTime``): it needs no agreement between clocks, only that
  they run at about the same rate;
- a record already there at this process's first read (a CLI command, a replica that just
  started) has no earlier read to compare with, so its own ``renewTime`` is the tie-breaker: it
  counts from then, by the wall clock, and never from later than that first read (a renewTime in
  the future, a clock ahead of ours, is taken as "just now").

So a process that keeps reading (a standby, a waiting ``apply``) never takes over earlier than
client-go would, and one that reads once does not wait a full duration for a holder that died
long ago. A wall clock far enough ahead can make a first read take over early; the lock's
fencing tokens are what make even that harmless.

**Our own lease** (:class:`Term`): valid for ``duration`` after the *start* of the last write
(or read) by which the server confirmed it ours, on the monotonic clock, so a process that
stalls past its term notices it overslept before it writes again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .connection import ClusterConnection
from .objects import KubeObject
from .records import create_record, get_record, replace_record

__all__ = [
    "LEASE_API_VERSION",
    "LeaseObserver",
    "LeaseRecord",
    "Term",
    "lease_object",
    "micro_time",
    "read_lease",
    "write_lease",
]

LEASE_API_VERSION = "coordination.k8s.io/v1"
Clock = Callable[[], float]


def micro_time(ts: float) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC) for wall time ``ts``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says. Times are wall-clock seconds, as the holder wrote them."""

    name: str
    namespace: str
    holder: str | None
    acquired_at: float | None
    renewed_at: float | None
    duration: float
    transitions: int = 0
    resource_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, obj: KubeObject, *, default_duration: float) -> LeaseRecord:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        return cls(
            name=meta.get("name", ""), namespace=meta.get("namespace", ""),
            holder=spec.get("holderIdentity") or None,
            acquired_at=_parse_time(spec.get("acquireTime")), renewed_at=_parse_time(spec.get("renewTime")),
            duration=float(spec.get("leaseDurationSeconds") or default_duration),
            transitions=int(spec.get("leaseTransitions") or 0), resource_version=meta.get("resourceVersion", ""),
            annotations=dict(meta.get("annotations") or {}))

    def expires_at_first_sight(self, wall_now: float) -> float:
        """When the holder's lease ends (wall clock) for a reader seeing this record for the first time."""
        if self.holder is None or self.renewed_at is None:
            return -math.inf
        return min(self.renewed_at, wall_now) + self.duration


def lease_object(name: str, namespace: str, *, holder: str | None, acquired: float | None, renewed: float,
                 duration: float, transitions: int, labels: Mapping[str, str],
                 annotations: Mapping[str, str] | None = None, resource_version: str = "") -> KubeObject:
    """A Lease held by ``holder`` (None: released, no holder and no times) to write with :func:`write_lease`.

    ``resource_version`` is the version the write is based on ("" creates it)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    if resource_version:
        meta["resourceVersion"] = resource_version
    spec: dict[str, Any] = {"leaseDurationSeconds": max(1, round(duration)), "leaseTransitions": transitions}
    if holder is not None:
        spec |= {"holderIdentity": holder, "acquireTime": micro_time(acquired if acquired is not None else renewed),
                 "renewTime": micro_time(renewed)}
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": meta, "spec": spec}


async def read_lease(conn: ClusterConnection, name: str, namespace: str, *,
                     default_duration: float) -> LeaseRecord | None:
    found = await get_record(conn, LEASE_API_VERSION, "Lease", name, namespace)
    return LeaseRecord.of(found, default_duration=default_duration) if found is not None else None


async def write_lease(conn: ClusterConnection, obj: KubeObject) -> LeaseRecord:
    """Create the Lease (no ``resourceVersion``) or replace the version it names; the Lease as written.

    :class:`~isthmus.kube.StaleWrite` when someone else created or changed it first."""
    based_on = obj["metadata"].get("resourceVersion")
    written = await (replace_record(conn, obj) if based_on else create_record(conn, obj))
    return LeaseRecord.of(written, default_duration=float(obj["spec"]["leaseDurationSeconds"]))


class LeaseObserver:
    """Judges another holder's lease from this process's successive reads of it (the rule in the module doc)."""

    def __init__(self, *, monotonic: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._monotonic, self._wall = monotonic, wall
        self._read = False
        self._seen: tuple[str | None, float | None] | None = None
        self._renewed = -math.inf  # monotonic: the holder's last renewal as this process knows it
        self._duration = 0.0

    def observe(self, record: LeaseRecord | None) -> float:
        """Take one read of the Lease into account; returns the seconds its holder has left (<= 0: none)."""
        now = self._monotonic()
        first, self._read = not self._read, True
        if record is None or record.holder is None:
            self._seen, self._renewed = None, -math.inf
            return 0.0
        seen = (record.holder, record.renewed_at)
        if seen != self._seen:
            if first:  # the holder's renewTime, but never later than now
                renewed = record.renewed_at
                self._renewed = -math.inf if renewed is None else now - max(0.0, self._wall() - renewed)
            else:
                self._renewed = now
            self._seen = seen
        self._duration = record.duration
        return self.remaining()

    def remaining(self) -> float:
        """Seconds the holder last observed has left (<= 0: expired, or nobody holds it)."""
        return self._renewed + self._duration - self._monotonic()


class Term:
    """Our own hold on a lease: valid ``duration`` seconds after the start of its last confirmation."""

    def __init__(self, duration: float, *, monotonic: Clock = time.monotonic) -> None:
        self.duration = duration
        self._monotonic = monotonic
        self._until = -math.inf

    def confirmed(self, started: float) -> None:
        """The server confirmed the lease ours by a call that started at monotonic ``started``."""
        self._until = started + self.duration

    def end(self) -> None:
        self._until = -math.inf

    def remaining(self) -> float:
        return self._until - self._monotonic()

    @property
    def valid(self) -> bool:
        return self.remaining() > 0
