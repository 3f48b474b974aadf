"""What the engine does with one step: a pure decision, made from the step, its record, what the member
holds and the run's settings. No I/O and no clock here.

The choices form a ladder; each does what the one before it does, and more:

- ``skip``: nothing to do. The step is Done (or Skipped) already, or its member is skipped by
  override (``--skip-cluster``; the engine records and logs it).
- ``unchanged``: Done without a write, because the member already holds it: a rack whose
  StatefulSet has the desired content hash ("nothing to roll"), or, on a re-apply, a ``prepare``
  or ``finalize`` whose objects the member holds entirely ("the member holds all of it").
- ``apply``: write without gates, recorded with the next state write. A step that rolls no pods:
  every ``prepare``, and a ``finalize`` that changes and prunes no StatefulSet.
- ``gate``: disruptive. Ask the gates first, record Running, write, record Done. A ``keyspace`` step is
  ``unchanged`` when the ring already has its declared replication (``look``: ask the ring), else ``gate``.
  A ``join``, ``rebuild`` or ``decommission`` step (a datacenter added or removed) is always ``gate``.
  A ``scale`` step is always ``gate`` until Done (it finds what is left to do itself, node by node).
- ``converge``: a disruptive rack. As ``gate``, then wait until its pods are updated and Ready.

A step is disruptive when the member view cannot show that it rolls no pods: its StatefulSet
differs or is missing, a StatefulSet would be pruned, the live StatefulSets could not be read, it
is named for repair (drift correction), or it is a rack interrupted after it was marked Running
(let it converge as before). When the view lacks what would tell (the live StatefulSets; on a
re-apply, the step's objects, the inventory and the member's record), the decision says ``look``:
read that much more of the member (:mod:`.memberview`) and decide again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ..kube import KubeObject, ObjectRef
from ..kube.objects import content_hash
from .memberview import MemberView, RecordedRevision
from .progress import Outcome, StepRecord
from .steps import Step, StepKind

__all__ = ["Choice", "StepDecision", "StepSettings", "changed_since", "decide"]


class Choice(StrEnum):
    SKIP = "skip"
    UNCHANGED = "unchanged"
    APPLY = "apply"
    GATE = "gate"
    CONVERGE = "converge"

    @property
    def disruptive(self) -> bool:
        return self in (Choice.GATE, Choice.CONVERGE)


@dataclass(frozen=True)
class StepDecision:
    choice: Choice
    note: str = ""
    """Recorded on the step (``unchanged: ...``, ``skipped by ...``)."""
    look: bool = False
    """What the view does not show could change the decision: read more of the member and decide again
    (with ``gate``/``converge``: its StatefulSets; with ``apply``: the step's objects, inventory and record)."""


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    """What of the run's settings a decision depends on: a narrow view, built once per run from the engine's
    :class:`~.target.EngineSettings` and the revision, so the pure decision and its tests need no whole run."""

    skip_clusters: frozenset[str] = frozenset()
    repair: Mapping[str, frozenset[ObjectRef]] | None = None
    """Per member, objects to write again although their content hash matches."""
    reapply: bool = False
    """The revision was rolled out before: a member may well hold all of it already."""
    revision: int = 0
    """The revision being rolled out (what a ``finalize`` that holds everything records)."""


SKIPPED_NOTE = "skipped by --skip-cluster (logged override)"
NOTHING_TO_ROLL = "unchanged: nothing to roll"
HOLDS_ALL = "unchanged: the member holds all of it"
KEYSPACE_AS_DECLARED = "unchanged: the ring has the declared replication"


def decide(step: Step, record: StepRecord, view: MemberView, settings: StepSettings,
           objects: Sequence[KubeObject]) -> StepDecision:
    """The next thing to do with ``step`` (whose desired objects are ``objects``), see the module doc."""
    if record.outcome in (Outcome.DONE, Outcome.SKIPPED):
        return StepDecision(Choice.SKIP)
    if step.cluster in settings.skip_clusters:
        return StepDecision(Choice.SKIP, SKIPPED_NOTE)
    if step.kind is StepKind.KEYSPACE:  # CQL: the engine asks the ring whether it holds the replication already
        if record.outcome is Outcome.RUNNING:
            return StepDecision(Choice.GATE)  # interrupted, maybe before its repair ended: run it again
        if view.keyspace_matches is None:
            return StepDecision(Choice.GATE, look=True)
        return StepDecision(Choice.UNCHANGED, KEYSPACE_AS_DECLARED) if view.keyspace_matches else \
            StepDecision(Choice.GATE)
    if step.kind.datacenter_op or step.kind is StepKind.SCALE:  # nodetool, CQL and replicas, node by node
        return StepDecision(Choice.GATE)
    repair = (settings.repair or {}).get(step.cluster, frozenset())
    if step.kind is StepKind.RELEASE:  # a chart in one member: unchanged only when it holds every object
        if record.outcome is Outcome.RUNNING or repair:
            return StepDecision(Choice.GATE)
        held = view.holds(objects)
        if held is None:
            return StepDecision(Choice.GATE, look=True)
        return StepDecision(Choice.UNCHANGED, NOTHING_TO_ROLL) if held else StepDecision(Choice.GATE)
    quiet = _rolls_no_pods(step, record, view, repair, objects)
    if not quiet:
        return StepDecision(Choice.CONVERGE if step.kind is StepKind.RACK else Choice.GATE, look=quiet is None)
    if step.kind is StepKind.RACK:
        return StepDecision(Choice.UNCHANGED, NOTHING_TO_ROLL)
    if not settings.reapply or repair:
        return StepDecision(Choice.APPLY)
    held = view.holds(objects) if step.kind is StepKind.PREPARE else view.runs(objects, settings.revision)
    if held is None:
        return StepDecision(Choice.APPLY, look=True)
    return StepDecision(Choice.UNCHANGED, HOLDS_ALL) if held else StepDecision(Choice.APPLY)


def _rolls_no_pods(step: Step, record: StepRecord, view: MemberView, repair: frozenset[ObjectRef],
                   objects: Sequence[KubeObject]) -> bool | None:
    """None: the view does not show the member's StatefulSets."""
    if step.kind is StepKind.PREPARE:
        return True
    if step.kind is StepKind.RACK and record.outcome is Outcome.RUNNING:
        return False  # interrupted after its write: let it converge as before
    if any(o.get("kind") == "StatefulSet" and ObjectRef.of(o) in repair for o in objects):
        return False
    rolls = view.rolls_pods(objects, prunes=step.kind is StepKind.FINALIZE)
    return None if rolls is None else not rolls


def changed_since(baseline: Mapping[str, Sequence[KubeObject]] | None, baseline_revision: int | None,
                  record: RecordedRevision | None, desired: Sequence[KubeObject],
                  objects: Sequence[KubeObject], *, cluster: str) -> list[KubeObject] | None:
    """``prepare`` of a new revision without reading the member: the objects of ``objects`` whose content
    hash differs from the baseline's, or None when that is not provably all there is to write.

    It is enough when the member's record (as this process last wrote or read it) says it fully
    runs the baseline, no object is added or removed (the inventory stays), and no Namespace or CRD
    changes (those are waited on). The caller checks the rest: the revision is new, no repair, and
    the member's fence took our token against the version this process last wrote.
    """
    if baseline is None or baseline_revision is None or record is None:
        return None
    if record.revision != baseline_revision or record.target is not None:
        return None
    before = {ObjectRef.of(o): content_hash(o) for o in baseline.get(cluster, [])}
    if set(before) != {ObjectRef.of(o) for o in desired}:
        return None
    changed = [o for o in objects if before[ObjectRef.of(o)] != content_hash(o)]
    if any(o.get("kind") in ("Namespace", "CustomResourceDefinition") for o in changed):
        return None
    return changed
