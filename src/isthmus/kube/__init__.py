"""The one gateway to the API servers: connections, server-side apply, diff, prune, health.

Also: reading, listing and deleting by kind (:mod:`.fetching`), the one reader of live state
(:mod:`.live`), compare-and-swap records of small bookkeeping objects (:mod:`.records`), Leases
and their one expiry rule (:mod:`.leases`), what a connection learnt from its server
(:mod:`.session`), watches that re-list after a silence or an error (:mod:`.watching`), drift
found cheaply and written back (:mod:`.drift`), and whether a member serves the custom kinds of
some objects (:mod:`.customkinds`).

Owns: every call to a Kubernetes API server, with its timeout, request budget and circuit
breaker; translating client-library errors into :mod:`isthmus.kube.errors` (one class per HTTP
status). Callers outside this package never see a client-library class: they pass kinds as
``(apiVersion, kind)`` and get plain dicts.
Must not: decide what the objects should be (that is ``render``) or in what order clusters
change (that is ``rollout``).
"""

from .applying import (
    ApplyAction,
    ApplyReport,
    ObjectOutcome,
    apply_objects,
    delete_hooks,
    delete_objects,
    delete_volume_claims,
)
from .capabilities import Capabilities, capabilities, register_custom_kinds
from .connection import FIELD_MANAGER, ClusterConnection, ConnectionSettings
from .customkinds import absent_kinds, reconfirm_kinds
from .diffing import ObjectDiff, diff_objects
from .drift import (
    Drift,
    DriftKind,
    apply_exactly,
    changed_by_others,
    find_drift,
    fingerprint,
    reapply_objects,
)
from .errors import (
    ApiFailure,
    ApplyConflict,
    BadRequest,
    ClientFailure,
    ClusterUnreachable,
    Conflict,
    Forbidden,
    Gone,
    KubeError,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
    UnknownContext,
    UnprocessableEntity,
)
from .fanout import ClusterOutcome, Reach, across
from .fetching import list_objects
from .health import JUDGED_KINDS, Health, ObjectHealth, job_health, object_health, rollup, statefulset_health
from .live import Unapplied, fetch_owned, holds, live_objects, unapplied
from .objects import HASH_ANNOTATION, KubeObject, ObjectRef
from .podexec import ExecError, ExecResult, pod_exec
from .portforward import PodPortForward, PortForwardError
from .records import (
    StaleWrite,
    Written,
    bookkeeping_labels,
    config_map,
    create_record,
    delete_record,
    ensure_namespace,
    get_record,
    read_config_map,
    remembered_config_map,
    replace_record,
    write_config_map,
)
from .registry import ClusterRegistry, default_kubeconfig
from .scaling import delete_claim, set_replicas
from .watching import WatchSettings, watch_objects

__all__ = [
    "FIELD_MANAGER",
    "HASH_ANNOTATION",
    "JUDGED_KINDS",
    "ApiFailure",
    "ApplyAction",
    "ApplyConflict",
    "ApplyReport",
    "BadRequest",
    "Capabilities",
    "ClientFailure",
    "ClusterConnection",
    "ClusterOutcome",
    "ClusterRegistry",
    "ClusterUnreachable",
    "Conflict",
    "ConnectionSettings",
    "Drift",
    "DriftKind",
    "ExecError",
    "ExecResult",
    "Forbidden",
    "Gone",
    "Health",
    "KubeError",
    "KubeObject",
    "NotFound",
    "ObjectDiff",
    "ObjectHealth",
    "ObjectOutcome",
    "ObjectRef",
    "PodPortForward",
    "PortForwardError",
    "Reach",
    "ServerError",
    "StaleWrite",
    "TooManyRequests",
    "Unapplied",
    "Unauthorized",
    "UnknownContext",
    "UnprocessableEntity",
    "WatchSettings",
    "Written",
    "absent_kinds",
    "across",
    "apply_exactly",
    "apply_objects",
    "bookkeeping_labels",
    "capabilities",
    "changed_by_others",
    "config_map",
    "create_record",
    "default_kubeconfig",
    "delete_claim",
    "delete_hooks",
    "delete_objects",
    "delete_record",
    "delete_volume_claims",
    "diff_objects",
    "ensure_namespace",
    "fetch_owned",
    "find_drift",
    "fingerprint",
    "get_record",
    "holds",
    "job_health",
    "list_objects",
    "live_objects",
    "object_health",
    "pod_exec",
    "read_config_map",
    "reapply_objects",
    "reconfirm_kinds",
    "register_custom_kinds",
    "remembered_config_map",
    "replace_record",
    "rollup",
    "set_replicas",
    "statefulset_health",
    "unapplied",
    "watch_objects",
    "write_config_map",
]
