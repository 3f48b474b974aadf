"""Benchmark: time for a three-cluster lab to be Ready, and its idle memory (RSS) from /proc.

Run: ``.venv/bin/python bench/bench_lab.py [--clusters N] [--idle SECONDS]``; prints a markdown
snippet. The lab lives in a temporary state folder and is torn down at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from isthmus.lab import Lab, LabSettings, default_specs
from isthmus.lab.binaries import ETCD_VERSION, KUBERNETES_VERSION, KWOK_VERSION, ensure_binaries


def rss_kib(pid: int) -> int:
    """Resident set size of one process, from /proc/<pid>/status (VmRSS, KiB)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds to idle before measuring RSS")
    args = parser.parse_args()

    ensure_binaries()  # building is not part of the measurement
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-lab-") as tmp:
        lab = Lab(
            name="bench",
            specs=default_specs(args.clusters),
            state_dir=Path(tmp),
            settings=LabSettings(ready_timeout=300),
        )
        t0 = time.perf_counter()
        lab.up()
        ready = time.perf_counter() - t0
        try:
            time.sleep(args.idle)
            per_component: dict[str, int] = {}
            total = 0
            for comps in lab.pids().values():
                for comp, pid in comps.items():
                    kib = rss_kib(pid)
                    per_component[comp] = per_component.get(comp, 0) + kib
                    total += kib
        finally:
            t1 = time.perf_counter()
            lab.down()
            down = time.perf_counter() - t1

    n = args.clusters
    print(f"### Lab: {n} clusters (k8s {KUBERNETES_VERSION}, etcd {ETCD_VERSION}, kwok {KWOK_VERSION})\n")
    print(f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| time to {n} clusters Ready (up) | {ready:.1f} s |")
    print(f"| time to tear down (down) | {down:.1f} s |")
    print(f"| total RSS of all lab processes, idle {args.idle:.0f} s | {total / 1024:.0f} MiB |")
    for comp, kib in sorted(per_component.items(), key=lambda kv: -kv[1]):
        print(f"| &nbsp;&nbsp;{comp} (sum over {n}) | {kib / 1024:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
