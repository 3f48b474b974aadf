"""Port-forwarding to a pod through its cluster's API server (``pods/portforward``), as kubectl does.

Owns: :class:`PodPortForward`, a listener on ``127.0.0.1`` of this machine whose every accepted connection
becomes one WebSocket stream (``v4.channel.k8s.io``) to ``/api/v1/namespaces/<ns>/pods/<pod>/portforward``
of the member's API server, and from there into the pod's network namespace on ``localhost:<port>``; the
bytes are pumped both ways until either side closes. This is how the control plane reaches a database in
any member, from a laptop or from the operator, with nothing but the member's API server reachable: no pod
IP is ever dialled.

The channel protocol (Kubernetes' ``wsstream``): each binary message starts with a channel byte; port
``i`` of the request uses channel ``2i`` for data and ``2i+1`` for errors, and the first message on each is
the port number (two bytes, little-endian). Must not: know what is spoken over the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from types import TracebackType
from typing import Any

from lightkube.config.client_adapter import user_auth, verify_cluster
from lightkube.config.models import User
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from .connection import ClusterConnection
from .errors import ClusterUnreachable, KubeError

__all__ = ["PodPortForward", "PortForwardError", "api_websocket_endpoint"]

log = logging.getLogger("isthmus.kube.portforward")

_PROTOCOL = Subprotocol("v4.channel.k8s.io")
_DATA, _ERROR = 0, 1


class PortForwardError(KubeError):
    """The API server, or the pod's node, refused or broke a port-forward; the message says which pod and why."""


def api_websocket_endpoint(conn: ClusterConnection, *, what: str = "port-forward"
                           ) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """The member's API server as a WebSocket URL, with its TLS context and the user's credentials."""
    config = conn.config
    server = str(config.cluster.server).rstrip("/")
    ctx = verify_cluster(config.cluster, config.user or User(), config.abs_file, trust_env=False)
    headers: dict[str, str] = {}
    auth: Any = user_auth(config.user)
    token = getattr(auth, "token", None)
    if token is None and hasattr(auth, "_token_file"):
        with contextlib.suppress(OSError):
            token = open(auth._token_file).read().strip()  # noqa: SIM115 - lightkube's token file
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif auth is not None:
        raise PortForwardError(conn.name, f"{what} supports client certificates and bearer tokens,"
                               " not this kubeconfig user's authentication")
    ws = "wss://" + server.removeprefix("https://") if server.startswith("https://") else \
        "ws://" + server.removeprefix("http://")
    return ws, ctx, headers


class PodPortForward:
    """``async with PodPortForward(conn, ns, pod, 9042) as (host, port):`` then connect to ``host:port``."""

    def __init__(self, conn: ClusterConnection, namespace: str, pod: str, port: int, *,
                 open_timeout: float | None = None) -> None:
        self.conn = conn
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.open_timeout = open_timeout if open_timeout is not None else conn.settings.timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.streams = 0
        self.errors: list[str] = []

    @property
    def where(self) -> str:
        return f"pod {self.namespace}/{self.pod} port {self.port}"

    async def __aenter__(self) -> tuple[str, int]:
        self._url, self._ssl, self._headers = api_websocket_endpoint(self.conn)
        await self.check()  # fail here, clearly, rather than in whatever connects next
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _open(self) -> ClientConnection:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod}/portforward?ports={self.port}"
        try:
            ws = await connect(self._url + path, ssl=self._ssl, subprotocols=[_PROTOCOL],
                               additional_headers=self._headers, open_timeout=self.open_timeout, max_size=None,
                               ping_interval=None, compression=None)
        except TimeoutError as exc:
            raise ClusterUnreachable(self.conn.name, f"port-forward to {self.where}: no answer within "
                                                     f"{self.open_timeout:.0f}s") from exc
        except (OSError, WebSocketException) as exc:
            raise PortForwardError(self.conn.name, f"port-forward to {self.where} refused: {exc}") from exc
        seen: set[int] = set()
        while seen != {_DATA, _ERROR}:  # the node first names the port on both channels
            message = await asyncio.wait_for(ws.recv(), self.open_timeout)
            if isinstance(message, str) or len(message) < 3:
                raise PortForwardError(self.conn.name,
                                       f"port-forward to {self.where}: unexpected first message {message!r}")
            seen.add(message[0])
        return ws

    async def check(self) -> None:
        """Open one stream and close it: the pod exists, is running and the node forwards."""
        ws = await self._open()
        await ws.close()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._pump(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ws = await self._open()
        except (KubeError, TimeoutError, WebSocketException) as exc:
            self.errors.append(str(exc))
            writer.close()
            return
        self.streams += 1

        async def upstream() -> None:
            while data := await reader.read(65536):
                await ws.send(bytes([_DATA]) + data)

        async def downstream() -> None:
            async for message in ws:
                if isinstance(message, str) or not message:
                    continue
                channel, data = message[0], message[1:]
                if channel == _DATA:
                    writer.write(data)
                    await writer.drain()
                elif channel == _ERROR and data:
                    self.errors.append(data.decode(errors="replace"))
                    log.warning("port-forward to %s: %s", self.where, self.errors[-1])
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            writer.close()
