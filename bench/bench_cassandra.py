"""Benchmark: time for a lab Cassandra node to answer CQL, measured from process start.

Run: ``.venv/bin/python bench/bench_cassandra.py [--runs N] [--ring] [--jit full]``; prints a
markdown snippet. CPU seconds (user+system of the JVM until ready) are reported beside wall
time because the lab machine has 2 cores and is often busy: they vary far less than wall time.
Each run starts a fresh node (empty data folder) in a temporary folder and stops it. With
``--ring`` it also times a two-datacenter ring (the second node joins after the first).
Resolving the jars with Maven is done first and is not part of the measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from isthmus.lab.cassandra import (
    CASSANDRA_VERSION,
    CassandraNode,
    JitMode,
    claim_addresses,
    ensure_cassandra,
    prepare_node,
    start_node,
    start_ring,
    stop_nodes,
)


def rss_mib(pid: int) -> float:
    """Resident set size of one process, from /proc/<pid>/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_node(tmp: Path, run: int, jit: JitMode) -> tuple[float, float, float, float]:
    """(seconds to CQL, CPU seconds to CQL, seconds to stop, RSS MiB once ready) for a fresh node."""
    with claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(
            name=f"bench{run}", address=address, node_dir=tmp / f"bench{run}", cluster_name="bench",
            seeds=(address,), jit=jit,
        )
        node = start_node(spec)
        cpu = cpu_s(node.pid)
        rss = rss_mib(node.pid)
        t0 = time.perf_counter()
        node.stop()
    assert node.ready_after_s is not None
    return node.ready_after_s, cpu, time.perf_counter() - t0, rss


def ring(tmp: Path, jit: JitMode) -> tuple[float, list[CassandraNode]]:
    with claim_addresses(2) as claim:
        specs = [
            prepare_node(
                name=f"ring-{dc}", address=address, node_dir=tmp / f"ring-{dc}", cluster_name="bench-ring",
                seeds=(claim.addresses[0],), datacenter=dc, jit=jit,
            )
            for address, dc in zip(claim.addresses, ("dc1", "dc2"), strict=True)
        ]
        t0 = time.perf_counter()
        nodes = start_ring(specs)
        elapsed = time.perf_counter() - t0
        stop_nodes(nodes)
    return elapsed, nodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ring", action="store_true", help="also time a two-datacenter ring")
    parser.add_argument("--jit", choices=[m.name.lower() for m in JitMode], default="quick_start")
    args = parser.parse_args()
    jit = JitMode[args.jit.upper()]

    ensure_cassandra()
    load = os.getloadavg()[0]
    ready: list[float] = []
    cpus: list[float] = []
    stops: list[float] = []
    rss: list[float] = []
    ring_s: float | None = None
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-cassandra-") as name:
        tmp = Path(name)
        for run in range(args.runs):
            r, c, s, m = one_node(tmp, run, jit)
            ready.append(r)
            cpus.append(c)
            stops.append(s)
            rss.append(m)
        if args.ring:
            ring_s, _ = ring(tmp, jit)

    print(f"### Lab Cassandra {CASSANDRA_VERSION}: one node, process start to CQL answering\n")
    print(
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()},"
        f" 1-min load average at start {load:.1f}; {args.runs} runs, fresh data folder each, 1 GiB heap,"
        f" JIT {jit.name}\n"
    )
    print("| measure | median | min | max |")
    print("|---|---|---|---|")
    for label, values, unit, digits in (
        ("start to CQL answering (wall)", ready, "s", 1),
        ("start to CQL answering (JVM CPU)", cpus, "s", 1),
        ("stop (SIGTERM to exit)", stops, "s", 1),
        ("RSS once ready", rss, "MiB", 0),
    ):
        cells = [f"{v:.{digits}f} {unit}" for v in (statistics.median(values), min(values), max(values))]
        print(f"| {label} | {' | '.join(cells)} |")
    if ring_s is not None:
        print(f"| two-DC ring, both answering CQL (sequential) | {ring_s:.1f} s | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
