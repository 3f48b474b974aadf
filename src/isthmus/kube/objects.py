"""Naming and typing raw Kubernetes objects at the boundary.

Objects travel through Isthmus as plain JSON dicts (what ``render`` produces); here they meet
lightkube's resource classes, and here we name them for humans (``StatefulSet ns/name``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from lightkube import codecs, generic_resource
from lightkube.core.exceptions import LoadResourceError

from ..render import CONTENT_HASH_ANNOTATION
from ..render.customkinds import CUSTOM_KINDS

__all__ = [
    "HASH_ANNOTATION",
    "KubeObject",
    "ObjectRef",
    "clean_for_compare",
    "resource_class",
    "to_resource",
]

KubeObject = dict[str, Any]
HASH_ANNOTATION = CONTENT_HASH_ANNOTATION
_SERVER_FIELDS = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


@dataclass(frozen=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: KubeObject) -> ObjectRef:
        meta = obj.get("metadata", {})
        return cls(obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"])

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> ObjectRef:
        return cls(data["apiVersion"], data["kind"], data.get("namespace", ""), data["name"])

    def to_dict(self) -> dict[str, str]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def _register_custom_kinds() -> None:
    """Give lightkube a generic resource class for every CRD-backed kind that render may emit."""
    for k in CUSTOM_KINDS.values():
        make = generic_resource.create_namespaced_resource if k.namespaced else generic_resource.create_global_resource
        make(k.group, k.version, k.kind, k.plural)


_register_custom_kinds()


def resource_class(api_version: str, kind: str) -> Any:
    try:
        return codecs.resource_registry.load(api_version, kind)
    except LoadResourceError as exc:
        raise ValueError(f"unknown resource {api_version}/{kind}: {exc}") from exc


def to_resource(obj: KubeObject) -> Any:
    return codecs.from_dict(obj)


def content_hash(obj: KubeObject) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    value = annotations.get(HASH_ANNOTATION)
    return str(value) if value is not None else None


def clean_for_compare(obj: KubeObject) -> KubeObject:
    """Drop what the server owns (status, managedFields, versions) so two objects can be diffed."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        if not annotations:
            meta.pop("annotations")
    return out
