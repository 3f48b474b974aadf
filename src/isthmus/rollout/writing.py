"""Writing one step's objects to its member, reading as little as can be proven enough.

- ``prepare`` of a new revision writes only what changed since the baseline, without reading the
  member first, when that is provably all there is (:func:`.deciding.changed_since`, plus: the
  revision is new, no repair, and the member's fence took our token against the version this
  process last wrote, so no other holder has written there since). Then the member's record says
  which revision it is getting.
- A quiet ``finalize`` (it rolls no pods) after this run applied every other step of its member
  need not apply everything again: with an inventory that lists exactly the desired objects there
  is nothing to prune. After a ``prepare`` of only what changed, the inventory is the baseline's,
  which lists the same objects.
- Otherwise the objects are applied (:func:`isthmus.kube.apply_objects`: only what differs, then
  prune for ``finalize``), and objects named for repair that the apply left alone (their hash
  matched) are written again, taking conflicting fields over.
"""

from __future__ import annotations

from collections.abc import Callable

from ..kube import (
    ApplyAction,
    ApplyReport,
    ClusterConnection,
    KubeObject,
    ObjectOutcome,
    ObjectRef,
    apply_exactly,
    apply_objects,
    reapply_objects,
    remembered_config_map,
)
from ..kube.inventory import read_inventory
from .deciding import changed_since
from .memberrevisions import member_record_name, record_member_revision
from .memberview import RecordedRevision
from .results import EngineStats
from .steps import Step, StepKind
from .target import EngineSettings, Target

__all__ = ["StepWriter"]


class StepWriter:
    """Writes the steps of one run."""

    def __init__(self, *, target: Target, settings: EngineSettings, revision: int, stats: EngineStats,
                 progress: Callable[[str, str], None]) -> None:
        self.target, self.settings, self.revision, self.stats, self.progress = target, settings, revision, stats, \
            progress
        self.changed_only: set[str] = set()
        """Members whose ``prepare`` applied only what changed since the baseline (nothing added or removed)."""

    async def write(self, step: Step, conn: ClusterConnection, objects: list[KubeObject], *, quiet: bool,
                    continuous: bool, ran_all: bool) -> ApplyReport:
        """Write ``step``; ``continuous``: no other holder wrote to the member since this process did;
        ``ran_all``: this run applied every other step of the member (none of them merely found Done)."""
        app, namespace = self.target.app, self.target.namespace

        async def apply() -> ApplyReport:
            return await apply_objects(conn, objects, app=app, namespace=namespace,
                                       force_conflicts=self.settings.force_conflicts,
                                       prune=self.settings.prune and step.kind is StepKind.FINALIZE,
                                       progress=lambda msg: self.progress(step.cluster, f"{step.id}: {msg}"))

        if step.kind is StepKind.PREPARE:  # the objects first, then the member's record of what it is getting
            report = await self._changed_only(step, conn, objects, continuous) or await apply()
            await record_member_revision(conn, app, namespace, target=self.revision)
        elif quiet and ran_all and await self._nothing_to_prune(step, conn, objects):
            unchanged = tuple(ObjectOutcome(ObjectRef.of(o), ApplyAction.UNCHANGED) for o in objects)
            report = ApplyReport(conn.name, unchanged)
        else:
            report = await apply()
        return await self._repair(conn, objects, report)

    async def _nothing_to_prune(self, step: Step, conn: ClusterConnection, objects: list[KubeObject]) -> bool:
        if step.cluster in self.changed_only:
            return True
        inventory = await read_inventory(conn, self.target.app, self.target.namespace)
        return inventory == {ObjectRef.of(o) for o in objects}

    async def _changed_only(self, step: Step, conn: ClusterConnection, objects: list[KubeObject],
                            continuous: bool) -> ApplyReport | None:
        base, cluster = self.target.baseline, step.cluster
        if base is None or base.revision == self.revision or not continuous or self.settings.repair.get(cluster):
            return None
        known, data = remembered_config_map(conn, member_record_name(self.target.app), self.target.namespace)
        record = None
        if known and data is not None:
            record = RecordedRevision(int(data["revision"]) if data.get("revision") else None,
                                      int(data["target"]) if data.get("target") else None)
        changed = changed_since(base.manifests, base.revision, record, self.target.manifests.for_cluster(cluster),
                                objects, cluster=cluster)
        if changed is None:
            return None
        written = set(await apply_exactly(conn, changed, force=self.settings.force_conflicts))
        self.changed_only.add(cluster)
        self.stats.changed_only += 1
        return ApplyReport(conn.name, tuple(ObjectOutcome(ObjectRef.of(o), ApplyAction.CONFIGURED if ObjectRef.of(o)
                                                          in written else ApplyAction.UNCHANGED) for o in objects))

    async def _repair(self, conn: ClusterConnection, objects: list[KubeObject], report: ApplyReport) -> ApplyReport:
        wanted = self.settings.repair.get(conn.name, frozenset())
        untouched = {o.ref for o in report.outcomes if o.action is ApplyAction.UNCHANGED}
        again = [o for o in objects if ObjectRef.of(o) in wanted and ObjectRef.of(o) in untouched]
        if not again:
            return report
        fixed = set(await reapply_objects(conn, again))
        return ApplyReport(report.cluster, tuple(ObjectOutcome(o.ref, ApplyAction.CONFIGURED) if o.ref in fixed else o
                                                 for o in report.outcomes))
