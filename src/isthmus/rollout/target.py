"""What one run of the engine is given: the app's objects for each member, what they ran before, and
the settings the run keeps to. Pure values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..kube import KubeObject, ObjectRef
from ..render import Manifests
from .gates import DEFAULT_GATES, Gate

__all__ = ["Baseline", "EngineSettings", "Target"]


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
class EngineSettings:
    poll_interval: float = 1.0
    force_conflicts: bool = False
    prune: bool = True
    skip_clusters: frozenset[str] = frozenset()
    gates: tuple[Gate, ...] = DEFAULT_GATES
    soak_seconds: float = 0.0
    progress_deadline: float = 600.0
    failure_budget: int = 0
    timeout: float | None = None
    """Seconds the whole run may take; then it pauses (resumable)."""
    repair: Mapping[str, frozenset[ObjectRef]] = field(default_factory=dict)
    """Per member, objects to write again (taking conflicting fields over) although their hash matches."""
    reapply: bool = False
    """The revision was rolled out before (this is a re-apply): a member may well hold all of it already."""
