"""Rollout plans: the ordered, idempotent steps that carry a revision to every member. Pure.

A plan is a list of waves, run one after the other; a wave is a set of lanes run concurrently
(one lane per datacenter); a lane is a list of steps run in order. The shape:

1. ``prepare``: in every member at once, the objects a running pod does not notice until it
   restarts (namespace, service account, config, secrets, services, disruption budgets, and the
   mesh's discovery objects, custom resources applied after everything else). Not disruptive, so
   not gated.
2. The seed datacenter alone (``canary``, else the first of ``order``, else the first in the
   spec), rack by rack: each ``rack`` step applies one StatefulSet and waits until that rack's
   pods are updated and Ready. Disruptive: gated.
3. The other datacenters in waves of ``maxConcurrentDatacenters``, rack by rack.
2a/3a. ``scale``: the first step of a datacenter's lane when the spec's ``size`` differs from what its
   StatefulSets run (the caller reads that and passes it as ``scaling``; :mod:`.scaleplan`, :mod:`.scaling`):
   new nodes bootstrap one at a time, then ``nodetool cleanup`` on the old ones; or the highest ordinals are
   decommissioned one at a time before their StatefulSet is lowered. Gated. The rack steps after it then
   find the replicas in place.
3b. ``keyspace``: one step per keyspace of ``spec.keyspaces``, one after the other, once every datacenter
   runs the revision (so the ring has every datacenter the replication names): create it, or change its
   replication to the declared one, then repair it where replicas were added (:mod:`.keyspacing`). Gated:
   the database gate must pass first. A keyspace already as declared is Done without a write.
3b. Datacenters added to or removed from a running ring (:mod:`.datacenterplan`): ``join/<dc>`` before an
   added datacenter's racks (its nodes start without bootstrap streaming), ``rebuild/<dc>`` after the keyspaces
   (``nodetool rebuild -- <source>`` on each of its nodes, then its rows must be readable there), and
   ``decommission/<dc>`` after the keyspaces for a removed one (replication first, then its nodes one at a
   time, then its objects). Gated; run by :mod:`.datacenters`.
4. ``finalize``: per member, the whole object set again (a no-op write-wise when everything
   before it succeeded) with pruning, then the member records the revision it runs. Gated,
   because pruning may delete a rack that left the spec.

A ChartRelease's plan (:func:`plan_release`) has no ``prepare`` and no racks: one ``release`` step per
cluster (hooks, its objects, wait until all are healthy), in waves of clusters, then ``finalize``.

A rollback plan (``reverse=True``) keeps ``prepare`` first and ``finalize`` last but visits the
datacenter waves, and the racks inside each, in reverse order.
Every step is idempotent: applying objects whose content hash is unchanged writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..kube import KubeObject
from ..render import ApplyPhase, apply_rank
from ..spec import CassandraCluster, ChartRelease
from ..spec.errors import Problem, SpecError
from .datacenterplan import DatacenterChange
from .scaleplan import ScalePlan

__all__ = ["Lane", "RolloutPlan", "Step", "StepKind", "Wave", "check_strategy", "cluster_waves", "datacenter_waves",
           "plan_release", "plan_rollout", "step_objects"]

DC_LABEL = "isthmus.dev/datacenter"
RACK_LABEL = "isthmus.dev/rack"


class StepKind(StrEnum):
    PREPARE = "prepare"
    RACK = "rack"
    RELEASE = "release"
    KEYSPACE = "keyspace"
    JOIN = "join"
    REBUILD = "rebuild"
    DECOMMISSION = "decommission"
    SCALE = "scale"
    FINALIZE = "finalize"

    @property
    def datacenter_op(self) -> bool:
        """A step on a datacenter added to or removed from the ring (:mod:`.datacenters`): no objects."""
        return self in (StepKind.JOIN, StepKind.REBUILD, StepKind.DECOMMISSION)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    cluster: str
    datacenter: str = ""
    rack: str = ""
    keyspace: str = ""
    detail: str = ""
    """What the step brings about, as planned (a keyspace's declared replication, a datacenter's scaling)."""
    source: str = ""
    """``rebuild``: the datacenter the nodes stream from."""
    nodes: tuple[str, ...] = ()
    """``rebuild``/``decommission``: the datacenter's pods, in the order they are worked on."""
    before: tuple[tuple[str, int], ...] = ()
    """A ``scale`` step: (rack, replicas) as the datacenter's StatefulSets ran when it was planned."""

    @property
    def id(self) -> str:
        if self.kind is StepKind.KEYSPACE:
            return f"keyspace/{self.keyspace}"
        if self.kind is StepKind.RACK:
            return f"rack/{self.datacenter}/{self.rack}"
        if self.kind is StepKind.SCALE:
            return f"scale/{self.datacenter}"
        if self.kind is StepKind.RELEASE:
            return f"release/{self.cluster}"
        if self.kind.datacenter_op:
            return f"{self.kind.value}/{self.datacenter}"
        return f"{self.kind.value}/{self.cluster}"

    @property
    def disruptive(self) -> bool:
        return self.kind is not StepKind.PREPARE

    def describe(self) -> str:
        if self.kind is StepKind.PREPARE:
            return f"apply config, secrets, services, budgets and discovery in {self.cluster} (not disruptive)"
        if self.kind is StepKind.RACK:
            return (f"roll rack {self.rack} of datacenter {self.datacenter} in {self.cluster}; "
                    "wait until its pods are updated and Ready")
        if self.kind is StepKind.RELEASE:
            return f"hooks, apply and wait until healthy in {self.cluster}"
        if self.kind is StepKind.KEYSPACE:
            return (f"keyspace {self.keyspace}: {self.detail}; create it, or change its replication to this, "
                    "then repair where replicas are added")
        if self.kind is StepKind.JOIN:
            return (f"datacenter {self.datacenter} joins the running ring in {self.cluster}: its nodes start "
                    "without bootstrap streaming (rebuilt after the keyspaces)")
        if self.kind is StepKind.REBUILD:
            return (f"datacenter {self.datacenter} was added: system keyspaces gain replicas there, then nodetool "
                    f"rebuild --keyspace <each> -- {self.source} on {', '.join(self.nodes)} ({self.detail}); done "
                    "when every spec keyspace's rows are readable there")
        if self.kind is StepKind.DECOMMISSION:
            return (f"datacenter {self.datacenter} was removed: system keyspaces lose it, nodetool decommission on "
                    f"{', '.join(self.nodes)} one at a time, then its objects and volumes in {self.cluster} go")
        if self.kind is StepKind.SCALE:
            return f"scale {self.detail}"
        return f"apply everything in {self.cluster} again, prune what left the spec, record the revision"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind.value, "cluster": self.cluster,
                               "datacenter": self.datacenter, "rack": self.rack, "disruptive": self.disruptive}
        if self.kind is StepKind.KEYSPACE:
            out |= {"keyspace": self.keyspace, "detail": self.detail}
        if self.kind.datacenter_op:
            out |= {"detail": self.detail, "source": self.source, "nodes": list(self.nodes)}
        if self.kind is StepKind.SCALE:
            out |= {"detail": self.detail, "before": dict(self.before)}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Step:
        return cls(StepKind(d["kind"]), str(d["cluster"]), str(d.get("datacenter", "")), str(d.get("rack", "")),
                   str(d.get("keyspace", "")), str(d.get("detail", "")), str(d.get("source", "")),
                   tuple(str(n) for n in d.get("nodes", ())),
                   tuple((str(k), int(v)) for k, v in (d.get("before") or {}).items()))


@dataclass(frozen=True)
class Lane:
    name: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Wave:
    name: str
    lanes: tuple[Lane, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for lane in self.lanes for s in lane.steps)


@dataclass(frozen=True)
class RolloutPlan:
    app: str
    waves: tuple[Wave, ...]
    reverse: bool = False

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(s for w in self.waves for s in w.steps)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def clusters_of(self, steps: Iterable[Step]) -> set[str]:
        return {s.cluster for s in steps}

    def lines(self) -> list[str]:
        out = []
        n = 0
        for w in self.waves:
            out.append(f"wave {w.name}:")
            for lane in w.lanes:
                for s in lane.steps:
                    n += 1
                    gate = "gated" if s.disruptive else "ungated"
                    out.append(f"  {n:>2}. [{lane.name}] {s.id} ({gate}): {s.describe()}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "reverse": self.reverse, "waves": [
            {"name": w.name, "lanes": [{"name": ln.name, "steps": [s.to_dict() for s in ln.steps]} for ln in w.lanes]}
            for w in self.waves]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutPlan:
        return cls(str(d["app"]), tuple(
            Wave(str(w["name"]), tuple(Lane(str(ln["name"]), tuple(Step.from_dict(s) for s in ln["steps"]))
                                        for ln in w["lanes"]))
            for w in d["waves"]), bool(d.get("reverse", False)))


def check_strategy(app: CassandraCluster | ChartRelease) -> None:
    """:class:`SpecError` (a UserError) when the strategy names datacenters (clusters) the spec lacks."""
    if isinstance(app, ChartRelease):
        problems = app.spec.rollout.problems(app.member_clusters())
    else:
        problems = app.spec.rollout.problems([dc.name for dc in app.spec.datacenters])
        problems += [("".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip("."), message)
                     for path, message in [*app.spec.keyspace_problems(), *app.spec.rebuild_problems()]]
    if problems:
        raise SpecError([Problem(message, None, None, path) for path, message in problems])


def datacenter_waves(app: CassandraCluster) -> list[list[str]]:
    """Datacenter names per wave: the seed alone first, then ``maxConcurrentDatacenters`` at a time."""
    check_strategy(app)
    strategy = app.spec.rollout
    names = [dc.name for dc in app.spec.datacenters]
    ordered = list(dict.fromkeys([*strategy.order, *names]))
    if strategy.canary is not None:
        ordered = [strategy.canary, *(n for n in ordered if n != strategy.canary)]
    seed, rest = ordered[0], ordered[1:]
    size = strategy.max_concurrent_datacenters
    return [[seed], *(rest[i:i + size] for i in range(0, len(rest), size))]


def cluster_waves(release: ChartRelease) -> list[list[str]]:
    """Cluster names per wave of a ChartRelease: the canary (else the first of ``order``, else the first member)
    alone, then ``maxConcurrentClusters`` at a time."""
    check_strategy(release)
    strategy = release.spec.rollout
    ordered = list(dict.fromkeys([*strategy.order, *release.member_clusters()]))
    if strategy.canary is not None:
        ordered = [strategy.canary, *(n for n in ordered if n != strategy.canary)]
    seed, rest = ordered[0], ordered[1:]
    size = strategy.max_concurrent_clusters
    return [[seed], *(rest[i:i + size] for i in range(0, len(rest), size))]


def plan_release(release: ChartRelease, *, reverse: bool = False) -> RolloutPlan:
    """A ChartRelease's plan: a ``release`` step per cluster, in waves of clusters (gated), then ``finalize``
    per member (prune, record the revision). A rollback plan visits the waves in reverse order."""
    waves = cluster_waves(release)
    if reverse:
        waves = [list(reversed(w)) for w in reversed(waves)]
    out = [Wave(f"{'seed' if i == 0 and not reverse else i + 1}: {', '.join(names)}",
                tuple(Lane(c, (Step(StepKind.RELEASE, c),)) for c in names)) for i, names in enumerate(waves)]
    members = release.member_clusters()
    out.append(Wave("finalize", tuple(Lane(c, (Step(StepKind.FINALIZE, c),)) for c in members)))
    return RolloutPlan(release.metadata.name, tuple(out), reverse)


def plan_rollout(app: CassandraCluster | ChartRelease, *, reverse: bool = False,
                 scaling: Mapping[str, ScalePlan] | None = None,
                 datacenters: DatacenterChange | None = None) -> RolloutPlan:
    """The plan that carries ``app`` (as rendered) to its members; see the module docstring.

    ``scaling``: datacenter -> its :class:`~.scaleplan.ScalePlan` (:func:`~.scaleplan.scale_plans` of the live
    StatefulSets), for the datacenters whose size changes: each gets a ``scale`` step before its racks.
    ``datacenters``: what the spec adds to and removes from the running ring
    (:func:`.datacenterplan.datacenter_change`)."""
    if isinstance(app, ChartRelease):
        return plan_release(app, reverse=reverse)
    members = app.member_clusters()
    dcs = {dc.name: dc for dc in app.spec.datacenters}
    change = datacenters if datacenters is not None and not reverse else DatacenterChange()
    waves = [Wave("prepare", tuple(Lane(c, (Step(StepKind.PREPARE, c),)) for c in members))]
    dc_waves = datacenter_waves(app)
    if reverse:
        dc_waves = [list(reversed(w)) for w in reversed(dc_waves)]
    for i, names in enumerate(dc_waves):
        lanes = []
        for name in names:
            dc = dcs[name]
            racks = [r.name for r in dc.racks]
            if reverse:
                racks.reverse()
            scale = (scaling or {}).get(name) if name not in change.added else None
            first = (Step(StepKind.SCALE, dc.cluster, name, detail=scale.describe(),
                          before=tuple((r, scale.before.get(r, 0)) for r in scale.racks)),) if scale else ()
            join = (Step(StepKind.JOIN, dc.cluster, name),) if change.added and name in change.added else ()
            lanes.append(Lane(name, (*join, *first, *(Step(StepKind.RACK, dc.cluster, name, r) for r in racks))))
        label = "seed" if i == 0 and not reverse else f"{i + 1}"
        waves.append(Wave(f"{label}: {', '.join(names)}", tuple(lanes)))
    seed = dcs[dc_waves[0][0]] if not reverse else dcs[dc_waves[-1][-1]]
    keyspaces = [Step(StepKind.KEYSPACE, seed.cluster, seed.name, keyspace=k.name,
                      detail=f"{k.replication_text()} (read at {k.consistency.value})") for k in app.spec.keyspaces]
    # Cassandra 5 refuses to drop a datacenter that still has nodes from system_auth: when one is removed, a
    # declared system_auth changes once its nodes are gone (their decommission is forced past it meanwhile).
    later = [s for s in keyspaces if change.removed and s.keyspace == "system_auth"]
    if keyspaces := [s for s in keyspaces if s not in later]:  # after every datacenter: the ring has each one
        waves.append(Wave("keyspaces", (Lane("keyspaces", tuple(keyspaces)),)))
    if change:  # after the keyspaces: the declared replication names an added datacenter, and no longer a removed one
        waves.append(Wave("datacenters", (Lane("datacenters", tuple(_datacenter_steps(app, change))),)))
    if later:
        waves.append(Wave("keyspaces after", (Lane("keyspaces", tuple(later)),)))
    waves.append(Wave("finalize", tuple(Lane(c, (Step(StepKind.FINALIZE, c),)) for c in members)))
    return RolloutPlan(app.metadata.name, tuple(waves), reverse)


def _datacenter_steps(app: CassandraCluster, change: DatacenterChange) -> list[Step]:
    from ..render.naming import CassandraNames

    names = CassandraNames(app.metadata.name, app.namespace)
    out = []
    for dc in app.spec.datacenters:
        if dc.name not in change.added:
            continue
        sizes = dc.rack_sizes()
        pods = tuple(p for r in dc.racks for p in names.pods(dc.name, r.name, sizes[r.name]))
        source = change.sources.get(dc.name, dc.rebuild_from or "")
        why = "rebuildFrom" if dc.rebuild_from else "the nearest healthy datacenter"
        out.append(Step(StepKind.REBUILD, dc.cluster, dc.name, source=source, nodes=pods,
                        detail=f"source {source or '?'}: {why}"))
    out += [Step(StepKind.DECOMMISSION, gone.cluster, gone.name, nodes=gone.pods,
                 detail="removed from the spec") for gone in change.removed]
    return out


def _is_workload(obj: KubeObject) -> bool:
    return apply_rank(obj) is ApplyPhase.WORKLOAD


def step_objects(step: Step, objects: Iterable[KubeObject]) -> list[KubeObject]:
    """The objects ``step`` applies, out of its cluster's objects."""
    if step.kind is StepKind.PREPARE:
        return [o for o in objects if not _is_workload(o)]
    if step.kind is StepKind.RELEASE:
        return list(objects)
    if step.kind in (StepKind.KEYSPACE, StepKind.SCALE) or step.kind.datacenter_op:
        return []  # CQL or nodetool, and replicas set one by one, not objects
    if step.kind is StepKind.RACK:
        return [o for o in objects if o.get("kind") == "StatefulSet"
                and (o["metadata"].get("labels") or {}).get(DC_LABEL) == step.datacenter
                and (o["metadata"].get("labels") or {}).get(RACK_LABEL) == step.rack]
    return list(objects)
