"""Starting, watching and stopping the lab's OS processes.

Owns: spawning a component in its own session (process group) with stdout/stderr to a log
file, identifying a process by ``(pid, start time)`` so a recycled PID is never mistaken for
ours, log tails, free loopback ports, and the SIGTERM -> SIGKILL teardown of a process group.
Must not: know which Kubernetes component is which (that is :mod:`isthmus.lab.components`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessRef",
    "free_ports",
    "is_frozen",
    "listen_port_range",
    "log_tail",
    "port_is_free",
    "spawn",
    "stop_all",
]


@dataclass(frozen=True)
class ProcessRef:
    """A process we started: its PID, its kernel start time (jiffies since boot) and its group."""

    pid: int
    start_time: int
    pgid: int

    def alive(self) -> bool:
        """True while this very process exists and is not a zombie."""
        stat = _stat(self.pid)
        return stat is not None and stat[1] != "Z" and stat[2] == self.start_time

    def to_json(self) -> dict[str, int]:
        return {"pid": self.pid, "start_time": self.start_time, "pgid": self.pgid}

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> ProcessRef:
        return cls(pid=int(str(raw["pid"])), start_time=int(str(raw["start_time"])),
                   pgid=int(str(raw["pgid"])))


def _stat(pid: int) -> tuple[int, str, int] | None:
    """``(pid, state, starttime)`` from ``/proc/<pid>/stat``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return pid, rest[0], int(rest[19])


def is_frozen(ref: ProcessRef) -> bool:
    """True if the process is stopped by a signal (SIGSTOP)."""
    stat = _stat(ref.pid)
    return stat is not None and stat[2] == ref.start_time and stat[1] in ("T", "t")


def spawn(argv: Sequence[str], *, log: Path, cwd: Path, env: Mapping[str, str] | None = None,
          ) -> tuple[subprocess.Popen[bytes], ProcessRef]:
    """Start ``argv`` in a new session, appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
            env=dict(env) if env is not None else None, start_new_session=True, close_fds=True,
        )
    stat = _stat(proc.pid)
    start = stat[2] if stat else 0
    return proc, ProcessRef(pid=proc.pid, start_time=start, pgid=proc.pid)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (reads at most its last 64 KiB)."""
    try:
        with log.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log file {log})"
    return "\n".join(data.splitlines()[-lines:])


def _signal_group(ref: ProcessRef, sig: signal.Signals) -> None:
    # Only signal the group if its leader is still ours; otherwise the PGID may be recycled.
    if ref.alive():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pgid, sig)


def stop_all(refs: Iterable[ProcessRef], *, grace: float = 5.0,
             popens: Iterable[subprocess.Popen[bytes]] = ()) -> None:
    """SIGTERM (and SIGCONT, in case it is frozen) every group, then SIGKILL what is left."""
    todo = [r for r in refs if r.alive()]
    for ref in todo:
        _signal_group(ref, signal.SIGTERM)
        _signal_group(ref, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(popens)
        todo = [r for r in todo if r.alive()]
        if not todo:
            break
        time.sleep(0.05)
    for ref in todo:
        _signal_group(ref, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while todo and time.monotonic() < deadline:
        _reap(popens)
        todo = [r for r in todo if r.alive()]
        time.sleep(0.02)
    _reap(popens)


def _reap(popens: Iterable[subprocess.Popen[bytes]]) -> None:
    for p in popens:
        p.poll()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on ``port`` (like Go servers, ignoring TIME_WAIT leftovers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def listen_port_range(range_file: Path = PORT_RANGE_FILE) -> tuple[int, int]:
    """Ports ``[low, high)`` for the lab's servers: just below the kernel's ephemeral range.

    A port from the ephemeral range (what ``bind(0)`` hands out) can be taken by any outgoing
    connection between the moment it is chosen and the moment its server binds it: with ten
    clusters starting at once, a kube-apiserver then fails with "address already in use". The
    kernel never picks a port below that range for a connection, so nothing but another server
    can take one chosen there.
    """
    try:
        ephemeral_low = int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    high = min(ephemeral_low, 65536)
    return max(1024, high - 16384), high


def free_ports(count: int, host: str = "127.0.0.1", *, rng: random.Random | None = None,
               port_range: tuple[int, int] | None = None) -> list[int]:
    """``count`` distinct free TCP ports on ``host``, from :func:`listen_port_range` (all sockets held until
    all are chosen); from the ephemeral range only if that range has too few free ones."""
    low, high = port_range or listen_port_range()
    pick = rng or random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for port in pick.sample(range(low, high), min(max(high - low, 0), 64 * count)):
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:  # a range too small or too full: the kernel's choice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
