"""``ChartRelease``: any Helm chart released as one app across the Fleet's clusters. Pure.

A ChartRelease names a chart (a local folder or ``.tgz``), the release's name (``metadata.name``)
and namespace, its values, per-region and per-cluster value overrides, which of the Fleet's
clusters get it (``clusters``: a list; ``clusterSelector``: labels of the Fleet's clusters; neither:
all of them), and how a change reaches them (:class:`ClusterRolloutStrategy`: waves of clusters).

Values merge as Helm merges them (:func:`merge_values`): mappings key by key, anything else
replaced; a ``null`` is passed on, and Helm removes that key from the chart's defaults. The order:
``values``, then every matching region override, then every matching cluster override (later wins).

Placement by label or "all" depends on the Fleet, so :func:`bind_release` resolves it once, when
the spec is loaded, into an explicit cluster list; :meth:`ChartRelease.member_clusters` of an
unbound release says so instead of guessing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from ._base import API_VERSION, SpecModel
from .apps import App, register_kind
from .cassandra import DriftPolicy
from .errors import Problem, SpecError
from .fleet import Fleet

__all__ = [
    "CLUSTER_LABEL",
    "REGION_LABEL",
    "ChartRelease",
    "ChartReleaseSpec",
    "ClusterRolloutStrategy",
    "ClusterSelector",
    "ValuesOverride",
    "bind_release",
    "cluster_labels",
    "merge_values",
]

REGION_LABEL = "isthmus.dev/region"
CLUSTER_LABEL = "isthmus.dev/cluster"

_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class ClusterSelector(SpecModel):
    """Clusters whose labels (the Fleet's ``labels`` plus ``isthmus.dev/region`` and ``isthmus.dev/cluster``)
    include every one of ``matchLabels``."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class ValuesOverride(SpecModel):
    """Values merged over ``spec.values`` for one region or one cluster."""

    region: str | None = None
    cluster: str | None = None
    values: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> ValuesOverride:
        if (self.region is None) == (self.cluster is None):
            raise ValueError("an override names exactly one of 'region' or 'cluster'")
        return self

    def applies_to(self, cluster: str, region: str) -> bool:
        return self.cluster == cluster if self.cluster is not None else self.region == region


class ClusterRolloutStrategy(SpecModel):
    """How a change reaches the clusters: waves of clusters, gates between them, what to do on failure.

    The ``canary`` cluster (else the first of ``order``, else the first member) changes alone; the
    others follow in waves of ``maxConcurrentClusters``. In each cluster the release's objects are
    applied (its pre-install/upgrade hook Jobs first, its post hooks last) and waited on until every
    one is healthy; ``failureBudget`` failed pods stop the rollout early.
    """

    max_concurrent_clusters: int = Field(default=1, ge=1)
    canary: str | None = None
    order: list[str] = Field(default_factory=list)
    on_failure: Literal["pause", "rollback"] = "pause"
    drift: DriftPolicy = DriftPolicy.CORRECT
    soak_seconds: float = Field(default=0.0, ge=0, le=86_400,
                                description="Seconds everything must stay healthy after a wave before the next")
    progress_deadline_seconds: float = Field(default=600.0, gt=0, le=86_400,
                                             description="Seconds one cluster may take to become healthy")
    failure_budget: int = Field(default=0, ge=0, le=1000, description="Failed pods tolerated before the rollout "
                                                                      "stops early")

    @model_validator(mode="after")
    def _order_unique(self) -> ClusterRolloutStrategy:
        dupes = sorted({n for n in self.order if self.order.count(n) > 1})
        if dupes:
            raise ValueError(f"cluster {dupes[0]!r} appears twice in rollout.order")
        return self

    def problems(self, clusters: Sequence[str]) -> list[tuple[str, str]]:
        """(field path, message) for every cluster this strategy names that ``clusters`` lacks."""
        known = ", ".join(clusters)
        out: list[tuple[str, str]] = []
        if self.canary is not None and self.canary not in clusters:
            out.append(("spec.rollout.canary", f"canary cluster {self.canary!r} is not a member of the release "
                                               f"(members: {known})"))
        for i, name in enumerate(self.order):
            if name not in clusters:
                out.append((f"spec.rollout.order[{i}]",
                            f"rollout order names cluster {name!r}, which is not a member (members: {known})"))
        return out


class ChartReleaseSpec(SpecModel):
    fleet: str | None = Field(default=None, description="metadata.name of the Fleet; optional with one Fleet")
    chart: str = Field(min_length=1, description="A chart folder or .tgz; relative paths are relative to this "
                                                 "spec file")
    namespace: str = Field(default="default", pattern=_NAME, max_length=63)
    values: dict[str, Any] = Field(default_factory=dict)
    overrides: list[ValuesOverride] = Field(default_factory=list)
    clusters: list[str] | None = Field(default=None, description="The member clusters; default: every cluster "
                                                                 "of the Fleet (or those clusterSelector picks)")
    cluster_selector: ClusterSelector | None = None
    rollout: ClusterRolloutStrategy = Field(default_factory=ClusterRolloutStrategy)

    @model_validator(mode="after")
    def _placement(self) -> ChartReleaseSpec:
        if self.clusters is not None and self.cluster_selector is not None:
            raise ValueError("give 'clusters' or 'clusterSelector', not both")
        if self.clusters is not None:
            if not self.clusters:
                raise ValueError("'clusters' is empty; list at least one cluster or leave it out for all")
            dupes = sorted({c for c in self.clusters if self.clusters.count(c) > 1})
            if dupes:
                raise ValueError(f"cluster {dupes[0]!r} appears twice in 'clusters'")
        return self


@register_kind("ChartRelease")
class ChartRelease(App):
    """One Helm chart released into several Fleet clusters as one app (one revision history, one lock)."""

    api_version: Literal["isthmus.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ChartRelease"] = "ChartRelease"
    spec: ChartReleaseSpec

    def member_clusters(self) -> list[str]:
        if self.spec.clusters is None:
            raise SpecError([Problem(f"ChartRelease {self.metadata.name!r} is placed by the Fleet (all clusters or "
                                     "clusterSelector): bind it to its Fleet first (bind_release)", None, None,
                                     "spec.clusters")])
        return list(self.spec.clusters)

    def fleet_name(self) -> str | None:
        return self.spec.fleet

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    def values_for(self, cluster: str, region: str) -> dict[str, Any]:
        """The values of this release in ``cluster`` (of ``region``): see the module docstring for the order."""
        merged = copy.deepcopy(self.spec.values)
        for kind in ("region", "cluster"):
            for o in self.spec.overrides:
                if (o.region is not None) == (kind == "region") and o.applies_to(cluster, region):
                    merged = merge_values(merged, o.values)
        return merged


def merge_values(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` as Helm merges values files."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def cluster_labels(fleet: Fleet, name: str) -> dict[str, str]:
    cluster = next(c for c in fleet.spec.clusters if c.name == name)
    return {**cluster.labels, REGION_LABEL: cluster.region, CLUSTER_LABEL: cluster.name}


def bind_release(release: ChartRelease, fleet: Fleet, *, chart: str | None = None) -> ChartRelease:
    """``release`` with its placement resolved against ``fleet`` (an explicit cluster list) and, if given, its
    chart path replaced (the CLI makes it absolute); :class:`SpecError` for a cluster, canary, order entry or
    override the Fleet or the release does not have."""
    names = [c.name for c in fleet.spec.clusters]
    problems: list[Problem] = []
    spec = release.spec
    if spec.clusters is not None:
        for i, c in enumerate(spec.clusters):
            if c not in names:
                problems.append(Problem(f"cluster {c!r} is not in Fleet {fleet.metadata.name!r} (clusters: "
                                        f"{', '.join(names)})", None, None, f"spec.clusters[{i}]"))
        members = [c for c in spec.clusters if c in names]
    elif spec.cluster_selector is not None:
        wanted = spec.cluster_selector.match_labels
        members = [n for n in names if wanted.items() <= cluster_labels(fleet, n).items()]
        if not members:
            problems.append(Problem(f"clusterSelector {wanted} matches no cluster of Fleet {fleet.metadata.name!r}",
                                    None, None, "spec.clusterSelector"))
    else:
        members = names
    regions = {c.region for c in fleet.spec.clusters}
    for i, o in enumerate(spec.overrides):
        if o.cluster is not None and o.cluster not in names:
            problems.append(Problem(f"override for cluster {o.cluster!r}, which Fleet {fleet.metadata.name!r} does "
                                    f"not have (clusters: {', '.join(names)})", None, None,
                                    f"spec.overrides[{i}].cluster"))
        elif o.cluster is not None and o.cluster not in members:
            problems.append(Problem(f"override for cluster {o.cluster!r}, which is not a member of the release "
                                    f"(members: {', '.join(members)})", None, None, f"spec.overrides[{i}].cluster"))
        if o.region is not None and o.region not in regions:
            problems.append(Problem(f"override for region {o.region!r}, which Fleet {fleet.metadata.name!r} does "
                                    f"not have (regions: {', '.join(sorted(regions))})", None, None,
                                    f"spec.overrides[{i}].region"))
    problems += [Problem(m, None, None, p) for p, m in spec.rollout.problems(members)]
    if spec.fleet is not None and spec.fleet != fleet.metadata.name:
        problems.append(Problem(f"spec.fleet is {spec.fleet!r} but the Fleet given is {fleet.metadata.name!r}",
                                None, None, "spec.fleet"))
    if problems:
        raise SpecError(problems)
    update: dict[str, Any] = {"clusters": members, "cluster_selector": None}
    if chart is not None:
        update["chart"] = chart
    return release.model_copy(update={"spec": spec.model_copy(update=update)})
