"""Running one container of a lab pod: its process, its log, entering it, and its probes.

Owns: the command line that starts a container (``nsenter`` into the pod's network namespace, a mount
and UTS namespace of its own, then :mod:`isthmus.lab.pods.container` builds its root and execs the
command), the CRI-format log file that kwok serves to ``kubectl logs``, ``exec`` into a running
container (``nsenter -t <pid> -m -n -u -r -w``, as the container's user, with its environment), and the
three probe kinds (exec, httpGet, tcpSocket), each with its timeout. Must not: decide restarts or
report status (that is :mod:`isthmus.lab.pods.runtime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ContainerProcess", "ProbeResult", "exec_in", "run_probe", "start_container"]

_CONTAINER_PROGRAM = Path(__file__).with_name("container.py")
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


class ContainerProcess:
    """A started container: its process (the container's PID 'one', seen from the host) and log pumps."""

    def __init__(self, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]], started: float) -> None:
        self.proc = proc
        self.pumps = pumps
        self.started = started

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> int:
        rc = await self.proc.wait()
        for pump in self.pumps:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(pump, 5.0)
        return rc

    def kill(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def _cri_line(stream: str, data: bytes) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e9):09d}Z"
    tag = b"F" if data.endswith(b"\n") else b"P"
    body = data if data.endswith(b"\n") else data + b"\n"
    return stamp.encode() + b" " + stream.encode() + b" " + tag + b" " + body


async def _pump(reader: asyncio.StreamReader, stream: str, log: Path, tail: list[bytes]) -> None:
    with log.open("ab", buffering=0) as out:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                line = exc.partial
                if line:
                    out.write(_cri_line(stream, line))
                return
            except asyncio.LimitOverrunError as exc:
                line = await reader.readexactly(exc.consumed)
            out.write(_cri_line(stream, line))
            tail.append(line)
            del tail[:-20]


def _write_spec(spec_path: Path, spec: Mapping[str, Any], log: Path) -> None:
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))
    log.parent.mkdir(parents=True, exist_ok=True)


async def start_container(*, netns_path: Path, spec: Mapping[str, Any], spec_path: Path, log: Path,
                          tail: list[bytes]) -> ContainerProcess:
    """Start a container whose root and command ``spec`` describes (see :mod:`.container`)."""
    _write_spec(spec_path, spec, log)
    argv = ["nsenter", f"--net={netns_path}", "unshare", "--mount", "--uts", "--propagation", "private",
            sys.executable, "-I", "-S", str(_CONTAINER_PROGRAM), str(spec_path)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, limit=1 << 20)
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [asyncio.create_task(_pump(proc.stdout, "stdout", log, tail)),
             asyncio.create_task(_pump(proc.stderr, "stderr", log, tail))]
    return ContainerProcess(proc, pumps, time.time())


def exec_argv(pid: int, uid: int | None, gid: int | None, command: Sequence[str]) -> list[str]:
    """``nsenter`` into a running container as its user, with its environment, running ``command``."""
    argv = ["nsenter", "-t", str(pid), "-m", "-n", "-u", "-r", "-w"]
    if gid is not None:
        argv += ["-G", str(gid)]
    if uid is not None:
        argv += ["-S", str(uid)]
    return [*argv, "--", "/bin/sh", "-c", '. /.isthmus-env; exec "$@"', "sh", *command]


async def exec_in(pid: int, uid: int | None, gid: int | None, command: Sequence[str], *,
                  within: float, stdin: bytes | None = None) -> tuple[int, bytes]:
    """Run ``command`` in a running container; ``(exit code, stdout+stderr)``; -1 on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *exec_argv(pid, uid, gid, command), stdin=asyncio.subprocess.PIPE if stdin is not None else
        asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin), within)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return -1, b"timed out"
    return proc.returncode if proc.returncode is not None else -1, out


def _in_netns(netns_path: Path, fn: Any) -> Any:
    """Run ``fn()`` on a fresh thread that has joined the network namespace (sockets stay there)."""
    result: dict[str, Any] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns_path, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns_path}")
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=body, daemon=True)  # a thread of its own: never a pool thread left in a netns
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _tcp(netns_path: Path, host: str, port: int, timeout: float, request: bytes | None) -> bytes:
    def go() -> bytes:
        with socket.create_connection((host, port), timeout=timeout) as s:
            if request is None:
                return b""
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                if len(data) > 1 << 16:
                    break
            return data

    value: bytes = _in_netns(netns_path, go)
    return value


def _port(value: Any, ports: Mapping[str, int]) -> int:
    if isinstance(value, int):
        return value
    if str(value).isdigit():
        return int(value)
    if value in ports:
        return ports[value]
    raise ValueError(f"no container port named {value!r}")


async def run_probe(probe: Mapping[str, Any], *, pid: int | None, uid: int | None, gid: int | None,
                    netns_path: Path, pod_ip: str, ports: Mapping[str, int]) -> ProbeResult:
    timeout = float(probe.get("timeoutSeconds", 1))
    if "exec" in probe:
        if pid is None:
            return ProbeResult(False, "container is not running")
        rc, out = await exec_in(pid, uid, gid, probe["exec"]["command"], within=timeout)
        if rc == -1:
            return ProbeResult(False, f"command timed out after {timeout:.0f}s")
        return ProbeResult(rc == 0, out.decode(errors="replace").strip()[-512:])
    if "httpGet" in probe:
        get = probe["httpGet"]
        host = get.get("host") or pod_ip
        port = _port(get["port"], ports)
        path = get.get("path", "/")
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
                   "User-Agent: kube-probe/lab\r\n\r\n")
        try:
            raw = await asyncio.wait_for(asyncio.to_thread(_tcp, netns_path, host, port, timeout, request.encode()),
                                         timeout + 1)
        except (OSError, TimeoutError) as exc:
            return ProbeResult(False, f"Get http://{host}:{port}{path}: {exc}")
        status_line = raw.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split()
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return ProbeResult(200 <= code < 400, f"HTTP probe failed with statuscode: {code}" if code else status_line)
    if "tcpSocket" in probe:
        sock = probe["tcpSocket"]
        host = sock.get("host") or pod_ip
        port = _port(sock["port"], ports)
        try:
            await asyncio.wait_for(asyncio.to_thread(_tcp, netns_path, host, port, timeout, None), timeout + 1)
        except (OSError, TimeoutError) as exc:
            return ProbeResult(False, f"dial tcp {host}:{port}: {exc}")
        return ProbeResult(True)
    return ProbeResult(True, "no handler")
