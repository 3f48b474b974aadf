"""Errors raised at the gateway to the API servers, each naming its cluster (and object).

    IsthmusError
    ├── UserError
    │   ├── UnknownContext        a Fleet names a kubeconfig context that does not exist
    │   └── ApplyConflict         another field manager owns a field we want to set
    └── KubeError                 the API server said no, or did not answer
        ├── ClusterUnreachable    timeout, refused connection, open circuit: the cluster is Unknown
        ├── ApiFailure            the server answered with an error (status, reason, message)
        │   ├── ClientFailure     any other 4xx
        │   │   ├── BadRequest             400
        │   │   ├── Unauthorized           401  credentials missing or expired
        │   │   ├── Forbidden              403  RBAC says no
        │   │   ├── NotFound               404  no such object, or no such kind (its CRD is absent)
        │   │   ├── Conflict               409  exists already, or changed since read (a lost compare-and-swap)
        │   │   ├── Gone                   410  a watch's resourceVersion is too old: list again
        │   │   ├── UnprocessableEntity    422  the object is invalid
        │   │   └── TooManyRequests        429  throttled: retry later
        │   └── ServerError       5xx
        └── PortForwardError      a pods/portforward stream was refused or broke (isthmus.kube.portforward)

Client-library exceptions never escape this package: :meth:`ClusterConnection.call
<isthmus.kube.ClusterConnection.call>` translates them with :func:`api_failure`, ``from`` the
original, into the subclass of the answer's HTTP status, so callers write ``except NotFound``
instead of comparing status codes. A 409 to a server-side apply is :class:`ApplyConflict` instead
(a field owned by another manager is the user's to resolve, not a race).
"""

from __future__ import annotations

from ..errors import IsthmusError, UserError

__all__ = [
    "ApiFailure",
    "ApplyConflict",
    "BadRequest",
    "ClientFailure",
    "ClusterUnreachable",
    "Conflict",
    "Forbidden",
    "Gone",
    "KubeError",
    "NotFound",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "UnknownContext",
    "UnprocessableEntity",
    "api_failure",
]


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


class ClientFailure(ApiFailure):
    """A 4xx answer: the request was refused as asked."""


class BadRequest(ClientFailure):
    """400."""


class Unauthorized(ClientFailure):
    """401: the credentials are missing, wrong or expired."""


class Forbidden(ClientFailure):
    """403: authenticated, but RBAC does not allow the verb."""


class NotFound(ClientFailure):
    """404: no such object, namespace, or kind (a CRD not installed)."""


class Conflict(ClientFailure):
    """409: the object exists already, or its resourceVersion moved on since it was read."""


class Gone(ClientFailure):
    """410: a resourceVersion too old to watch from; list again."""


class UnprocessableEntity(ClientFailure):
    """422: the object failed validation."""


class TooManyRequests(ClientFailure):
    """429: throttled by the server's priority and fairness."""


class ServerError(ApiFailure):
    """5xx: the server (or a webhook it called) failed."""


_BY_STATUS: dict[int, type[ClientFailure]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone,
    422: UnprocessableEntity, 429: TooManyRequests,
}


def api_failure(cluster: str, what: str, status: int, reason: str, message: str) -> ApiFailure:
    """The error of the tree above for an answer with HTTP ``status``."""
    cls: type[ApiFailure] = _BY_STATUS.get(status) or (
        ClientFailure if 400 <= status < 500 else ServerError if 500 <= status < 600 else ApiFailure)
    return cls(cluster, what, status, reason, message)


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
