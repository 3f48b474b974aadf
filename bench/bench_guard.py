"""Benchmark: the same client load straight to Cassandra and through the guard, in one run.

    .venv/bin/python bench/bench_guard.py [--requests 20000] [--concurrency 64] [--rounds 2]
                                          [--host H --port P]   # an existing node, else a lab node

Load: one cassandra-driver session per target (protocol v5), a prepared single-partition
SELECT, at most ``--concurrency`` requests in flight, ``--requests`` per round; rounds
alternate direct/guard after a warm-up of each. The guard runs as a subprocess
(``python -m isthmus.cqlguard.cli run`` with a flows file and metrics on, as in production),
so its CPU time is read from ``/proc/<pid>/stat``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY = """
rules:
  - name: bench
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["benchks.*"]
"""


@dataclass
class RoundResult:
    target: str
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _session(host: str, port: int) -> Any:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=30.0)
    cluster = Cluster(
        contact_points=[host], port=port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
    )
    return cluster.connect()


def run_round(session: Any, statement: Any, *, requests: int, concurrency: int, target: str) -> RoundResult:
    """Keep ``concurrency`` requests in flight until ``requests`` have completed."""
    latencies: list[float] = []
    lock = threading.Lock()
    slots = threading.Semaphore(concurrency)
    done = threading.Event()
    errors: list[BaseException] = []
    remaining = [requests]

    def finished(started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        with lock:
            latencies.append(elapsed)
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()
        slots.release()

    def failed(exc: BaseException, started: float) -> None:
        errors.append(exc)
        finished(started)

    t0 = time.perf_counter()
    for i in range(requests):
        slots.acquire()
        started = time.perf_counter()
        future = session.execute_async(statement, (i % 100,))
        future.add_callbacks(lambda _rows, s=started: finished(s), lambda exc, s=started: failed(exc, s))
    done.wait()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed against {target}: {errors[0]!r}")
    return RoundResult(target, requests, seconds, latencies)


@contextmanager
def lab_node() -> Iterator[tuple[str, int]]:
    from isthmus.lab.cassandra import claim_addresses, prepare_node, start_node

    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp, claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(
            name="bench", address=address, node_dir=Path(tmp) / "node", cluster_name="bench-guard", seeds=(address,)
        )
        print(f"starting a lab Cassandra on {address} ...", file=sys.stderr)
        node = start_node(spec)
        try:
            yield node.host, node.port
        finally:
            node.stop()


@contextmanager
def guard_process(upstream: tuple[str, int], workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    port = _free_port()
    argv = [
        sys.executable, "-m", "isthmus.cqlguard.cli", "run",
        "--listen", f"127.0.0.1:{port}", "--upstream", f"{upstream[0]}:{upstream[1]}",
        "--policy", str(policy), "--flows", str(workdir / "flows.jsonl"),
        "--metrics", f"127.0.0.1:{_free_port()}", "--log-level", "warning",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the guard did not start: {line}{proc.stderr.read().decode()}")
    print(line.strip(), file=sys.stderr)
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=9042)
    args = parser.parse_args()

    @contextmanager
    def node() -> Iterator[tuple[str, int]]:
        if args.host:
            yield args.host, args.port
        else:
            with lab_node() as endpoint:
                yield endpoint

    with node() as upstream, tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp:
        setup = _session(*upstream)
        setup.execute(
            "CREATE KEYSPACE IF NOT EXISTS benchks"
            " WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        setup.execute("CREATE TABLE IF NOT EXISTS benchks.kv (k int PRIMARY KEY, v text)")
        insert = setup.prepare("INSERT INTO benchks.kv (k, v) VALUES (?, ?)")
        for k in range(100):
            setup.execute(insert, (k, "x" * 100))
        with guard_process(upstream, Path(tmp)) as (proc, port):
            sessions = {"direct": setup, "guard": _session("127.0.0.1", port)}
            statements = {name: s.prepare("SELECT v FROM benchks.kv WHERE k = ?") for name, s in sessions.items()}
            for name, s in sessions.items():  # warm-up: JIT, caches, connections
                run_round(s, statements[name], requests=min(args.requests, 3000), concurrency=args.concurrency,
                          target=name)
            results: dict[str, list[RoundResult]] = {"direct": [], "guard": []}
            guard_cpu = 0.0
            for _ in range(args.rounds):
                for name in ("direct", "guard"):
                    cpu0 = _cpu_seconds(proc.pid)
                    results[name].append(run_round(sessions[name], statements[name], requests=args.requests,
                                                   concurrency=args.concurrency, target=name))
                    if name == "guard":
                        guard_cpu += _cpu_seconds(proc.pid) - cpu0
            for s in sessions.values():
                s.cluster.shutdown()

    def summary(name: str) -> tuple[float, float, float]:
        rounds = results[name]
        tput = statistics.median(r.throughput for r in rounds)
        lat = [x for r in rounds for x in r.latencies_ms]
        merged = RoundResult(name, len(lat), 1.0, lat)
        return tput, merged.pct(0.50), merged.pct(0.99)

    d_tput, d_p50, d_p99 = summary("direct")
    g_tput, g_p50, g_p99 = summary("guard")
    total_guard_requests = args.requests * args.rounds
    cpu_per_10k = guard_cpu / total_guard_requests * 10_000
    print()
    print(f"{args.rounds} rounds x {args.requests} prepared SELECTs, {args.concurrency} in flight, protocol v5, "
          f"{os.cpu_count()} CPUs (client, guard and Cassandra share them)")
    print()
    print("| target | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|")
    print(f"| direct | {d_tput:,.0f} | {d_p50:.2f} | {d_p99:.2f} |")
    print(f"| through guard | {g_tput:,.0f} | {g_p50:.2f} | {g_p99:.2f} |")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| throughput ratio (guard / direct) | {g_tput / d_tput:.2f} |")
    print(f"| p50 latency added (ms) | {g_p50 - d_p50:+.2f} |")
    print(f"| p99 latency added (ms) | {g_p99 - d_p99:+.2f} |")
    print(f"| guard CPU seconds per 10,000 requests | {cpu_per_10k:.2f} |")


if __name__ == "__main__":
    main()
