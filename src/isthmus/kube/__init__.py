"""The one gateway to the API servers: connections, server-side apply, diff, prune, health.

Owns: every call to a Kubernetes API server, with its timeout, request budget and circuit
breaker; translating client-library errors into :mod:`isthmus.kube.errors`.
Must not: decide what the objects should be (that is ``render``) or in what order clusters
change (that is ``rollout``).
"""

from .applying import (
    Action,
    ApplyReport,
    ObjectOutcome,
    apply_objects,
    delete_objects,
    delete_volume_claims,
    fetch_owned,
)
from .connection import FIELD_MANAGER, ClusterConnection, ConnectionSettings
from .diffing import ObjectDiff, diff_objects
from .errors import ApiFailure, ApplyConflict, ClusterUnreachable, KubeError, UnknownContext
from .fanout import ClusterOutcome, Reach, across
from .health import Health, ObjectHealth, rollup, statefulset_health
from .objects import HASH_ANNOTATION, KubeObject, ObjectRef
from .registry import ClusterRegistry, default_kubeconfig

__all__ = [
    "FIELD_MANAGER",
    "HASH_ANNOTATION",
    "Action",
    "ApiFailure",
    "ApplyConflict",
    "ApplyReport",
    "ClusterConnection",
    "ClusterOutcome",
    "ClusterRegistry",
    "ClusterUnreachable",
    "ConnectionSettings",
    "Health",
    "KubeError",
    "KubeObject",
    "ObjectDiff",
    "ObjectHealth",
    "ObjectOutcome",
    "ObjectRef",
    "Reach",
    "UnknownContext",
    "across",
    "apply_objects",
    "default_kubeconfig",
    "delete_objects",
    "delete_volume_claims",
    "diff_objects",
    "fetch_owned",
    "rollup",
    "statefulset_health",
]
