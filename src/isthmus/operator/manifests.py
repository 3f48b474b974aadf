"""The operator's own install: Namespace, ServiceAccount, least-privilege RBAC, Deployment, Service. Pure.

``deploy/operator.yaml`` is :func:`operator_yaml` and ``deploy/crds.yaml`` is
:func:`~isthmus.operator.crds.crds_yaml`; tests fail when either committed file drifts.
``isthmus operator install`` applies :func:`install_objects` (CRDs first) through ``isthmus.kube``.
The Helm chart in ``deploy/chart`` is these same objects with values in place of the settings
(:mod:`.chart`), so the chart, ``deploy/`` and ``install`` have one source.

The image is named by digest (:class:`isthmus.image.ImageRef`), never by a tag.

RBAC, least privilege:

- ClusterRole: read the CRDs (kopf discovers resources); read Fleets; read, patch and finalize
  CassandraClusters and write their status; post Events where the objects live.
- Role in the operator's namespace only: read member Secrets (kubeconfigs); the leader Lease and
  the rollout locks (Leases); the rollout's bookkeeping ConfigMaps; Events.

The operator reaches member clusters with the credentials in their Secrets, not with its
ServiceAccount; a Fleet whose control-plane cluster hosts datacenters registers it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

from ..image import RELEASED, ImageRef
from .crds import GROUP, crd_documents
from .settings import DEFAULT_NAMESPACE, LeadershipSettings, MemberSettings, ReconcileSettings

__all__ = ["IMAGE", "NAME", "RESOURCES", "Intervals", "install_objects", "operator_objects", "operator_yaml"]

NAME: Final = "isthmus-operator"
IMAGE: Final = RELEASED
METRICS_PORT: Final = 8080
RESOURCES: Final = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}


@dataclass(frozen=True, kw_only=True)
class Intervals:
    """The operator's intervals in seconds, as its Deployment passes them to ``isthmus operator run``."""

    resync: float = ReconcileSettings().resync_interval
    status_interval: float = ReconcileSettings().progress_requeue
    probe_interval: float = MemberSettings().probe_interval
    lease_duration: float = LeadershipSettings().lease_duration

    def args(self) -> list[str]:
        return ["--resync", _seconds(self.resync), "--status-interval", _seconds(self.status_interval),
                "--probe-interval", _seconds(self.probe_interval), "--lease-duration", _seconds(self.lease_duration)]


def _seconds(value: float) -> str:
    return f"{value:g}"
_LABELS: Final = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "isthmus"}


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


_READ: Final = ["get", "list", "watch"]
_WRITE: Final = ["get", "list", "watch", "create", "update", "patch", "delete"]


def operator_objects(*, namespace: str = DEFAULT_NAMESPACE, image: ImageRef = IMAGE, replicas: int = 2,
                     members_namespace: str | None = None, intervals: Intervals = Intervals(),
                     resources: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The objects in ``namespace``; member Secrets, Lease and bookkeeping live in ``members_namespace``
    (default: the same), where the Role grants them."""
    members_namespace = members_namespace or namespace
    cluster_rules = [
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], _READ),
        _rule([GROUP], ["fleets"], _READ),
        _rule([GROUP], ["cassandraclusters", "chartreleases"], [*_READ, "patch", "update"]),
        _rule([GROUP], ["cassandraclusters/status", "chartreleases/status"], ["get", "patch", "update"]),
        _rule([""], ["events"], ["create", "patch"]),
        _rule(["events.k8s.io"], ["events"], ["create", "patch"]),
    ]
    namespace_rules = [
        _rule([""], ["secrets"], _READ),
        _rule(["coordination.k8s.io"], ["leases"], _WRITE),
        _rule([""], ["configmaps"], _WRITE),
        _rule([""], ["events"], ["create", "patch"]),
    ]
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]
    probe = {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3}
    ready = {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5}
    container = {
        "name": "operator",
        "image": str(image),
        "command": ["isthmus"],
        "args": ["operator", "run", "--namespace", members_namespace, "--metrics-port", str(METRICS_PORT),
                 *intervals.args()],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": probe,
        "readinessProbe": ready,
        "resources": resources if resources is not None else {k: dict(v) for k, v in RESOURCES.items()},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, namespace)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(NAME),
         "rules": cluster_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": _meta(NAME),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(NAME, members_namespace),
         "rules": namespace_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(NAME, members_namespace),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}, "subjects": subject},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, namespace),
         "spec": {
             "replicas": replicas,
             "selector": {"matchLabels": dict(_LABELS)},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
             "template": {
                 "metadata": {"labels": dict(_LABELS)},
                 "spec": {"serviceAccountName": NAME, "containers": [container],
                          "terminationGracePeriodSeconds": 30,
                          "topologySpreadConstraints": [{
                              "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                              "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": dict(_LABELS)}}]},
             },
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": {
            **_meta(f"{NAME}-metrics", namespace),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}},
         "spec": {"selector": dict(_LABELS), "ports": [{"name": "metrics", "port": METRICS_PORT,
                                                        "targetPort": "metrics"}]}},
    ]


HEADER: Final = "# Generated by `isthmus operator manifests` (isthmus.operator.manifests); do not edit by hand.\n"


def operator_yaml(**kwargs: Any) -> str:
    return HEADER + "".join("---\n" + yaml.safe_dump(o, sort_keys=False, width=120) for o in operator_objects(**kwargs))


def install_objects(*, namespace: str = DEFAULT_NAMESPACE, image: ImageRef = IMAGE,
                    replicas: int = 2) -> list[dict[str, Any]]:
    return [*crd_documents(), *operator_objects(namespace=namespace, image=image, replicas=replicas)]
