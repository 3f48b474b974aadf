"""One writer per app across all clusters: a Lease in the control-plane cluster, plus fencing.

The lock is the Lease ``isthmus-lock-<app>`` in namespace ``isthmus-system`` of the Fleet's
control-plane cluster: holder identity, acquire and renew times, duration. Acquiring is a
compare-and-swap on the Lease's ``resourceVersion``; every acquisition raises the fencing token
(annotation ``isthmus.dev/fencing-token``), which therefore only ever grows. Whether another
holder's lease has expired is judged by the rule of :mod:`isthmus.kube.leases`, the one the
operator's leader election uses too.

A lease can expire while its holder still runs (a pause, a partition). Fencing makes that
harmless: before each step the holder records its token in a fence ConfigMap
(``isthmus-fence-<app>`` in the app's namespace) of the member it is about to write to, by
compare-and-swap; a fence holding a higher token refuses the write (:class:`Fenced`). The
rollout state in the control plane is guarded the same way (see :mod:`.progress`). (The first
step in a member finds its fence written already: every member's fence takes the token as soon
as the lock is held, while the revision is recorded.) Before each step the lease is checked on
the server too; concurrent steps share one read, and one less than :data:`VERIFIED_FOR` old
stands.

    UserError
    ├── LockHeld          another live holder has the lock (names it)
    └── BreakRefused      ``lock break`` was not confirmed while the holder is live
    IsthmusError
    ├── LockLost          our lease was taken over or broken: stop writing
    └── Fenced            a member has seen a newer token than ours
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import (
    ClusterConnection,
    KubeObject,
    StaleWrite,
    bookkeeping_labels,
    ensure_namespace,
    write_config_map,
)
from ..kube.leases import LeaseObserver, LeaseRecord, Term, lease_object, read_lease, write_lease
from .clock import SYSTEM, Clock

__all__ = [
    "CONTROL_NAMESPACE",
    "TOKEN_ANNOTATION",
    "BreakRefused",
    "Fenced",
    "LeaseLock",
    "LeaseState",
    "LockHeld",
    "LockLost",
    "break_lock",
    "default_identity",
    "fence",
    "lock_name",
    "lock_status",
]

CONTROL_NAMESPACE = "isthmus-system"
"""Where the lock, the revisions and the rollout state live, in the Fleet's control-plane cluster."""
TOKEN_ANNOTATION = "isthmus.dev/fencing-token"
DEFAULT_DURATION = 15.0
VERIFIED_FOR = 1.0
"""Seconds a confirmation that the lease is ours (acquire, renew, verify) stands for the next :meth:`verify`."""


class LockHeld(UserError):
    def __init__(self, app: str, state: LeaseState, remaining: float) -> None:
        self.app, self.state = app, state
        super().__init__(
            f"app {app} is being changed by {state.holder} (fencing token {state.token}, lease expires in "
            f"{max(0.0, remaining):.0f}s); wait for it (--lock-wait SECONDS), or if that process "
            f"is gone, `isthmus lock break`")


class BreakRefused(UserError):
    pass


class LockLost(IsthmusError):
    def __init__(self, app: str, identity: str, reason: str) -> None:
        self.app, self.identity = app, identity
        super().__init__(f"lock of app {app} lost by {identity}: {reason}; stopped before writing anything more")


class Fenced(IsthmusError):
    def __init__(self, cluster: str, app: str, mine: int, seen: int) -> None:
        self.cluster, self.mine, self.seen = cluster, mine, seen
        super().__init__(f"cluster {cluster}: write for app {app} refused: fencing token {mine} is older than "
                         f"{seen}, which a newer lock holder already used")


def default_identity() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}/{os.getpid()}"


def lock_name(app: str) -> str:
    return f"isthmus-lock-{app}"


def fence_name(app: str) -> str:
    return f"isthmus-fence-{app}"


@dataclass(frozen=True)
class LeaseState:
    """What the Lease says: who holds it, since when, until when, and the latest fencing token."""

    app: str
    holder: str | None
    token: int
    acquired_at: float | None
    renewed_at: float | None
    duration: float
    transitions: int = 0
    resource_version: str = ""

    @property
    def expires_at(self) -> float:
        """The holder's own claim (its renewTime plus the duration), wall clock."""
        return (self.renewed_at or 0.0) + self.duration

    def live(self, now: float) -> bool:
        """Whether the holder is live for a reader with just this one read (see :mod:`isthmus.kube.leases`)."""
        return self.record().expires_at_first_sight(now) > now

    def record(self) -> LeaseRecord:
        return LeaseRecord(name=lock_name(self.app), namespace=CONTROL_NAMESPACE, holder=self.holder,
                           acquired_at=self.acquired_at, renewed_at=self.renewed_at, duration=self.duration,
                           transitions=self.transitions, resource_version=self.resource_version,
                           annotations={TOKEN_ANNOTATION: str(self.token)})

    @classmethod
    def of(cls, app: str, lease: KubeObject) -> LeaseState:
        return cls.of_record(app, LeaseRecord.of(lease, default_duration=DEFAULT_DURATION))

    @classmethod
    def of_record(cls, app: str, rec: LeaseRecord) -> LeaseState:
        return cls(app=app, holder=rec.holder, token=int(rec.annotations.get(TOKEN_ANNOTATION, "0")),
                   acquired_at=rec.acquired_at, renewed_at=rec.renewed_at, duration=rec.duration,
                   transitions=rec.transitions, resource_version=rec.resource_version)

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"app": self.app, "holder": self.holder, "token": self.token, "live": self.live(now),
                "acquiredAt": self.acquired_at, "renewedAt": self.renewed_at, "durationSeconds": self.duration,
                "expiresIn": round(self.expires_at - now, 1) if self.holder else None,
                "transitions": self.transitions}


def _lease(app: str, *, holder: str | None, token: int, now: float, acquired: float | None, duration: float,
           transitions: int, resource_version: str = "") -> KubeObject:
    return lease_object(lock_name(app), CONTROL_NAMESPACE, holder=holder, acquired=acquired, renewed=now,
                        duration=duration, transitions=transitions, labels=bookkeeping_labels(app, "lock"),
                        annotations={TOKEN_ANNOTATION: str(token)}, resource_version=resource_version)


async def lock_status(conn: ClusterConnection, app: str) -> LeaseState | None:
    found = await read_lease(conn, lock_name(app), CONTROL_NAMESPACE, default_duration=DEFAULT_DURATION)
    return LeaseState.of_record(app, found) if found is not None else None


class LeaseLock:
    """The lock of one app, as held (or wanted) by ``identity``.

    ``clock`` gives wall time (lease times are wall times every holder compares) and the monotonic
    time on which the validity of our own lease is tracked, so a stalled process notices it overslept
    (tests share one :class:`~.clock.FakeClock` between holders and move it instead of sleeping).
    Renewing and releasing write against the version this holder last wrote (one round trip);
    a conflict means someone else touched the Lease, and it is read to see whether it is still ours.
    """

    def __init__(self, conn: ClusterConnection, app: str, identity: str | None = None, *,
                 duration: float = DEFAULT_DURATION, clock: Clock = SYSTEM) -> None:
        self.conn, self.app = conn, app
        self.identity = identity or default_identity()
        self.duration = duration
        self.clock = clock
        self.token = 0
        self.renewals = 0
        self._resource_version = ""
        self._transitions = 0
        self._acquired_at: float | None = None
        self._term = Term(duration, monotonic=clock.monotonic)
        self._confirmed_at = -1e9  # monotonic: when the server last said the lease is ours
        self._verifying: asyncio.Future[None] | None = None
        self.succeeded_own_release = False
        """The lock was taken straight from this process's own release (a compare-and-swap against the
        version that release left): nobody held it in between, so no token between our last and this one
        exists (see :func:`fence_unchanged_since_us`)."""

    @property
    def held(self) -> bool:
        return self.token > 0 and self._term.valid

    def remaining(self) -> float:
        return self._term.remaining()

    async def acquire(self, *, wait: float = 0.0, poll: float = 1.0,
                      waiting: Callable[[LeaseState], None] | None = None) -> int:
        """Take the lock, waiting up to ``wait`` seconds for a live holder; returns our fencing token.

        When this process released the lock last (the connection's session remembers it), the Lease
        is taken with one write against the version that release left (a compare-and-swap: anyone
        who took it since makes it fail, and the Lease is then read and judged as usual).
        """
        deadline = self.clock.monotonic() + wait
        await ensure_namespace(self.conn, CONTROL_NAMESPACE)
        released = self.conn.session.released_leases.pop((CONTROL_NAMESPACE, lock_name(self.app)), None)
        left = LeaseState.of_record(self.app, released) if released is not None else None
        observer = LeaseObserver(monotonic=self.clock.monotonic, wall=self.clock.wall)
        self.succeeded_own_release = False
        while True:
            from_release = left is not None
            state = left if left is not None else await lock_status(self.conn, self.app)
            left = None
            now = self.clock.wall()
            remaining = observer.observe(state.record() if state is not None else None)
            if state is not None and remaining > 0 and state.holder != self.identity:
                if self.clock.monotonic() >= deadline:
                    raise LockHeld(self.app, state, remaining)
                if waiting is not None:
                    waiting(state)
                await self.clock.sleep(min(poll, max(0.05, deadline - self.clock.monotonic())))
                continue
            token = (state.token if state else 0) + 1
            transitions = (state.transitions + 1) if state else 0
            started = self.clock.monotonic()
            obj = _lease(self.app, holder=self.identity, token=token, now=now, acquired=now,
                         duration=self.duration, transitions=transitions,
                         resource_version=state.resource_version if state else "")
            try:
                written = await write_lease(self.conn, obj)
            except StaleWrite:
                continue  # someone else moved first: look again
            self.token, self._acquired_at, self._transitions = token, now, transitions
            self.succeeded_own_release = from_release and state is not None and state.holder is None
            self._resource_version = written.resource_version
            self._term.confirmed(started)
            self._confirmed_at = started
            return token

    async def _write_ours(self, *, holder: str | None) -> None:
        """PUT the Lease as ours (or released) against the version we last wrote; re-read on a conflict."""
        while True:
            obj = _lease(self.app, holder=holder, token=self.token, now=self.clock.wall(),
                         acquired=self._acquired_at if holder else None, duration=self.duration,
                         transitions=self._transitions, resource_version=self._resource_version)
            try:
                written = await write_lease(self.conn, obj)
            except StaleWrite:
                state = await lock_status(self.conn, self.app)
                self._check_mine(state)  # LockLost unless it is still ours (a write of ours we did not see)
                assert state is not None
                self._resource_version, self._transitions = state.resource_version, state.transitions
                continue
            self._resource_version = written.resource_version
            return

    async def renew(self) -> None:
        """Extend our lease (compare-and-swap); :class:`LockLost` when it is no longer ours."""
        if self.token == 0:
            raise LockLost(self.app, self.identity, "never acquired")
        started = self.clock.monotonic()
        if not self._resource_version:
            state = await lock_status(self.conn, self.app)
            self._check_mine(state)
            assert state is not None
            self._resource_version, self._transitions = state.resource_version, state.transitions
        await self._write_ours(holder=self.identity)
        self._term.confirmed(started)
        self._confirmed_at = started
        self.renewals += 1

    async def verify(self) -> None:
        """Before a step: our lease is still valid by our own clock and still ours on the server.

        Concurrent steps share one read, and a confirmation less than :data:`VERIFIED_FOR` seconds
        old (an acquire, renewal or read) stands: the member's fence is what refuses a late write.
        """
        if not self.held:
            raise LockLost(self.app, self.identity, f"lease not renewed within {self.duration:g}s")
        if self.clock.monotonic() - self._confirmed_at < VERIFIED_FOR:
            return
        if self._verifying is not None:
            await asyncio.shield(self._verifying)
            return
        loop = asyncio.get_running_loop()
        self._verifying = future = loop.create_future()
        started = self.clock.monotonic()
        try:
            self._check_mine(await lock_status(self.conn, self.app))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            self._confirmed_at = started
            future.set_result(None)
        finally:
            self._verifying = None

    def _check_mine(self, state: LeaseState | None) -> None:
        if state is None:
            raise LockLost(self.app, self.identity, "the Lease was deleted")
        if state.holder != self.identity or state.token != self.token:
            who = state.holder or "nobody (broken)"
            raise LockLost(self.app, self.identity, f"now held by {who} with fencing token {state.token}")

    async def release(self) -> None:
        """Give the lock up (keeping the token, so the next holder's is higher); quiet if already lost."""
        if self.token == 0:
            return
        with contextlib.suppress(LockLost):
            await self._write_ours(holder=None)
            self.conn.session.released_leases[(CONTROL_NAMESPACE, lock_name(self.app))] = LeaseState(
                app=self.app, holder=None, token=self.token, acquired_at=None, renewed_at=None,
                duration=self.duration, transitions=self._transitions, resource_version=self._resource_version
            ).record()
        self.token = 0
        self._term.end()
        self._confirmed_at = -1e9


async def break_lock(conn: ClusterConnection, app: str, *, confirmed: bool,
                     clock: Callable[[], float] = time.time) -> LeaseState | None:
    """Clear the holder, keeping the token: the next holder fences the old one out.

    A live holder is only broken when ``confirmed``; otherwise :class:`BreakRefused` and nothing changes.
    """
    state = await lock_status(conn, app)
    if state is None or state.holder is None:
        return state
    now = clock()
    if state.live(now) and not confirmed:
        raise BreakRefused(f"the lock of app {app} is held by {state.holder}, whose lease is live for "
                           f"{state.expires_at - now:.0f}s more; nothing changed. Confirm, or pass --yes")
    obj = _lease(app, holder=None, token=state.token, now=now, acquired=None, duration=state.duration,
                 transitions=state.transitions, resource_version=state.resource_version)
    await write_lease(conn, obj)
    return state


async def fence(conn: ClusterConnection, app: str, namespace: str, token: int, holder: str) -> bool:
    """Record ``token`` as the highest seen by this member for ``app``; :class:`Fenced` if a higher one is.

    A compare-and-swap on the fence ConfigMap: of two holders racing here, the lower token loses
    even when it read first. When the fence already holds our token it is read again to confirm
    no newer holder has written since. Returns True when the new token went in against the fence
    as this process last wrote it: then no other holder has written to this member since.
    """

    def change(data: dict[str, str] | None) -> dict[str, str] | None:
        seen = int((data or {}).get("token", "0"))
        if seen > token:
            raise Fenced(conn.name, app, token, seen)
        return None if data is not None and seen == token else {"token": str(token), "holder": holder}

    written = await write_config_map(conn, fence_name(app), namespace, labels=bookkeeping_labels(app, "fence"),
                                     change=change)
    return written.wrote and written.unread


def fence_unchanged_since_us(conn: ClusterConnection, app: str, namespace: str, lock: LeaseLock) -> bool:
    """Whether, before ``lock``'s holder writes this member's fence, the fence provably still holds what this
    process last wrote there: the token ``lock`` held just before this one, in ``lock``'s name.

    True only when the lock was taken straight from this process's own release
    (:attr:`LeaseLock.succeeded_own_release`) and the connection remembers the fence with that previous
    token: then nobody has held the lock since we last wrote here, no higher token than ours exists,
    and no writer that honours the lock has written to the member since. The caller may write before
    its new fence is in, and must still await that fence (which confirms all this against the server)
    and redo the write, reading first, if it says otherwise.
    """
    if not lock.succeeded_own_release or lock.token < 2:
        return False
    seen = conn.session.config_maps.get((namespace, fence_name(app)))
    return seen is not None and seen.data is not None and seen.data.get("token") == str(lock.token - 1) \
        and seen.data.get("holder") == lock.identity


__all__ += ["fence_name", "fence_unchanged_since_us"]
