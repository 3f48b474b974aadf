"""What one run of the engine is given: the app's objects for each member, what they ran before, and
the settings the run keeps to (the caller's options and the app's strategy, composed, never copied).
Pure values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..kube import ClusterConnection, KubeObject, ObjectRef
from ..render import Manifests
from ..spec.cassandra import RolloutStrategy
from .clock import SYSTEM, Clock
from .gates import DEFAULT_GATES, Gate
from .locking import DEFAULT_DURATION, LeaseState

if TYPE_CHECKING:
    from .steps import Step

__all__ = ["Baseline", "EngineSettings", "EngineStrategy", "KeyspaceWork", "RolloutOptions", "ScaleWork", "Target"]


@dataclass(frozen=True)
class Baseline:
    """The revision the members ran before this rollout, as rendered: what a member provably still holds
    (see :func:`.deciding.changed_since`) need not be read back to find what changed."""

    revision: int
    manifests: Mapping[str, Sequence[KubeObject]]


@dataclass(frozen=True, kw_only=True)
class Target:
    """What a run carries where: one app's rendered objects for each of its members."""

    app: str
    namespace: str
    members: Sequence[str]
    manifests: Manifests
    baseline: Baseline | None = None
    """What the members ran until now (a new revision only)."""


@dataclass(frozen=True, kw_only=True)
class RolloutOptions:
    """What the caller (a CLI command, the operator) chooses for a rollout: one bag, handed down as it is.

    The engine reads it through :class:`EngineSettings`, which adds only what the app's own strategy says."""

    identity: str | None = None
    """Who is rolling out (recorded in the lock, the revision and the state); default user@host/pid."""
    lock_wait: float = 0.0
    """Seconds to wait for another holder's lock before refusing (naming the holder)."""
    lock_duration: float = DEFAULT_DURATION
    poll_interval: float = 1.0
    force_conflicts: bool = False
    prune: bool = True
    skip_clusters: frozenset[str] = frozenset()
    timeout: float | None = None
    """Seconds the whole run may take; then it pauses (resumable)."""
    gates: tuple[Gate, ...] = DEFAULT_GATES
    lock_waiting: Callable[[LeaseState], None] | None = None
    unless_settled: bool = False
    """Read first, and write nothing at all (no lock, no fence, no record) when every member already runs
    this very revision; see :mod:`.settled`."""
    repair: Mapping[str, frozenset[ObjectRef]] = field(default_factory=dict)
    """Drift correction: per member, objects to write again (taking conflicting fields over) although their
    content hash matches."""
    clock: Clock = SYSTEM
    """Where the engine's waits and times come from (tests inject a :class:`~.clock.FakeClock`)."""
    kinds_fresh_for: float = 0.0
    """Seconds a member connection's finding that it serves a custom kind stands without reading it again
    (0: always read; the operator, whose member probe reconfirms them, trusts a recent one; see
    :mod:`isthmus.kube.customkinds`)."""


class EngineStrategy(Protocol):
    """What the engine reads of an app's rollout strategy (the spec's ``spec.rollout``, as it is)."""

    @property
    def soak_seconds(self) -> float: ...

    @property
    def progress_deadline_seconds(self) -> float: ...

    @property
    def failure_budget(self) -> int: ...


class KeyspaceWork(Protocol):
    """What runs the ``keyspace`` steps (CQL to the ring: :class:`~.keyspacing.RingKeyspaces`)."""

    async def matches(self, step: Step) -> bool | None: ...

    async def apply(self, step: Step, *, interrupted: bool = False) -> tuple[str, bool]:
        """What was done (the step's note), and whether anything was written."""


class DatacenterWork(Protocol):
    """What runs the ``join``, ``rebuild`` and ``decommission`` steps (:class:`~.datacenters.RingDatacenters`)."""

    async def run(self, step: Step, *, token: int, interrupted: bool = False) -> str:
        """What was done (the step's note); ``token``: the lock's fencing token, for its own progress."""


class ScaleWork(Protocol):
    """What runs the ``scale`` steps (nodetool and replicas, one node at a time: :class:`~.scaling.RingScaling`)."""

    async def apply(self, step: Step, *, interrupted: bool = False) -> tuple[str, bool]:
        """What was done (the step's note), and whether anything was written."""

    async def check_rack(self, step: Step, objects: Sequence[KubeObject]) -> None:
        """Raise when writing a rack step's ``objects`` would drop nodes of the ring (lower its replicas)."""


class RackWork(Protocol):
    """How a rack step that rolls pods writes and waits (a Cassandra ring: :class:`~.rackrolling.RackRolling`)."""

    async def roll(self, step: Step, conn: ClusterConnection, objects: list[KubeObject], *,
                   write: Callable[[list[KubeObject]], Awaitable[None]], converge: Callable[[], Awaitable[None]],
                   say: Callable[[str], None], siblings: Sequence[KubeObject] = ()) -> str:
        """What was done (a note for the step's record). ``siblings``: the desired StatefulSets of every rack of the
        step's datacenter in its cluster, stamped like ``objects``."""


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """What one run of the engine keeps to: the caller's :class:`RolloutOptions` as they are, the app's
    rollout strategy as it is, the gates the app adds (the database's own) and whether this is a re-apply.
    Nothing is copied: the properties read through to where each value was chosen."""

    options: RolloutOptions = field(default_factory=RolloutOptions)
    strategy: EngineStrategy = field(default_factory=RolloutStrategy)
    app_gates: tuple[Gate, ...] = ()
    """Gates the app brings beside the caller's (a Cassandra ring's :class:`~.dbgate.DatabaseGate`)."""
    reapply: bool = False
    """The revision was rolled out before (this is a re-apply): a member may well hold all of it already."""
    keyspaces: KeyspaceWork | None = None
    """Runs the plan's ``keyspace`` steps (a Cassandra ring whose spec declares keyspaces)."""
    datacenters: DatacenterWork | None = None
    """Runs the plan's steps of datacenters added or removed (a Cassandra ring)."""
    scaling: ScaleWork | None = None
    """Runs the plan's ``scale`` steps (a Cassandra ring)."""
    racks: RackWork | None = None
    """Rolls the racks (a Cassandra ring: a rack at once when its replication proves it safe); None: the
    StatefulSet controller alone, a pod at a time."""

    @property
    def gates(self) -> tuple[Gate, ...]:
        return (*self.options.gates, *self.app_gates)

    @property
    def poll_interval(self) -> float:
        return self.options.poll_interval

    @property
    def force_conflicts(self) -> bool:
        return self.options.force_conflicts

    @property
    def prune(self) -> bool:
        return self.options.prune

    @property
    def skip_clusters(self) -> frozenset[str]:
        return self.options.skip_clusters

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @property
    def repair(self) -> Mapping[str, frozenset[ObjectRef]]:
        return self.options.repair

    @property
    def soak_seconds(self) -> float:
        return self.strategy.soak_seconds

    @property
    def progress_deadline(self) -> float:
        return self.strategy.progress_deadline_seconds

    @property
    def failure_budget(self) -> int:
        return self.strategy.failure_budget
