"""Which replica leads: a coordination.k8s.io Lease in the operator's namespace, client-go style.

Only the leader runs the kopf handlers; a standby waits in :meth:`Leadership.acquire`. The
Lease records ``holderIdentity``, ``renewTime`` and ``leaseDurationSeconds``. A candidate
judges expiry by *its own* clock: it notes when it last saw the record (holder, renewTime)
change, and takes over once the record has stood still for a lease duration, so clock skew
between machines does not matter. Every write is a compare-and-swap on ``resourceVersion``:
two candidates can never both win the same term.

A leader that cannot renew stops believing it leads as soon as its own last successful renew
is a lease duration old (:attr:`Leadership.is_leader`); the process then stops kopf and exits,
and the per-app rollout lock's fencing token refuses any write that was already in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..errors import IsthmusError
from ..kube import ClusterConnection, KubeError, KubeObject, StaleWrite, create_record, get_record, replace_record
from .settings import LeadershipSettings

__all__ = ["Leadership", "LeadershipLost"]

log = logging.getLogger(__name__)
_API = "coordination.k8s.io/v1"


class LeadershipLost(IsthmusError):
    """This replica no longer holds the Lease; it must stop writing."""


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    def __init__(self, conn: ClusterConnection, namespace: str, identity: str, settings: LeadershipSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn, self.namespace, self.identity, self.settings = conn, namespace, identity, settings
        self._clock = clock
        self._observed: tuple[Any, Any] | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None
        self.holder: str = ""
        self.transitions = 0
        self._acquired = ""
        self._version = ""
        """The Lease version of our last write: a renewal PUTs against it without reading first."""

    @property
    def is_leader(self) -> bool:
        if not self.settings.enabled:
            return True
        return self._renewed_at is not None and self._clock() - self._renewed_at < self.settings.lease_duration

    def _lease(self, *, acquired: str, transitions: int, resource_version: str | None) -> KubeObject:
        meta: dict[str, Any] = {"name": self.settings.lease_name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "isthmus"}}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": _API, "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.settings.lease_duration),
                     "acquireTime": acquired, "renewTime": _micro(time.time()), "leaseTransitions": transitions},
        }

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the Lease afterwards.

        While we lead, a renewal is one PUT against the version we last wrote; only when that
        conflicts (someone else wrote the Lease) is it read and judged afresh.
        """
        started = self._clock()
        if self._version and self.is_leader:
            try:
                written = await replace_record(self.conn, self._lease(
                    acquired=self._acquired, transitions=self.transitions, resource_version=self._version))
            except StaleWrite:
                self._version = ""
            else:
                self._version = written["metadata"]["resourceVersion"]
                self._won(started, self.identity)
                return True
        lease = await get_record(self.conn, _API, "Lease", self.settings.lease_name, self.namespace)
        if lease is None:
            acquired = _micro(time.time())
            try:
                written = await create_record(self.conn, self._lease(acquired=acquired, transitions=0,
                                                                     resource_version=None))
            except StaleWrite:
                return False
            self._acquired, self.transitions, self._version = acquired, 0, written["metadata"]["resourceVersion"]
            self._won(started, self.identity)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        self.holder = holder
        self.transitions = int(spec.get("leaseTransitions") or 0)
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration)
        if holder and holder != self.identity and self._clock() - self._observed_at < duration:
            self._renewed_at = None
            return False
        mine = holder == self.identity
        acquired = (str(spec.get("acquireTime") or "") if mine else "") or _micro(time.time())
        transitions = self.transitions + (0 if mine or not holder else 1)
        try:
            written = await replace_record(self.conn, self._lease(
                acquired=acquired, transitions=transitions, resource_version=lease["metadata"]["resourceVersion"]))
        except StaleWrite:
            return False
        self._acquired, self.transitions, self._version = acquired, transitions, written["metadata"]["resourceVersion"]
        self._won(started, self.identity)
        return True

    def _won(self, started: float, holder: str) -> None:
        if self._renewed_at is None:
            log.info("%s now leads (Lease %s/%s)", self.identity, self.namespace, self.settings.lease_name)
        self._renewed_at = started  # measured from before the write: never overestimate our term
        self.holder = holder

    async def acquire(self) -> None:
        """Return once this replica leads."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    return
            except KubeError as exc:
                log.warning("cannot reach the Lease: %s", exc)
            await asyncio.sleep(self.settings.retry_interval)

    async def keep(self) -> None:
        """Renew until leadership is lost, then raise :class:`LeadershipLost`."""
        while True:
            await asyncio.sleep(self.settings.renew_interval)
            try:
                if not await self.try_acquire_or_renew():
                    self._renewed_at = None
                    raise LeadershipLost(f"{self.identity}: the Lease is now held by {self.holder or 'nobody'}")
            except KubeError as exc:
                log.warning("renewing the Lease failed: %s", exc)
            if not self.is_leader:
                raise LeadershipLost(f"{self.identity}: could not renew the Lease for "
                                     f"{self.settings.lease_duration:g}s")

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown (holder emptied, so a standby need not wait)."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        self._version = ""
        try:
            lease = await get_record(self.conn, _API, "Lease", self.settings.lease_name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await replace_record(self.conn, lease)
        except (KubeError, StaleWrite) as exc:
            log.warning("releasing the Lease failed: %s", exc)
