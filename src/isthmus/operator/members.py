"""The member registry: which clusters the operator may write to, built from kubeconfig Secrets.

A member is registered by a Secret in the operator's namespace labelled
``isthmus.dev/cluster=<name>`` with a ``kubeconfig`` key. :meth:`MemberRegistry.sync` is
level-based: given every such Secret, it adds new members, rebuilds the connection of a member
whose kubeconfig changed (credential rotation: a fresh connection with a fresh circuit breaker,
while the member's reachability history stays), and forgets members whose Secret is gone. No
restart is ever needed. The Secrets are re-listed on every watch event and periodically.

Each member has its own circuit breaker (in its :class:`~isthmus.kube.ClusterConnection`) and a
``Reachable`` condition with the time it last answered, fed by periodic probes and by every
reconcile's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..kube import ApiFailure, ClusterConnection, ClusterRegistry, ConnectionSettings, Reach, across, reconfirm_kinds
from ..kube.members import InvalidKubeconfig, MemberSecret, connection_from_kubeconfig, ping
from .status import Condition, ConditionStatus, MemberStatus, rfc3339

__all__ = ["MemberChanges", "MemberRegistry", "MemberState"]

log = logging.getLogger(__name__)
RETIRE_AFTER = 60.0
"""Seconds a replaced connection stays open for reconciles still using it."""


@dataclass
class MemberState:
    name: str
    secret: str
    digest: str
    connection: ClusterConnection | None
    status: ConditionStatus = "Unknown"
    reason: str = "NotProbedYet"
    message: str = ""
    last_seen: float | None = None
    last_transition: float = field(default_factory=time.time)

    def condition(self) -> Condition:
        return Condition(type="Reachable", status=self.status, reason=self.reason, message=self.message,
                         last_transition_time=rfc3339(self.last_transition), last_seen_time=rfc3339(self.last_seen))


@dataclass(frozen=True)
class MemberChanges:
    added: tuple[str, ...] = ()
    rotated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    invalid: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.rotated or self.removed or self.invalid)


class MemberRegistry:
    """Registered member clusters by name; every change comes through :meth:`sync` or :meth:`observe`."""

    def __init__(self, connection_settings: ConnectionSettings | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = connection_settings or ConnectionSettings()
        self._members: dict[str, MemberState] = {}
        self._clock = clock
        self._retired: list[ClusterConnection] = []
        self.synced = asyncio.Event()

    def __contains__(self, name: object) -> bool:
        state = self._members.get(name) if isinstance(name, str) else None
        return state is not None and state.connection is not None

    def __iter__(self) -> Iterator[MemberState]:
        return iter(sorted(self._members.values(), key=lambda s: s.name))

    def names(self) -> list[str]:
        return sorted(name for name in self._members if name in self)

    def state(self, name: str) -> MemberState | None:
        return self._members.get(name)

    def sync(self, secrets: Iterable[MemberSecret]) -> MemberChanges:
        """Make the members exactly those ``secrets`` register (the first Secret wins for a duplicated name)."""
        wanted: dict[str, MemberSecret] = {}
        for secret in secrets:
            if secret.cluster in wanted:
                log.warning("member %s is registered twice (Secrets %s and %s); using %s", secret.cluster,
                            wanted[secret.cluster].secret, secret.secret, wanted[secret.cluster].secret)
                continue
            wanted[secret.cluster] = secret
        added, rotated, invalid = [], [], []
        for name, secret in wanted.items():
            old = self._members.get(name)
            if old is not None and old.digest == secret.digest and old.secret == secret.secret:
                continue
            conn, error = self._connect(secret)
            if old is None:
                self._members[name] = MemberState(name, secret.secret, secret.digest, conn)
                added.append(name)
            else:
                self._retire(old.connection)
                old.connection, old.digest, old.secret = conn, secret.digest, secret.secret
                rotated.append(name)
            if conn is None:
                self._set(name, "False", "InvalidKubeconfig", error)
                invalid.append(name)
        removed = sorted(set(self._members) - set(wanted))
        for name in removed:
            self._retire(self._members.pop(name).connection)
        self.synced.set()
        return MemberChanges(tuple(added), tuple(rotated), tuple(removed), tuple(invalid))

    def _connect(self, secret: MemberSecret) -> tuple[ClusterConnection | None, str]:
        if secret.error:
            return None, secret.error
        try:
            return connection_from_kubeconfig(secret.cluster, secret.kubeconfig, self._settings), ""
        except InvalidKubeconfig as exc:
            return None, str(exc)

    def _retire(self, conn: ClusterConnection | None) -> None:
        if conn is None:
            return
        self._retired.append(conn)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(RETIRE_AFTER, lambda: loop.create_task(self._close_retired(conn)))

    async def _close_retired(self, conn: ClusterConnection) -> None:
        if conn in self._retired:
            self._retired.remove(conn)
            await conn.close()

    def registry(self, names: Iterable[str], *,
                 fallback: dict[str, ClusterConnection] | None = None) -> ClusterRegistry:
        """A registry of ``names`` for one reconcile; a name not registered is taken from ``fallback`` if there."""
        conns: list[ClusterConnection] = []
        for name in dict.fromkeys(names):
            state = self._members.get(name)
            if state is not None and state.connection is not None:
                conns.append(state.connection)
            elif fallback and name in fallback:
                conns.append(fallback[name])
            else:
                raise KeyError(name)
        return ClusterRegistry(conns)

    def observe(self, name: str, reach: Reach, error: str = "") -> None:
        """Record what a call to ``name`` showed: Done is Reachable, Unknown is not; Failed says nothing."""
        if name not in self._members:
            return
        if reach is Reach.REACHED:
            self._set(name, "True", "Answered", "")
        elif reach is Reach.UNREACHABLE:
            self._set(name, "False", "Unreachable", error)

    def _set(self, name: str, status: ConditionStatus, reason: str, message: str) -> None:
        state = self._members[name]
        now = self._clock()
        if status == "True":
            state.last_seen = now
        if state.status != status:
            state.last_transition = now
        state.status, state.reason, state.message = status, reason, message

    async def probe(self) -> None:
        """Ping every member with a connection, concurrently; each one's breaker guards the others. A member that
        answers also reconfirms the custom kinds its connection last found served, so that a rollout may trust
        that recent answer instead of asking the member again (see :mod:`isthmus.kube.customkinds`)."""
        conns = {s.name: s.connection for s in self._members.values() if s.connection is not None}

        async def probe_one(conn: ClusterConnection) -> None:
            await ping(conn)
            # An answer other than the CRD (a 403) leaves those kinds to age out of the hint: not a member fault.
            with contextlib.suppress(ApiFailure):
                await reconfirm_kinds(conn)

        outcomes = await across(conns, probe_one)
        for name, outcome in outcomes.items():
            if outcome.reach is Reach.FAILED:
                self._set(name, "False", "Error", outcome.error)
            else:
                self.observe(name, outcome.reach, outcome.error)

    def conditions(self, names: Iterable[str]) -> list[tuple[str, Condition]]:
        """The Reachable condition of each of ``names``; an unregistered name is False, NotRegistered."""
        out = []
        for name in dict.fromkeys(names):
            state = self._members.get(name)
            if state is None:
                out.append((name, Condition(type="Reachable", status="False", reason="NotRegistered",
                                            message=f"no Secret labelled isthmus.dev/cluster={name}")))
            else:
                out.append((name, state.condition()))
        return out

    def seen(self, names: Iterable[str]) -> tuple[tuple[str, str, str, int], ...]:
        """What the status shows of ``names`` (reachability, and which connection): changed means refresh."""
        out = []
        for name, reach in self.conditions(names):
            state = self.state(name)
            out.append((name, reach.status, reach.reason, id(state.connection) if state is not None else 0))
        return tuple(out)

    def statuses(self, names: Iterable[str], previous: Iterable[MemberStatus], *, fresh: bool) -> list[MemberStatus]:
        """Each member's Reachable condition; unless ``fresh`` (a re-apply), an unchanged one keeps its old times."""
        before = {m.name: {c.type: c for c in m.conditions} for m in previous}
        out = []
        for name, reach in self.conditions(names):
            old = before.get(name, {}).get(reach.type)
            keep = not fresh and old is not None and (old.status, old.reason) == (reach.status, reach.reason)
            out.append(MemberStatus(name=name, conditions=[old if keep and old is not None else reach]))
        return out

    async def close(self) -> None:
        for state in self._members.values():
            if state.connection is not None:
                await state.connection.close()
        for conn in self._retired:
            await conn.close()
        self._members.clear()
        self._retired.clear()
