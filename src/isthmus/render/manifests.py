"""The output of rendering: Kubernetes objects per member cluster, as plain JSON-able dicts.

Owns: :class:`Manifests` (validated once on construction), the apply order (:func:`apply_rank`)
and the YAML spelling of a cluster's objects (:meth:`Manifests.to_yaml`, byte-identical for equal
input).
Must not: talk to any cluster; applying, diffing and pruning belong to ``isthmus.kube``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import yaml

from .errors import RenderError

__all__ = ["ApplyPhase", "Manifests", "ObjectKey", "apply_rank", "object_key"]

KubeObject = dict[str, Any]
ObjectKey = tuple[str, str, str, str]  # (apiVersion, kind, namespace or "", name)


class ApplyPhase(IntEnum):
    """Apply in ascending order, delete in descending order.

    Namespaces and CRDs come first because everything else lives in or is typed by them; the
    objects pods mount or run as come before the workloads; Services come before StatefulSets
    because a StatefulSet's ``serviceName`` gives its pods their DNS names (seeds need them);
    a PodDisruptionBudget is last because it guards pods that must exist first.
    """

    FOUNDATION = 0  # Namespace, CustomResourceDefinition
    IDENTITY_AND_CONFIG = 1  # ServiceAccount, ConfigMap, Secret
    NETWORK = 2  # Service
    WORKLOAD = 3  # StatefulSet (and the other pod controllers)
    GUARD = 4  # PodDisruptionBudget
    OTHER = 5  # custom resources and anything not listed: after their CRDs and namespaces


_PHASE_OF_KIND: Mapping[str, ApplyPhase] = {
    "Namespace": ApplyPhase.FOUNDATION,
    "CustomResourceDefinition": ApplyPhase.FOUNDATION,
    "ServiceAccount": ApplyPhase.IDENTITY_AND_CONFIG,
    "ConfigMap": ApplyPhase.IDENTITY_AND_CONFIG,
    "Secret": ApplyPhase.IDENTITY_AND_CONFIG,
    "Service": ApplyPhase.NETWORK,
    "StatefulSet": ApplyPhase.WORKLOAD,
    "Deployment": ApplyPhase.WORKLOAD,
    "DaemonSet": ApplyPhase.WORKLOAD,
    "Job": ApplyPhase.WORKLOAD,
    "PodDisruptionBudget": ApplyPhase.GUARD,
}


def apply_rank(obj: Mapping[str, Any]) -> ApplyPhase:
    """Where ``obj`` goes in the apply order (an ``int``: sort ascending to apply)."""
    return _PHASE_OF_KIND.get(str(obj.get("kind", "")), ApplyPhase.OTHER)


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return (str(obj.get("apiVersion", "")), str(obj.get("kind", "")),
            str(meta.get("namespace", "")), str(meta.get("name", "")))


def _sort_key(obj: Mapping[str, Any]) -> tuple[int, str, str, str, str]:
    api, kind, ns, name = object_key(obj)
    return (int(apply_rank(obj)), kind, ns, name, api)


_TOP_LEVEL_FIRST = ("apiVersion", "kind", "metadata")


def _canonical_order(value: Any, *, top: bool = False) -> Any:
    """Keys sorted at every level, except apiVersion/kind/metadata lead each object."""
    if isinstance(value, Mapping):
        keys = sorted(value)
        if top:
            first = [k for k in _TOP_LEVEL_FIRST if k in value]
            keys = first + [k for k in keys if k not in _TOP_LEVEL_FIRST]
        return {k: _canonical_order(value[k]) for k in keys}
    if isinstance(value, list | tuple):
        return [_canonical_order(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings (embedded config files) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data and not any(c in data for c in "\t\r") and data == data.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _represent_str)


@dataclass(frozen=True)
class Manifests:
    """Kubernetes objects per member cluster: cluster name -> objects in apply order.

    Construction validates every object once (apiVersion, kind and metadata.name present, no two
    objects with one identity in a cluster) and sorts each cluster's objects by
    (:func:`apply_rank`, kind, namespace, name). Treat the dicts as read-only.
    """

    objects: dict[str, tuple[KubeObject, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ordered: dict[str, tuple[KubeObject, ...]] = {}
        for cluster in sorted(self.objects):
            seen: set[ObjectKey] = set()
            for obj in self.objects[cluster]:
                api, kind, _ns, name = key = object_key(obj)
                if not (api and kind and name):
                    raise RenderError(
                        f"cluster {cluster!r}: an object lacks apiVersion, kind or metadata.name")
                if key in seen:
                    raise RenderError(f"cluster {cluster!r}: {kind} {name!r} is rendered twice")
                seen.add(key)
            ordered[cluster] = tuple(sorted(self.objects[cluster], key=_sort_key))
        object.__setattr__(self, "objects", ordered)

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, KubeObject]]) -> Manifests:
        """From (cluster, object) pairs in any order."""
        grouped: dict[str, list[KubeObject]] = {}
        for cluster, obj in pairs:
            grouped.setdefault(cluster, []).append(obj)
        return cls({c: tuple(objs) for c, objs in grouped.items()})

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(self.objects)

    def for_cluster(self, name: str) -> tuple[KubeObject, ...]:
        """The objects for cluster ``name`` in apply order; empty when nothing lands there."""
        return self.objects.get(name, ())

    def merge(self, other: Manifests) -> Manifests:
        """Both sets together (two apps in one fleet); an object rendered by both is an error."""
        pairs = [(c, o) for m in (self, other) for c, objs in m.objects.items() for o in objs]
        return Manifests.build(pairs)

    def to_yaml(self, cluster: str) -> str:
        """Multi-document YAML for ``cluster`` in apply order, keys in canonical order."""
        docs = [_canonical_order(obj, top=True) for obj in self.for_cluster(cluster)]
        return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                             explicit_start=True, allow_unicode=True, width=1_000_000)
