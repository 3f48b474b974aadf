"""What a kubelet reports for a pod, from the state of its containers: pure functions.

Owns: :class:`ContainerState` (waiting, running, terminated, with restart count, readiness and the last
termination), the pod ``status`` document built from them (phase, conditions, container statuses, IPs),
the CrashLoopBackOff delay (10 s doubling to 5 min, reset after 10 min of running, as the kubelet's),
and ``$(VAR)`` expansion in commands and arguments. Must not: do I/O or read the clock (times are passed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

__all__ = ["ContainerState", "backoff_delay", "expand", "pod_status", "rfc3339"]

BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backoff_delay(restarts: int) -> float:
    """The wait before restart number ``restarts`` (1-based) of a container that keeps exiting."""
    if restarts <= 0:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2.0 ** (restarts - 1)))


@dataclass(frozen=True)
class ContainerState:
    """One container as the kubelet sees it; replaced (never mutated) on every change."""

    name: str
    image: str
    #: "waiting", "running" or "terminated"
    phase: str = "waiting"
    reason: str | None = "ContainerCreating"
    message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    last_termination: Mapping[str, Any] | None = None
    init: bool = False
    container_id: str | None = None

    def waiting(self, reason: str, message: str | None = None) -> ContainerState:
        return replace(self, phase="waiting", reason=reason, message=message, ready=False, started=False)

    def running(self, at: float, container_id: str) -> ContainerState:
        return replace(self, phase="running", reason=None, message=None, started_at=at, finished_at=None,
                       exit_code=None, ready=False, started=False, container_id=container_id)

    def terminated(self, at: float, exit_code: int, reason: str, message: str | None = None) -> ContainerState:
        return replace(self, phase="terminated", reason=reason, message=message, finished_at=at, exit_code=exit_code,
                       ready=False, started=False)

    def restarted(self) -> ContainerState:
        """Counted once the container is about to start again: its last run becomes ``lastState``."""
        return replace(self, restart_count=self.restart_count + 1, last_termination=self._terminated_doc())

    def _terminated_doc(self) -> dict[str, Any] | None:
        if self.phase != "terminated":
            return None
        doc: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason}
        if self.message:
            doc["message"] = self.message[-4096:]
        if self.started_at is not None:
            doc["startedAt"] = rfc3339(self.started_at)
        if self.finished_at is not None:
            doc["finishedAt"] = rfc3339(self.finished_at)
        if self.container_id:
            doc["containerID"] = self.container_id
        return doc

    def to_status(self) -> dict[str, Any]:
        state: dict[str, Any]
        if self.phase == "running":
            state = {"running": {"startedAt": rfc3339(self.started_at or 0.0)}}
        elif self.phase == "terminated":
            state = {"terminated": self._terminated_doc()}
        else:
            state = {"waiting": {k: v for k, v in (("reason", self.reason), ("message", self.message)) if v}}
        doc: dict[str, Any] = {"name": self.name, "image": self.image, "imageID": self.image, "ready": self.ready,
                               "restartCount": self.restart_count, "started": self.started, "state": state,
                               "lastState": {"terminated": self.last_termination} if self.last_termination else {}}
        if self.container_id:
            doc["containerID"] = self.container_id
        return doc


@dataclass(frozen=True)
class PodView:
    """Inputs of :func:`pod_status` beyond the containers."""

    pod_ip: str | None
    host_ip: str
    start_time: float
    scheduled_at: float
    conditions_since: Mapping[str, float] = field(default_factory=dict)


def _condition(kind: str, ok: bool, since: float, reason: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                           "lastTransitionTime": rfc3339(since)}
    if reason and not ok:
        doc["reason"] = reason
    return doc


def pod_status(view: PodView, init: Sequence[ContainerState], main: Sequence[ContainerState], *,
               readiness_gates: Sequence[str] = (), gates_true: frozenset[str] = frozenset(),
               not_ready_reason: str | None = None) -> dict[str, Any]:
    """The pod's ``status`` (for a merge patch of the status subresource)."""
    initialized = all(c.phase == "terminated" and c.exit_code == 0 for c in init)
    containers_ready = initialized and bool(main) and all(c.ready for c in main) and not_ready_reason is None
    ready = containers_ready and all(g in gates_true for g in readiness_gates)
    running = any(c.phase == "running" for c in main)
    phase = "Running" if running or (initialized and any(c.restart_count for c in main)) else "Pending"
    since = view.conditions_since
    conditions = [
        _condition("PodReadyToStartContainers", view.pod_ip is not None, since.get("sandbox", view.start_time)),
        _condition("Initialized", initialized, since.get("Initialized", view.start_time), "ContainersNotInitialized"),
        _condition("Ready", ready, since.get("Ready", view.start_time), not_ready_reason or "ContainersNotReady"),
        _condition("ContainersReady", containers_ready, since.get("ContainersReady", view.start_time),
                   not_ready_reason or "ContainersNotReady"),
        _condition("PodScheduled", True, view.scheduled_at),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": rfc3339(view.start_time),
        "initContainerStatuses": [c.to_status() for c in init],
        "containerStatuses": [c.to_status() for c in main],
        "qosClass": "Guaranteed",
    }
    if view.pod_ip is not None:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    return status


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is ``$``, others stay as they are."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(one, text)
