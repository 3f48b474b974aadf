"""The ``CassandraCluster`` kind: one Cassandra cluster whose datacenters live in Fleet clusters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from ..image import ImageRef
from ._base import API_VERSION, SpecModel
from .apps import App, AppDatacenter, register_kind
from .fleet import CLUSTER_NAME_PATTERN
from .keyspaces import Keyspace, keyspace_problems
from .policy import PolicyDocument

__all__ = [
    "ACCESS_RULE_EXTRA_KEYS",
    "AccessEnforcement",
    "AccessSpec",
    "CassandraCluster",
    "CassandraSpec",
    "Datacenter",
    "Rack",
    "Resources",
    "RolloutStrategy",
    "Storage",
]

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class Rack(SpecModel):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=30)]
    zone: str = Field(description="The Fleet cluster zone this rack's pods are pinned to")


class Datacenter(AppDatacenter):
    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)]
    size: Annotated[int, Field(ge=1, le=1000, description="Cassandra nodes in this datacenter")]
    racks: Annotated[list[Rack], Field(min_length=1)]
    rebuild_from: str | None = Field(
        default=None, description="When this datacenter is added to a running ring: the datacenter its nodes "
                                  "stream their data from (nodetool rebuild); default: the nearest healthy one")

    @model_validator(mode="after")
    def _racks(self) -> Datacenter:
        names = [r.name for r in self.racks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rack {dupes[0]!r} appears twice in datacenter {self.name!r}")
        if self.size < len(self.racks):
            raise ValueError(
                f"datacenter {self.name!r} has {len(self.racks)} racks but only {self.size} nodes; "
                "every rack needs at least one node"
            )
        return self

    def rack_sizes(self) -> dict[str, int]:
        """Nodes per rack: spread evenly, the first racks take the remainder."""
        base, extra = divmod(self.size, len(self.racks))
        return {r.name: base + (1 if i < extra else 0) for i, r in enumerate(self.racks)}


class Resources(SpecModel):
    cpu: Annotated[str, Field(pattern=_QUANTITY)] = "1"
    memory: Annotated[str, Field(pattern=_QUANTITY)] = "4Gi"
    heap: Annotated[str, Field(pattern=r"^[0-9]+[MG]$")] | None = Field(
        default=None, description="JVM heap (e.g. 2G); defaults to a quarter of memory"
    )


class Storage(SpecModel):
    size: Annotated[str, Field(pattern=_QUANTITY)] = "10Gi"
    storage_class_name: str | None = None


class AccessEnforcement(StrEnum):
    """What enforces ``spec.access.rules`` at the CQL layer (the two never share the client port)."""

    GUARD = "guard"  # the cqlguard sidecar in every Cassandra pod
    LEGACY_CILIUM_L7 = "legacyCiliumL7"  # deprecated: Cilium's proxylib Cassandra parser, no sidecar


#: Keys of an access rule that Isthmus reads and the guard's policy document does not know.
ACCESS_RULE_EXTRA_KEYS: Final = ("clientLabels",)


def _policy_problem(exc: ValidationError) -> str:
    """cqlguard's validation errors of one rule, located inside the rule (``allow[0].actions: ...``)."""
    errors = exc.errors(include_url=False)
    locs = [tuple(e["loc"]) for e in errors]
    out = []
    for err, full in zip(errors, locs, strict=True):
        if any(len(other) > len(full) and other[:len(full)] == full for other in locs):
            continue  # a container's complaint about the item that failed inside it
        loc = full[2:]  # ("rules", 0, ...): the rule is validated alone
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {message}" if where else message)
    return "; ".join(out)


def _access_rule(rule: dict[str, Any]) -> dict[str, Any]:
    labels = rule.get("clientLabels")
    if "clientLabels" in rule and not (isinstance(labels, dict) and labels and all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items())):
        raise ValueError("clientLabels must be a non-empty map of pod label names to string values")
    try:
        PolicyDocument.model_validate({"rules": [AccessSpec.policy_rule(rule)]})
    except ValidationError as exc:
        raise ValueError(_policy_problem(exc)) from exc
    return rule


def _image_by_digest(text: str) -> str:
    return str(ImageRef.parse(text))


class AccessSpec(SpecModel):
    """Who may run which CQL against which tables: cqlguard policy rules, enforced in the app's pods."""

    # Each rule is a cqlguard policy rule (name, identities, allow; isthmus.cqlguard.policy) plus an
    # optional clientLabels map (pods allowed to reach the CQL port at L3/L4; render.netpolicy). Rules
    # are validated when the spec is loaded, by cqlguard's own models, whether or not enabled is set.
    enabled: bool = Field(default=False, description="Put the CQL guard in front of every Cassandra node")
    rules: list[Annotated[dict[str, Any], AfterValidator(_access_rule)]] = Field(
        default_factory=list, description="cqlguard policy rules, each with optional clientLabels")
    enforcement: AccessEnforcement = Field(
        default=AccessEnforcement.GUARD,
        description="guard (the cqlguard sidecar) or legacyCiliumL7 (deprecated: Cilium's Cassandra parser)")
    guard_image: Annotated[str, AfterValidator(_image_by_digest)] | None = Field(
        default=None, description="cqlguard sidecar image by digest (REPOSITORY@sha256:<digest>); defaults to "
                                  "this release's Isthmus image")

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [r["name"] for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two access rules are named {dupes[0]!r}; rule names must be unique")
        return rules

    @staticmethod
    def policy_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
        """``rule`` as the guard reads it: without the keys only Isthmus uses."""
        return {k: v for k, v in rule.items() if k not in ACCESS_RULE_EXTRA_KEYS}

    def policy_document(self) -> dict[str, Any]:
        """The guard's policy document (``policy.yaml``) for these rules."""
        return {"rules": [self.policy_rule(r) for r in self.rules]}


class DriftPolicy(StrEnum):
    CORRECT = "correct"
    REPORT = "report"


class RolloutStrategy(SpecModel):
    """How a change reaches the datacenters: order, waves, gates and what to do on failure.

    The seed datacenter (``canary``, else the first of ``order``, else the first in the spec)
    changes alone; the others follow in waves of ``maxConcurrentDatacenters``, rack by rack.
    ``canary`` and ``order`` name datacenters of the same spec; :meth:`problems` checks that,
    since a strategy alone does not know its datacenters.
    """

    max_concurrent_datacenters: Annotated[int, Field(ge=1)] = 1
    canary: str | None = None
    order: list[str] = Field(default_factory=list)
    on_failure: Literal["pause", "rollback"] = "pause"
    drift: DriftPolicy = DriftPolicy.CORRECT
    soak_seconds: Annotated[float, Field(ge=0, le=86_400)] = Field(
        default=0.0, description="Seconds everything must stay healthy after a disruptive step before the next")
    progress_deadline_seconds: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=600.0, description="Seconds one step may take to converge (or its gates to pass) before it fails")
    failure_budget: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0, description="Failed pods (unschedulable, crash-looping, image errors) tolerated before the "
                               "rollout stops early instead of waiting for the progress deadline")

    @model_validator(mode="after")
    def _order_unique(self) -> RolloutStrategy:
        dupes = sorted({n for n in self.order if self.order.count(n) > 1})
        if dupes:
            raise ValueError(f"datacenter {dupes[0]!r} appears twice in rollout.order")
        return self

    def problems(self, datacenters: Sequence[str]) -> list[tuple[str, str]]:
        """(field path, message) for every datacenter this strategy names that ``datacenters`` lacks."""
        known = ", ".join(datacenters)
        out: list[tuple[str, str]] = []
        if self.canary is not None and self.canary not in datacenters:
            out.append(("spec.rollout.canary",
                        f"canary datacenter {self.canary!r} does not exist (datacenters: {known})"))
        for i, name in enumerate(self.order):
            if name not in datacenters:
                out.append((f"spec.rollout.order[{i}]",
                            f"rollout order names datacenter {name!r}, which does not exist (datacenters: {known})"))
        return out


class CassandraSpec(SpecModel):
    fleet: str | None = Field(default=None, description="metadata.name of the Fleet; optional with one Fleet")
    version: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = "5.0.6"
    image: str | None = Field(default=None, description="Container image; defaults to cassandra:<version>")
    datacenters: Annotated[list[Datacenter], Field(min_length=1)]
    resources: Resources = Field(default_factory=Resources)
    storage: Storage = Field(default_factory=Storage)
    num_tokens: Annotated[int, Field(ge=1, le=256)] = 16
    access: AccessSpec = Field(default_factory=AccessSpec)
    rollout: RolloutStrategy = Field(default_factory=RolloutStrategy)
    keyspaces: list[Keyspace] = Field(
        default_factory=list, description="Replication Isthmus keeps for these keyspaces (user keyspaces and "
                                          "system_auth, system_distributed, system_traces); others are left alone")

    def keyspace_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field path, message) for replication the datacenters cannot hold (see :mod:`.keyspaces`)."""
        sizes = {dc.name: dc.size for dc in self.datacenters}
        indexes = {dc.name: i for i, dc in enumerate(self.datacenters)}
        return keyspace_problems(self.keyspaces, sizes, indexes)

    def rebuild_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(field path, message) for a ``rebuildFrom`` that names no other datacenter of the spec."""
        names = [dc.name for dc in self.datacenters]
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i, dc in enumerate(self.datacenters):
            source = dc.rebuild_from
            if source is None:
                continue
            if source == dc.name or source not in names:
                why = "itself" if source == dc.name else "a datacenter the spec does not have"
                others = ", ".join(n for n in names if n != dc.name) or "none"
                out.append((("spec", "datacenters", i, "rebuildFrom"),
                            f"datacenter {dc.name!r} rebuilds from {source!r}, {why}; name another datacenter of "
                            f"the spec ({others}) or leave rebuildFrom out"))
        return out

    @model_validator(mode="after")
    def _unique_datacenters(self) -> CassandraSpec:
        names = [dc.name for dc in self.datacenters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two datacenters are named {dupes[0]!r}; datacenter names must be unique")
        return self

    @field_validator("datacenters")
    @classmethod
    def _cluster_names(cls, dcs: list[Datacenter]) -> list[Datacenter]:
        for dc in dcs:
            if not CLUSTER_NAME_PATTERN.match(dc.cluster):
                raise ValueError(f"datacenter {dc.name!r} names cluster {dc.cluster!r}, not a valid name")
        return dcs


@register_kind("CassandraCluster")
class CassandraCluster(App):
    """One Apache Cassandra cluster spanning several Fleet clusters, a datacenter in each."""

    api_version: Literal["isthmus.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["CassandraCluster"] = "CassandraCluster"
    spec: CassandraSpec

    def member_clusters(self) -> list[str]:
        return list(dict.fromkeys(dc.cluster for dc in self.spec.datacenters))

    def fleet_name(self) -> str | None:
        return self.spec.fleet

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"
