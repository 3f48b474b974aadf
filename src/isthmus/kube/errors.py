"""Errors raised at the gateway to the API servers, each naming its cluster (and object).

    IsthmusError
    ├── UserError
    │   ├── UnknownContext        a Fleet names a kubeconfig context that does not exist
    │   └── ApplyConflict         another field manager owns a field we want to set
    └── KubeError                 the API server said no, or did not answer
        ├── ClusterUnreachable    timeout, refused connection, open circuit: the cluster is Unknown
        ├── ApiFailure            the server answered with an error (status, reason, message)
        └── PortForwardError      a pods/portforward stream was refused or broke (isthmus.kube.portforward)

Client-library exceptions never escape this package: they are translated here, ``from`` the original.
"""

from __future__ import annotations

from ..errors import IsthmusError, UserError

__all__ = ["ApiFailure", "ApplyConflict", "ClusterUnreachable", "KubeError", "UnknownContext"]


class KubeError(IsthmusError):
    def __init__(self, cluster: str, message: str) -> None:
        self.cluster = cluster
        super().__init__(f"cluster {cluster}: {message}")


class ClusterUnreachable(KubeError):
    """The cluster did not answer in time or its circuit is open; its state is Unknown."""

    def __init__(self, cluster: str, reason: str) -> None:
        self.reason = reason
        super().__init__(cluster, f"unreachable ({reason})")


class ApiFailure(KubeError):
    def __init__(self, cluster: str, what: str, status: int, reason: str, message: str) -> None:
        self.what, self.status, self.reason, self.server_message = what, status, reason, message
        super().__init__(cluster, f"{what}: {status} {reason}: {message}")


class ApplyConflict(UserError):
    """Server-side apply found fields owned by another manager; we report instead of forcing."""

    def __init__(self, cluster: str, what: str, managers: list[str], message: str) -> None:
        self.cluster, self.what, self.managers = cluster, what, managers
        owners = ", ".join(managers) or "another manager"
        super().__init__(
            f"cluster {cluster}: {what}: conflict with field manager {owners}: {message}; "
            "re-run with --force-conflicts to take the fields over"
        )


class UnknownContext(UserError):
    pass
