"""One cluster's connection: a lightkube client behind a request budget, a timeout and a breaker.

Every call to a member cluster goes through :meth:`ClusterConnection.call`, which is where
client-library exceptions become :mod:`isthmus.kube.errors`, where requests are counted (so a
benchmark can report requests per apply), and where an unresponsive cluster turns Unknown
instead of stalling its caller.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx2
from lightkube import AsyncClient
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError

from ..settings import ConnectionSettings
from .breaker import CircuitBreaker
from .errors import ApiFailure, ApplyConflict, ClusterUnreachable, api_failure
from .session import Session

__all__ = ["FIELD_MANAGER", "ClusterConnection", "ConnectionSettings"]

FIELD_MANAGER = "isthmus"
T = TypeVar("T")
_CONFLICT_MANAGER = re.compile(r'conflicts? with "([^"]+)"')
WRITE_VERBS = frozenset({"apply", "create", "patch", "delete", "update"})


class ClusterConnection:
    """Talks to one member cluster. Cheap to create: nothing connects until the first call."""

    def __init__(self, name: str, config: SingleConfig, settings: ConnectionSettings | None = None, *,
                 session: Session | None = None) -> None:
        self.name = name
        self.settings = settings or ConnectionSettings()
        self.session = session if session is not None else Session()
        """What this process learnt from the server (:mod:`isthmus.kube.session`): hints, never the truth."""
        self.breaker = CircuitBreaker(self.settings.breaker_threshold, self.settings.breaker_cooldown)
        self.requests: Counter[str] = Counter()
        self._config = config
        self._budget = asyncio.Semaphore(self.settings.max_in_flight)
        self._client: AsyncClient | None = None

    @property
    def config(self) -> SingleConfig:
        """The kubeconfig entry this connection uses (server, credentials), for streams beside the client."""
        return self._config

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            # HTTP/2, as kubectl does: one TLS connection carries every concurrent call, where HTTP/1.1
            # would open (and handshake) one per call in flight, at a CPU cost to both ends.
            self._client = self._new_client(http2=True)
        return self._client

    def stream_client(self) -> AsyncClient:
        """A client of its own for one long-lived stream (a watch), to the same server with the same credentials.

        HTTP/1.1, unlike :attr:`client`: long-lived streams sharing an HTTP/2 connection with other calls
        were seen (httpcore2) to hold those calls up past their timeouts and to lose watch events. The
        caller closes it.
        """
        return self._new_client(http2=False)

    def _new_client(self, *, http2: bool) -> AsyncClient:
        timeout = httpx2.Timeout(self.settings.timeout, connect=min(self.settings.timeout, 5.0))
        return AsyncClient(self._config, timeout=timeout, field_manager=FIELD_MANAGER, trust_env=False, http2=http2)

    @property
    def writes(self) -> int:
        return sum(n for verb, n in self.requests.items() if verb in WRITE_VERBS)

    async def call(self, verb: str, what: str, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Run one API call; ``what`` names the object for error messages (``StatefulSet ns/name``)."""
        if not self.breaker.allow():
            raise ClusterUnreachable(self.name, f"circuit open; last error: {self.breaker.last_error}")
        self.requests[verb] += 1
        try:
            async with self._budget, asyncio.timeout(self.settings.timeout):
                result = await fn(self.client)
        except TimeoutError as exc:
            self._failed(f"no answer within {self.settings.timeout:g}s")
            raise ClusterUnreachable(self.name, self.breaker.last_error) from exc
        except httpx2.TransportError as exc:
            self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise ClusterUnreachable(self.name, self.breaker.last_error) from exc
        except ApiError as exc:
            self.breaker.succeeded()  # the server answered: it is reachable
            raise translate(self.name, exc, verb, what) from exc
        self.breaker.succeeded()
        return result

    def _failed(self, reason: str) -> None:
        self.breaker.failed(reason)
        # A hung connection pool would keep later calls waiting on dead sockets; start afresh.
        client, self._client = self._client, None
        if client is not None:
            asyncio.get_running_loop().create_task(_close_quietly(client))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)


def translate(cluster: str, exc: ApiError, verb: str, what: str) -> ApiFailure | ApplyConflict:
    """The :mod:`isthmus.kube.errors` error for the client library's ``exc`` (an answer to ``verb`` on ``what``)."""
    status = exc.status
    message = status.message or str(exc)
    code = status.code or exc.response.status_code
    if code == 409 and verb == "apply":
        return ApplyConflict(cluster, what, sorted(set(_CONFLICT_MANAGER.findall(message))), message)
    return api_failure(cluster, what, code, status.reason or "", message)


async def _close_quietly(client: AsyncClient) -> None:
    try:
        async with asyncio.timeout(2):
            await client.close()
    except (TimeoutError, httpx2.HTTPError, OSError):
        pass
