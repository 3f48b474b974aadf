"""What every lab benchmark records: CPU-seconds of the client, of the lab and of the latency proxy,
the load average, and what bounds a run's wall time.

Imported by the ``bench_*.py`` scripts (their folder is on ``sys.path`` when they run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from isthmus.lab.latency import ProxyState

CORES = os.cpu_count() or 1
TICK = os.sysconf("SC_CLK_TCK")


def load_avg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of every core since boot, from /proc/stat (idle and iowait are not busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 2.0) -> float:
    """How many cores' worth of CPU the whole machine used over the next ``window`` seconds."""
    busy0, total0 = _cpu_ticks()
    time.sleep(window)
    busy1, total1 = _cpu_ticks()
    return CORES * (busy1 - busy0) / max(total1 - total0, 1)


@dataclass(frozen=True)
class Quiet:
    """What :func:`wait_quiet` saw: how long it waited, the last window's busy cores, and whether it got there."""

    waited: float
    busy: float
    reached: bool
    window: float

    def __str__(self) -> str:
        state = "quiet" if self.reached else "not quiet"
        return (f"{state} after {self.waited:.0f} s ({self.busy:.2f} of {CORES} cores busy over the last "
                f"{self.window:g} s)")


def wait_quiet(limit: float, timeout: float, window: float = 2.0) -> Quiet:
    """Wait until two ``window``-second windows in a row use under ``limit`` cores (the lab's start-up churn and
    the previous benchmark's processes have died down), at most ``timeout`` seconds; a benchmark measures then."""
    started, calm, busy = time.monotonic(), 0, 0.0
    while calm < 2:
        busy = busy_cores(window)
        calm = calm + 1 if busy < limit else 0
        if calm < 2 and time.monotonic() - started > timeout:
            return Quiet(time.monotonic() - started, busy, False, window)
    return Quiet(time.monotonic() - started, busy, True, window)


def pid_cpu(pid: int) -> float:
    """User+system CPU-seconds of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def lab_cpu(lab_dir: Path, *, skip: frozenset[int] = frozenset()) -> float:
    """CPU-seconds so far of every process whose command line names the lab's folder (but ``skip``)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            if str(lab_dir) not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
        except OSError:
            continue
        total += pid_cpu(int(proc.name))
    return total


@dataclass(frozen=True)
class Run:
    """One measured run: wall seconds and CPU-seconds of the client, the lab and the latency proxy."""

    seconds: float
    client_cpu: float
    lab_cpu: float
    proxy_cpu: float

    @property
    def cpu_bound(self) -> float:
        """Shortest wall time the CPU work of the run allows on this machine's cores."""
        return (self.client_cpu + self.lab_cpu + self.proxy_cpu) / CORES

    @property
    def bound_by(self) -> str:
        """``CPU`` when the run's CPU work fills more than half its wall time on every core, else ``distance``."""
        return "CPU" if self.cpu_bound > 0.5 * self.seconds else "distance"


def measured(lab_dir: Path, work: Callable[[], object]) -> Run:
    """Run ``work`` and measure it; the client is this process and its waited-for children."""
    proxy = ProxyState.load(lab_dir)
    proxy_pid = proxy.process.pid if proxy is not None else -1
    skip = frozenset({proxy_pid})
    lab0, proxy0, client0, t0 = lab_cpu(lab_dir, skip=skip), pid_cpu(proxy_pid), os.times(), time.perf_counter()
    work()
    seconds, client1 = time.perf_counter() - t0, os.times()
    client = sum(client1[:4]) - sum(client0[:4])  # user+system, ours and the children we waited for
    return Run(seconds, client, lab_cpu(lab_dir, skip=skip) - lab0, pid_cpu(proxy_pid) - proxy0)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
