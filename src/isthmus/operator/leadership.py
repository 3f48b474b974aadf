"""Which replica leads: a coordination.k8s.io Lease in the operator's namespace, client-go style.

Only the leader runs the kopf handlers; a standby waits in :meth:`Leadership.acquire`. The
Lease records ``holderIdentity``, ``renewTime`` and ``leaseDurationSeconds``. A candidate judges
whether the holder's term is over by the rule of :mod:`isthmus.kube.leases` (the one the rollout
lock uses): a renewal it saw happen counts from when it saw it, on its own clock, so clock skew
between machines does not matter; a record it found already there at its first read counts from
the record's renewTime. Every write is a compare-and-swap on ``resourceVersion``: two candidates
can never both win the same term.

A leader that cannot renew stops believing it leads as soon as its own last successful renew
is a lease duration old (:attr:`Leadership.is_leader`); the process then stops kopf and exits,
and the per-app rollout lock's fencing token refuses any write that was already in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..errors import IsthmusError
from ..kube import ClusterConnection, KubeError, KubeObject, StaleWrite
from ..kube.leases import LeaseObserver, Term, lease_object, read_lease, write_lease
from .settings import LeadershipSettings

__all__ = ["Leadership", "LeadershipLost"]

log = logging.getLogger(__name__)
_LABELS = {"app.kubernetes.io/managed-by": "isthmus"}


class LeadershipLost(IsthmusError):
    """This replica no longer holds the Lease; it must stop writing."""


class Leadership:
    def __init__(self, conn: ClusterConnection, namespace: str, identity: str, settings: LeadershipSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn, self.namespace, self.identity, self.settings = conn, namespace, identity, settings
        self._clock = clock
        self._observer = LeaseObserver(monotonic=clock)
        self._term = Term(settings.lease_duration, monotonic=clock)
        self._leading = False
        self.holder: str = ""
        self.transitions = 0
        self._acquired: float | None = None
        self._version = ""
        """The Lease version of our last write: a renewal PUTs against it without reading first."""

    @property
    def is_leader(self) -> bool:
        if not self.settings.enabled:
            return True
        return self._leading and self._term.valid

    def _lease(self, *, acquired: float | None, transitions: int, resource_version: str) -> KubeObject:
        return lease_object(self.settings.lease_name, self.namespace, holder=self.identity, acquired=acquired,
                            renewed=time.time(), duration=self.settings.lease_duration, transitions=transitions,
                            labels=_LABELS, resource_version=resource_version)

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the Lease afterwards.

        While we lead, a renewal is one PUT against the version we last wrote; only when that
        conflicts (someone else wrote the Lease) is it read and judged afresh.
        """
        started = self._clock()
        if self._version and self.is_leader:
            try:
                written = await write_lease(self.conn, self._lease(
                    acquired=self._acquired, transitions=self.transitions, resource_version=self._version))
            except StaleWrite:
                self._version = ""
            else:
                self._version = written.resource_version
                self._won(started)
                return True
        lease = await read_lease(self.conn, self.settings.lease_name, self.namespace,
                                 default_duration=self.settings.lease_duration)
        if lease is None:
            acquired = time.time()
            try:
                written = await write_lease(self.conn, self._lease(acquired=acquired, transitions=0,
                                                                   resource_version=""))
            except StaleWrite:
                return False
            self._acquired, self.transitions, self._version = acquired, 0, written.resource_version
            self._won(started)
            return True
        holder = lease.holder or ""
        self.holder = holder
        self.transitions = lease.transitions
        if self._observer.observe(lease) > 0 and holder != self.identity:
            self._leading = False
            return False
        mine = holder == self.identity
        acquired = (lease.acquired_at if mine else None) or time.time()
        transitions = self.transitions + (0 if mine or not holder else 1)
        try:
            written = await write_lease(self.conn, self._lease(
                acquired=acquired, transitions=transitions, resource_version=lease.resource_version))
        except StaleWrite:
            return False
        self._acquired, self.transitions, self._version = acquired, transitions, written.resource_version
        self._won(started)
        return True

    def _won(self, started: float) -> None:
        if not self._leading:
            log.info("%s now leads (Lease %s/%s)", self.identity, self.namespace, self.settings.lease_name)
        self._leading = True
        self._term.confirmed(started)  # measured from before the write: never overestimate our term
        self.holder = self.identity

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
                    self._leading = False
                    raise LeadershipLost(f"{self.identity}: the Lease is now held by {self.holder or 'nobody'}")
            except KubeError as exc:
                log.warning("renewing the Lease failed: %s", exc)
            if not self.is_leader:
                raise LeadershipLost(f"{self.identity}: could not renew the Lease for "
                                     f"{self.settings.lease_duration:g}s")

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown (holder emptied, so a standby need not wait)."""
        if not self._leading:
            return
        self._leading = False
        self._term.end()
        self._version = ""
        try:
            lease = await read_lease(self.conn, self.settings.lease_name, self.namespace,
                                     default_duration=self.settings.lease_duration)
            if lease is None or lease.holder != self.identity:
                return
            await write_lease(self.conn, lease_object(
                lease.name, lease.namespace, holder=None, acquired=None, renewed=time.time(), duration=1,
                transitions=lease.transitions, labels=_LABELS, resource_version=lease.resource_version))
        except (KubeError, StaleWrite) as exc:
            log.warning("releasing the Lease failed: %s", exc)
