"""Running a command in a pod's container through its cluster's API server (``pods/exec``), as kubectl does.

Owns: :func:`pod_exec`, one WebSocket (``v4.channel.k8s.io``) to
``/api/v1/namespaces/<ns>/pods/<pod>/exec`` of the member's API server, its stdout and stderr collected, and
the exit status read from the error channel. This is how the control plane runs ``nodetool`` in any member,
from a laptop or from the operator, with nothing but the member's API server reachable.

The channel protocol (Kubernetes' ``remotecommand`` over ``wsstream``): each binary message starts with a
channel byte, 1 stdout, 2 stderr, 3 the final status (a ``metav1.Status`` in JSON: ``Success``, or
``Failure`` with reason ``NonZeroExitCode`` and the code in ``details.causes``; kwok's kubelet says
``exit status N`` at the end of the message instead). No stdin is sent.
Must not: know what the command is for, or retry it (a command may not be idempotent).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

from .connection import ClusterConnection
from .errors import ClusterUnreachable, KubeError
from .portforward import api_websocket_endpoint

__all__ = ["ExecError", "ExecResult", "pod_exec"]

_PROTOCOL = Subprotocol("v4.channel.k8s.io")
_STDOUT, _STDERR, _STATUS = 1, 2, 3
_EXIT_STATUS = re.compile(r"exit status (\d+)$")
#: What a command may print before the rest is dropped (``nodetool`` prints kilobytes, never this much).
MAX_OUTPUT = 16 * 1024 * 1024


class ExecError(KubeError):
    """The API server, or the pod's node, refused or broke an exec; the message says which pod and why."""


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What the command printed and how it ended (``exit_code`` 0: success)."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _exit_code(status: bytes) -> tuple[int, str]:
    """``(exit code, message)`` from the status channel's ``metav1.Status``."""
    try:
        doc = json.loads(status)
    except ValueError:
        return 1, status.decode(errors="replace")
    if doc.get("status") == "Success":
        return 0, ""
    message = str(doc.get("message") or "")
    if doc.get("reason") == "NonZeroExitCode":
        for cause in (doc.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
                return int(cause["message"]), message
    # kwok's kubelet reports a non-zero exit as an InternalError whose message ends "exit status N".
    if (found := _EXIT_STATUS.search(message)) is not None:
        return int(found.group(1)), message
    return 1, message or "the command failed"


async def pod_exec(conn: ClusterConnection, namespace: str, pod: str, container: str, command: Sequence[str], *,
                   within: float) -> ExecResult:
    """Run ``command`` in ``container`` of ``pod`` and wait, at most ``within`` seconds, for it to end.

    Raises :class:`ClusterUnreachable` when the API server does not answer, :class:`ExecError` when it (or
    the node) refuses the exec or the stream breaks before the command's status arrives, TimeoutError when
    the command runs longer than ``within``.
    """
    if not command:
        raise ValueError("pod_exec needs a command")
    where = f"exec in pod {namespace}/{pod} container {container}"
    url, ctx, headers = api_websocket_endpoint(conn, what="exec")
    query = "&".join([f"container={quote(container)}", "stdout=true", "stderr=true",
                      *(f"command={quote(part, safe='')}" for part in command)])
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/exec?{query}"
    out: dict[int, bytearray] = {_STDOUT: bytearray(), _STDERR: bytearray()}
    async with asyncio.timeout(within):
        try:
            ws = await connect(url + path, ssl=ctx, subprotocols=[_PROTOCOL], additional_headers=headers,
                               open_timeout=min(within, conn.settings.timeout), max_size=None,
                               ping_interval=None, compression=None)
        except TimeoutError as exc:
            raise ClusterUnreachable(conn.name, f"{where}: no answer within {conn.settings.timeout:.0f}s") from exc
        except (OSError, WebSocketException) as exc:
            raise ExecError(conn.name, f"{where} refused: {exc}") from exc
        try:
            async for message in ws:
                if isinstance(message, str) or not message:
                    continue
                channel, data = message[0], message[1:]
                if channel in out and len(out[channel]) < MAX_OUTPUT:
                    out[channel] += data[:MAX_OUTPUT - len(out[channel])]
                elif channel == _STATUS:
                    code, reason = _exit_code(bytes(data))
                    stderr = out[_STDERR].decode(errors="replace")
                    if code != 0 and reason and not stderr:
                        stderr = reason
                    return ExecResult(out[_STDOUT].decode(errors="replace"), stderr, code)
        except ConnectionClosed as exc:
            raise ExecError(conn.name, f"{where}: the stream closed before the command ended ({exc})") from exc
        finally:
            await ws.close()
    raise ExecError(conn.name, f"{where}: the stream ended without the command's status")
