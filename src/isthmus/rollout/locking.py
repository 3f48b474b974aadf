"""One writer per app across all clusters: a Lease in the control-plane cluster, plus fencing.

The lock is the Lease ``isthmus-lock-<app>`` in namespace ``isthmus-system`` of the Fleet's
control-plane cluster: holder identity, acquire and renew times, duration. Acquiring is a
compare-and-swap on the Lease's ``resourceVersion``; every acquisition raises the fencing token
(annotation ``isthmus.dev/fencing-token``), which therefore only ever grows.

A lease can expire while its holder still runs (a pause, a partition). Fencing makes that
harmless: before each step the holder records its token in a fence ConfigMap
(``isthmus-fence-<app>`` in the app's namespace) of the member it is about to write to, by
compare-and-swap; a fence holding a higher token refuses the write (:class:`Fenced`). The
rollout state in the control plane is guarded the same way (see :mod:`.progress`).

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
from datetime import UTC, datetime
from typing import Any

from ..errors import IsthmusError, UserError
from ..kube import ClusterConnection, KubeObject
from ._objects import (
    CONTROL_NAMESPACE,
    StaleWrite,
    bookkeeping_labels,
    create_object,
    ensure_namespace,
    get_object,
    replace_object,
)

__all__ = [
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

TOKEN_ANNOTATION = "isthmus.dev/fencing-token"
DEFAULT_DURATION = 15.0


class LockHeld(UserError):
    def __init__(self, app: str, state: LeaseState, now: float) -> None:
        self.app, self.state = app, state
        super().__init__(
            f"app {app} is being changed by {state.holder} (fencing token {state.token}, lease expires in "
            f"{max(0.0, state.expires_at - now):.0f}s); wait for it (--lock-wait SECONDS), or if that process "
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


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    text = str(value).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


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
        return (self.renewed_at or 0.0) + self.duration

    def live(self, now: float) -> bool:
        return self.holder is not None and now < self.expires_at

    @classmethod
    def of(cls, app: str, lease: KubeObject) -> LeaseState:
        meta, spec = lease.get("metadata", {}), lease.get("spec") or {}
        return cls(
            app=app, holder=spec.get("holderIdentity") or None,
            token=int((meta.get("annotations") or {}).get(TOKEN_ANNOTATION, "0")),
            acquired_at=_parse_time(spec.get("acquireTime")), renewed_at=_parse_time(spec.get("renewTime")),
            duration=float(spec.get("leaseDurationSeconds") or DEFAULT_DURATION),
            transitions=int(spec.get("leaseTransitions") or 0), resource_version=meta.get("resourceVersion", ""))

    def to_dict(self, now: float) -> dict[str, Any]:
        return {"app": self.app, "holder": self.holder, "token": self.token, "live": self.live(now),
                "acquiredAt": self.acquired_at, "renewedAt": self.renewed_at, "durationSeconds": self.duration,
                "expiresIn": round(self.expires_at - now, 1) if self.holder else None,
                "transitions": self.transitions}


def _lease(app: str, *, holder: str | None, token: int, now: float, acquired: float | None, duration: float,
           transitions: int, resource_version: str = "") -> KubeObject:
    meta: dict[str, Any] = {"name": lock_name(app), "namespace": CONTROL_NAMESPACE,
                            "labels": bookkeeping_labels(app, "lock"),
                            "annotations": {TOKEN_ANNOTATION: str(token)}}
    if resource_version:
        meta["resourceVersion"] = resource_version
    spec: dict[str, Any] = {"leaseDurationSeconds": max(1, round(duration)), "leaseTransitions": transitions}
    if holder is not None:
        spec |= {"holderIdentity": holder, "acquireTime": _micro(acquired or now), "renewTime": _micro(now)}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


async def lock_status(conn: ClusterConnection, app: str) -> LeaseState | None:
    found = await get_object(conn, "coordination.k8s.io/v1", "Lease", lock_name(app), CONTROL_NAMESPACE)
    return LeaseState.of(app, found) if found is not None else None


class LeaseLock:
    """The lock of one app, as held (or wanted) by ``identity``.

    ``clock`` is wall time (lease times are wall times every holder compares); validity of our
    own lease is also tracked on the monotonic clock, so a stalled process notices it overslept.
    """

    def __init__(self, conn: ClusterConnection, app: str, identity: str | None = None, *,
                 duration: float = DEFAULT_DURATION, clock: Callable[[], float] = time.time) -> None:
        self.conn, self.app = conn, app
        self.identity = identity or default_identity()
        self.duration = duration
        self.clock = clock
        self.token = 0
        self.renewals = 0
        self._resource_version = ""
        self._acquired_at: float | None = None
        self._valid_until = 0.0  # monotonic

    @property
    def held(self) -> bool:
        return self.token > 0 and time.monotonic() < self._valid_until

    def remaining(self) -> float:
        return self._valid_until - time.monotonic()

    async def acquire(self, *, wait: float = 0.0, poll: float = 1.0,
                      waiting: Callable[[LeaseState], None] | None = None) -> int:
        """Take the lock, waiting up to ``wait`` seconds for a live holder; returns our fencing token."""
        deadline = time.monotonic() + wait
        await ensure_namespace(self.conn, CONTROL_NAMESPACE)
        while True:
            state = await lock_status(self.conn, self.app)
            now = self.clock()
            if state is not None and state.live(now) and state.holder != self.identity:
                if time.monotonic() >= deadline:
                    raise LockHeld(self.app, state, now)
                if waiting is not None:
                    waiting(state)
                await asyncio.sleep(min(poll, max(0.05, deadline - time.monotonic())))
                continue
            token = (state.token if state else 0) + 1
            transitions = (state.transitions + 1) if state else 0
            started = time.monotonic()
            obj = _lease(self.app, holder=self.identity, token=token, now=now, acquired=now,
                         duration=self.duration, transitions=transitions,
                         resource_version=state.resource_version if state else "")
            try:
                written = await (replace_object(self.conn, obj) if state else create_object(self.conn, obj))
            except StaleWrite:
                continue  # someone else moved first: look again
            self.token, self._acquired_at = token, now
            self._resource_version = written["metadata"]["resourceVersion"]
            self._valid_until = started + self.duration
            return token

    async def renew(self) -> None:
        """Extend our lease (compare-and-swap); :class:`LockLost` when it is no longer ours."""
        if self.token == 0:
            raise LockLost(self.app, self.identity, "never acquired")
        started = time.monotonic()
        state = await lock_status(self.conn, self.app)
        self._check_mine(state)
        assert state is not None
        obj = _lease(self.app, holder=self.identity, token=self.token, now=self.clock(), acquired=self._acquired_at,
                     duration=self.duration, transitions=state.transitions, resource_version=state.resource_version)
        try:
            written = await replace_object(self.conn, obj)
        except StaleWrite as exc:
            raise LockLost(self.app, self.identity, "the Lease changed while renewing") from exc
        self._resource_version = written["metadata"]["resourceVersion"]
        self._valid_until = started + self.duration
        self.renewals += 1

    async def verify(self) -> None:
        """Before a step: our lease is still valid by our own clock and still ours on the server."""
        if not self.held:
            raise LockLost(self.app, self.identity, f"lease not renewed within {self.duration:g}s")
        self._check_mine(await lock_status(self.conn, self.app))

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
        state = await lock_status(self.conn, self.app)
        if state is None or state.holder != self.identity or state.token != self.token:
            self.token = 0
            return
        obj = _lease(self.app, holder=None, token=state.token, now=self.clock(), acquired=None,
                     duration=self.duration, transitions=state.transitions, resource_version=state.resource_version)
        with contextlib.suppress(StaleWrite):
            await replace_object(self.conn, obj)
        self.token = 0
        self._valid_until = 0.0


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
    await replace_object(conn, obj)
    return state


async def fence(conn: ClusterConnection, app: str, namespace: str, token: int, holder: str) -> None:
    """Record ``token`` as the highest seen by this member for ``app``; :class:`Fenced` if a higher one is.

    A compare-and-swap on the fence ConfigMap: of two holders racing here, the lower token loses
    even when it read first.
    """
    name = fence_name(app)
    await ensure_namespace(conn, namespace)
    while True:
        live = await get_object(conn, "v1", "ConfigMap", name, namespace)
        seen = int(((live or {}).get("data") or {}).get("token", "0"))
        if seen > token:
            raise Fenced(conn.name, app, token, seen)
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": bookkeeping_labels(app, "fence")}
        obj: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                           "data": {"token": str(token), "holder": holder}}
        try:
            if live is None:
                await create_object(conn, obj)
            elif seen < token:
                meta["resourceVersion"] = live["metadata"]["resourceVersion"]
                await replace_object(conn, obj)
            return
        except StaleWrite:
            continue


__all__ += ["fence_name"]
