"""A ChartRelease's manifests: what ``helm template`` rendered per cluster, made Isthmus's. Pure.

Helm renders (``isthmus.helm`` runs it, per cluster, with that cluster's version and API versions);
this module only post-processes its output:

* **Parse** the multi-document YAML (``kind: List`` flattened), refusing anything that is not an object.
* **Hooks.** Objects annotated ``helm.sh/hook`` are not release objects. Supported: ``Job`` hooks on
  ``pre-install``, ``pre-upgrade``, ``post-install`` and ``post-upgrade`` (run in ``helm.sh/hook-weight``
  order, then by name, and waited on, by the rollout); any other hook (``pre-delete``, ``pre-rollback``,
  ``test``, a hook that is not a Job, ...) is refused with one line naming it. Hooks are kept in the
  manifests under the pseudo-cluster :func:`hooks_key` of their cluster, so revisions keep them and
  nothing that applies, diffs or prunes a cluster's objects ever sees them.
* **Random values.** Charts generate passwords and keys in their templates (``randAlphaNum``,
  ``genPrivateKey``) and keep them on upgrade with ``lookup``, which ``helm template`` cannot do. So the
  chart is rendered twice with the same input: a leaf that differs between the two renders is random
  (:func:`random_paths`), and where the member already holds the object, its live value is kept
  (:func:`keep_live`), as ``lookup`` would. A render is then stable, and an apply with nothing to
  change writes nothing.
* **Labels and hash.** Every object gets ``isthmus.dev/app`` and ``app.kubernetes.io/managed-by: isthmus``
  (Helm's ``managed-by: Helm`` is replaced: these objects are Isthmus's, and prune and delete only touch
  objects labelled so); pod templates get ``isthmus.dev/app`` so the gates see the pods (selectors and
  volume claim templates are never touched); namespaced objects without a namespace get the release's;
  then the content hash (:func:`~.hashing.stamp`). The release namespace itself is rendered as a
  Namespace object shared with other apps (only the manager label), as for Cassandra.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..spec.charts import ChartRelease
from .errors import RenderError
from .hashing import stamp
from .manifests import Manifests, ObjectKey, object_key

__all__ = [
    "HOOKS_PREFIX",
    "HOOK_ANNOTATION",
    "SECRET_PLACEHOLDER",
    "SUPPORTED_HOOKS",
    "Hook",
    "chart_manifests",
    "hook_order",
    "hooks_key",
    "keep_live",
    "mask_secrets",
    "masked_secret",
    "parse_rendered",
    "random_paths",
    "settle_annotations",
]

KubeObject = dict[str, Any]
Path = tuple[str | int, ...]

HOOK_ANNOTATION = "helm.sh/hook"
WEIGHT_ANNOTATION = "helm.sh/hook-weight"
DELETE_POLICY_ANNOTATION = "helm.sh/hook-delete-policy"
SUPPORTED_HOOKS = frozenset({"pre-install", "pre-upgrade", "post-install", "post-upgrade"})
HOOKS_PREFIX = "hooks:"
APP_LABEL = "isthmus.dev/app"
MANAGED_BY = "app.kubernetes.io/managed-by"

_POD_TEMPLATE_OWNERS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"})
_CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "PersistentVolume", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
    "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass", "CSIDriver", "CSINode", "VolumeAttachment",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "APIService", "FlowSchema", "PriorityLevelConfiguration",
})


def hooks_key(cluster: str) -> str:
    """Where a cluster's hooks live in :class:`Manifests` (no cluster name holds a colon)."""
    return f"{HOOKS_PREFIX}{cluster}"


@dataclass(frozen=True)
class Hook:
    """One hook Job of a cluster, as the rollout runs it."""

    phases: frozenset[str]
    weight: int
    delete_policies: frozenset[str]
    obj: KubeObject

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def pre(self) -> bool:
        return bool(self.phases & {"pre-install", "pre-upgrade"})

    def runs_on(self, *, upgrade: bool) -> frozenset[str]:
        return self.phases & ({"pre-upgrade", "post-upgrade"} if upgrade else {"pre-install", "post-install"})


def parse_rendered(text: str, *, chart: str, cluster: str) -> list[KubeObject]:
    """The objects of ``helm template``'s output (empty documents skipped, ``kind: List`` flattened)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RenderError(f"chart {chart}, cluster {cluster}: helm rendered YAML that does not parse: {exc}") from exc
    out: list[KubeObject] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise RenderError(f"chart {chart}, cluster {cluster}: a rendered document is not a Kubernetes object "
                              f"(no apiVersion/kind): {str(doc)[:120]}")
        if str(doc["kind"]).endswith("List") and isinstance(doc.get("items"), list):
            out += [dict(i) for i in doc["items"] if isinstance(i, dict)]
        else:
            out.append(doc)
    for obj in out:
        if not (obj.get("metadata") or {}).get("name"):
            raise RenderError(f"chart {chart}, cluster {cluster}: a rendered {obj.get('kind')} has no metadata.name")
    return out


def _leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))
    else:
        yield path, value


def random_paths(first: Sequence[KubeObject], second: Sequence[KubeObject]) -> dict[ObjectKey, frozenset[Path]]:
    """Per object, the leaves that differ between two renders of the same input: values the chart draws at random."""
    again = {object_key(o): dict(_leaves(o)) for o in second}
    out: dict[ObjectKey, frozenset[Path]] = {}
    for obj in first:
        other = again.get(object_key(obj))
        if other is None:
            continue
        mine = dict(_leaves(obj))
        differ = frozenset(p for p in mine.keys() | other.keys() if mine.get(p) != other.get(p))
        if differ:
            out[object_key(obj)] = differ
    return out


def _get(value: Any, path: Path) -> tuple[bool, Any]:
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return False, None
        elif not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _set(value: Any, path: Path, leaf: Any) -> None:
    for part in path[:-1]:
        value = value[part]
    value[path[-1]] = leaf


def keep_live(obj: KubeObject, paths: frozenset[Path], live: KubeObject | None) -> KubeObject:
    """``obj`` with the live object's values at ``paths`` (the random ones), where both have them."""
    if live is None or not paths:
        return obj
    out = copy.deepcopy(obj)
    for path in sorted(paths, key=str):
        found, leaf = _get(live, path)
        mine, _ = _get(out, path)
        if found and mine:
            _set(out, path, copy.deepcopy(leaf))
    return out


def settle_annotations(obj: KubeObject, paths: frozenset[Path], value: str) -> KubeObject:
    """``obj`` with every random leaf under an ``annotations`` map set to ``value``.

    For objects no member holds yet to keep values from (a hook Job, recreated on every run): a
    ``checksum/...`` annotation of a randomly drawn Secret only makes its pods new, so a stable stand-in
    (a digest of the rest of the release) serves, and a render of the same input stays the same.
    """
    mine = [p for p in paths if "annotations" in p[:-1]]
    if not mine:
        return obj
    out = copy.deepcopy(obj)
    for path in mine:
        found, _ = _get(out, path)
        if found:
            _set(out, path, value)
    return out


def _hook_of(obj: KubeObject, *, chart: str, cluster: str) -> Hook | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(HOOK_ANNOTATION)
    if value is None:
        return None
    phases = frozenset(p.strip() for p in str(value).split(",") if p.strip())
    what = f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}"
    unsupported = sorted(phases - SUPPORTED_HOOKS)
    if unsupported or obj.get("kind") != "Job":
        why = f"hook {', '.join(unsupported)} is not supported" if unsupported else "only Job hooks are supported"
        raise RenderError(f"chart {chart}, cluster {cluster}: {what} is a Helm hook ({HOOK_ANNOTATION}: {value}); "
                          f"{why} (Isthmus runs Job hooks on {', '.join(sorted(SUPPORTED_HOOKS))}); disable it "
                          "in the chart's values")
    try:
        weight = int(str(annotations.get(WEIGHT_ANNOTATION, "0")).strip() or 0)
    except ValueError as exc:
        raise RenderError(f"chart {chart}, cluster {cluster}: {what}: {WEIGHT_ANNOTATION} is not a number") from exc
    policies = frozenset(p.strip() for p in str(annotations.get(DELETE_POLICY_ANNOTATION,
                                                                "before-hook-creation")).split(",") if p.strip())
    return Hook(phases, weight, policies, obj)


def hook_order(objects: Sequence[KubeObject]) -> list[Hook]:
    """The hooks among ``objects`` (already validated by :func:`chart_manifests`), weight then name."""
    hooks = [h for o in objects if (h := _hook_of(o, chart="", cluster="")) is not None]
    return sorted(hooks, key=lambda h: (h.weight, h.name))


def _label(obj: KubeObject, app: str) -> KubeObject:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), APP_LABEL: app, MANAGED_BY: "isthmus"}
    kind = out.get("kind")
    spec = out.get("spec") if isinstance(out.get("spec"), dict) else None
    template = None
    if kind in _POD_TEMPLATE_OWNERS and spec is not None:
        template = spec.get("template")
    elif kind == "CronJob" and spec is not None:
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if isinstance(template, dict):
        tmeta = template.setdefault("metadata", {}) or {}
        template["metadata"] = tmeta
        tmeta["labels"] = {**(tmeta.get("labels") or {}), APP_LABEL: app}
    return out


def _namespaced(obj: KubeObject, namespace: str) -> KubeObject:
    meta = obj["metadata"]
    if obj.get("kind") in _CLUSTER_SCOPED:
        return obj
    if not meta.get("namespace"):
        meta["namespace"] = namespace
    return obj


def _release_namespace(namespace: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "isthmus"}}}


def chart_manifests(release: ChartRelease, rendered: Mapping[str, Sequence[KubeObject]]) -> Manifests:
    """The release's manifests from each member's rendered objects (see the module docstring)."""
    app, namespace, chart = release.metadata.name, release.namespace, release.spec.chart
    pairs: list[tuple[str, KubeObject]] = []
    for cluster in release.member_clusters():
        if cluster not in rendered:
            raise RenderError(f"chart {chart}: nothing was rendered for cluster {cluster}")
        pairs.append((cluster, stamp(_release_namespace(namespace))))
        for obj in rendered[cluster]:
            if obj.get("kind") == "Namespace" and obj["metadata"]["name"] == namespace:
                continue  # the release namespace is rendered once, shared
            hook = _hook_of(obj, chart=chart, cluster=cluster)
            ready = stamp(_namespaced(_label(obj, app), namespace))
            pairs.append((hooks_key(cluster) if hook is not None else cluster, ready))
    return Manifests.build(pairs)


SECRET_PLACEHOLDER = "<isthmus: kept in the cluster, not in revisions>"


def mask_secrets(manifests: Manifests) -> Manifests:
    """``manifests`` with every Secret value replaced by :data:`SECRET_PLACEHOLDER`: what revisions store.

    The content-hash annotation stays (it was computed on the real object), so comparing a stored revision with
    a member still tells changed from unchanged; the values themselves are read back from the member when a
    stored revision is rolled out again (``isthmus.rollout`` does that).
    """

    def mask(obj: KubeObject) -> KubeObject:
        if obj.get("kind") != "Secret" or not (obj.get("data") or obj.get("stringData")):
            return obj
        out = copy.deepcopy(obj)
        for key in ("data", "stringData"):
            if isinstance(out.get(key), dict):
                out[key] = dict.fromkeys(out[key], SECRET_PLACEHOLDER)
        return out

    return Manifests({c: tuple(mask(o) for o in manifests.for_cluster(c)) for c in manifests.clusters})


def masked_secret(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Secret" and any(
        v == SECRET_PLACEHOLDER for key in ("data", "stringData") for v in (obj.get(key) or {}).values())
