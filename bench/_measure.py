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
