"""The operator's settings, grouped by concern; every field is at most one ``isthmus operator run`` option."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..settings import ConnectionSettings, WatchSettings

__all__ = [
    "DEFAULT_NAMESPACE",
    "DELETE_VOLUMES_ANNOTATION",
    "FINALIZER",
    "ConnectionOptions",
    "LeadershipSettings",
    "MemberSettings",
    "OperatorSettings",
    "ReconcileSettings",
    "ServingSettings",
    "default_identity",
]

DEFAULT_NAMESPACE: Final = "isthmus-system"
FINALIZER: Final = "isthmus.dev/cleanup"
DELETE_VOLUMES_ANNOTATION: Final = "isthmus.dev/delete-volumes"


def default_identity() -> str:
    """The pod name in a Deployment (HOSTNAME), else host and pid: unique per replica."""
    return os.environ.get("POD_NAME") or f"{platform.node()}-{os.getpid()}"  # node(): the host name, no lookup


def _calls() -> ConnectionSettings:
    return ConnectionSettings(timeout=5.0)


@dataclass(frozen=True, kw_only=True)
class ConnectionOptions:
    kubeconfig: Path | None = None
    """kubeconfig of the control-plane cluster; None means the pod's service account (or $KUBECONFIG)."""
    context: str | None = None
    calls: ConnectionSettings = field(default_factory=_calls)
    """Every connection's (control plane and members): ``timeout`` is the seconds one call may take before
    the cluster counts as not answering (``--request-timeout``, 5 s here); the budget and the breaker."""


@dataclass(frozen=True, kw_only=True)
class ReconcileSettings:
    resync_interval: float = 120.0
    """Seconds between periodic drift checks of every CassandraCluster (a backstop: watches on the members
    start a check within ``drift_debounce`` of a change made by someone else)."""
    drift_debounce: float = 0.5
    """Seconds a watch waits after a change by someone else before checking, so a burst is checked once."""
    resync_idle: float = 5.0
    """Seconds a CassandraCluster must be unchanged before the periodic resync touches it."""
    progress_requeue: float = 5.0
    """Seconds between runs of the timer, which starts due rollouts and resyncs and refreshes the status
    (skipped while the app is settled and nothing it shows has changed)."""
    retry_interval: float = 10.0
    """Seconds before a rollout that did not reach every member is tried again."""
    rollout_timeout: float = 300.0
    """Seconds one rollout may take before it stops (Paused) and is tried again later."""


@dataclass(frozen=True, kw_only=True)
class MemberSettings:
    probe_interval: float = 15.0
    """Seconds between reachability probes of each member cluster (a frozen member turns Reachable=False
    within this plus the request timeout)."""
    relist_interval: float = 120.0
    """Seconds between full re-lists of member Secrets (the watch only wakes the re-list up sooner)."""
    watch: WatchSettings = field(default_factory=WatchSettings)
    """Watches on members' objects: ``server_timeout`` is the seconds one watch request stays open (the
    server's timeout); a silent watch is re-listed."""


@dataclass(frozen=True, kw_only=True)
class LeadershipSettings:
    enabled: bool = True
    lease_name: str = "isthmus-operator"
    lease_duration: float = 15.0
    """Seconds a Lease stays valid without renewal: the standby takes over this long after a leader dies."""
    renew_interval: float = 5.0
    retry_interval: float = 2.0


@dataclass(frozen=True, kw_only=True)
class ServingSettings:
    metrics_port: int = 8080
    """Port of /metrics, /healthz and /readyz (0 disables)."""
    host: str = "0.0.0.0"


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    namespace: str = DEFAULT_NAMESPACE
    """The operator's own namespace: member Secrets and the leader Lease live here."""
    identity: str = field(default_factory=default_identity)
    connection: ConnectionOptions = field(default_factory=ConnectionOptions)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    members: MemberSettings = field(default_factory=MemberSettings)
    leadership: LeadershipSettings = field(default_factory=LeadershipSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
