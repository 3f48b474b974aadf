"""The lab's error tree: every failure a user can fix is one line saying what, where and how.

Owns: the exception classes raised by :mod:`isthmus.lab`. Must not: import anything that
starts processes. The CLI prints ``str(exc)`` of any :class:`LabError` and exits with 2.

::

    LabError
    ├── ToolchainError          binaries missing and Go absent, or the build failed
    ├── ComponentError          a component did not start or become ready (names it, log tail)
    ├── LabNotRunningError      no lab state, or the lab is down
    ├── LabAlreadyRunningError  ``up`` on a lab whose processes are all alive
    ├── LabBusyError            another ``isthmus lab`` command holds the lab's lock
    └── UnknownTargetError      no such cluster, component or node in this lab
"""

from __future__ import annotations

from ..errors import UserError

__all__ = [
    "ComponentError",
    "LabAlreadyRunningError",
    "LabBusyError",
    "LabError",
    "LabNotRunningError",
    "ToolchainError",
    "UnknownTargetError",
]


class LabError(UserError, RuntimeError):
    """Base class: a lab problem the user can act on (printed as one line, exit code 2)."""


class ToolchainError(LabError):
    """The Kubernetes/etcd/kwok binaries are missing and cannot be built."""


class ComponentError(LabError):
    """A lab process failed to start or to become ready; carries its log tail."""

    def __init__(self, *, cluster: str, component: str, reason: str, log: str, log_tail: str) -> None:
        self.cluster = cluster
        self.component = component
        self.reason = reason
        self.log = log
        self.log_tail = log_tail
        tail = "\n".join("    " + line for line in log_tail.splitlines())
        super().__init__(
            f"lab cluster {cluster!r}: {component} {reason} (log: {log}); everything started was stopped."
            f" Fix the cause shown below and run `isthmus lab up` again.\n  last log lines:\n{tail}"
        )


class LabNotRunningError(LabError):
    """No state for this lab, or none of its processes is alive."""


class LabAlreadyRunningError(LabError):
    """``up`` was asked for a lab that is already fully running."""


class LabBusyError(LabError):
    """Another process holds the lab's lock (an ``up``/``down`` in progress)."""


class UnknownTargetError(LabError):
    """A cluster, component or node name that this lab does not have."""
