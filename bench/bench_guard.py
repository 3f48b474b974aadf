"""Benchmark: the same client load straight to Cassandra and through the guard, in one run.

    .venv/bin/python bench/bench_guard.py [--requests 10000] [--concurrency 64] [--rounds 3]
                                          [--load 0.75] [--duration 10] [--max-in-flight 256]
                                          [--max-p99-ms 100]
                                          [--host H --port P]   # an existing node, else a lab node

Load: one cassandra-driver session per target (protocol v5, the driver's default compression),
a prepared single-partition SELECT. Two measurements, each alternating direct/guard rounds
after a warm-up of both:

1. **Closed loop, maximum throughput:** ``--concurrency`` requests always in flight,
   ``--requests`` per round. This finds what the direct path sustains on this machine.
2. **Open loop at a fixed rate:** ``--duration`` seconds per round at a rate direct sustains.
   The rate starts at ``--load`` x the direct closed-loop throughput; short direct probes
   lower it (by a fifth at a time) until direct keeps up (at least 97% of the offered rate,
   p99 at most ``--max-p99-ms``), since issuing on a schedule costs the client more than a
   closed loop does. Requests are issued on that schedule whatever the answers do (at most
   ``--max-in-flight`` outstanding; past that the schedule slips), and each latency is
   measured from the request's *scheduled* time, so queueing caused by a slow target counts
   against it (no coordinated omission). This is the goal's "load this machine's Cassandra
   sustains": throughput ratio and added p50/p99 at that rate.

The guard runs as a subprocess (``python -m isthmus.cqlguard.cli run`` with a flows file and
metrics on, as in production), so its CPU time (user + system) is read from
``/proc/<pid>/stat`` around its rounds. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
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

from isthmus.lab.processes import free_ports

POLICY = """
rules:
  - name: bench
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["benchks.*"]
"""
TARGETS = ("direct", "guard")
GOAL_RATIO = 0.90
GOAL_ADDED_P99_MS = 0.3


@dataclass
class RoundResult:
    target: str
    requests: int
    seconds: float
    latencies_ms: list[float]
    guard_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds


def pct(data: list[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]




def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _session(host: str, port: int) -> Any:
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=30.0)
    cluster = Cluster(
        contact_points=[host], port=port, protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}
    )
    return cluster.connect()


class _Recorder:
    """Collects completions from the driver's I/O thread."""

    def __init__(self, expected: int, window: int) -> None:
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self.slots = threading.BoundedSemaphore(window)
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._left = expected

    def issue(self, session: Any, statement: Any, key: int, started: float) -> None:
        future = session.execute_async(statement, (key,))
        future.add_callbacks(lambda _rows: self._finished(started), lambda exc: self._failed(exc, started))

    def _finished(self, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        with self._lock:
            self.latencies.append(elapsed)
            self._left -= 1
            if self._left == 0:
                self.done.set()
        self.slots.release()

    def _failed(self, exc: BaseException, started: float) -> None:
        self.errors.append(exc)
        self._finished(started)


def closed_loop(session: Any, statement: Any, *, requests: int, concurrency: int, target: str) -> RoundResult:
    """Keep ``concurrency`` requests in flight until ``requests`` have completed."""
    rec = _Recorder(requests, concurrency)
    t0 = time.perf_counter()
    for i in range(requests):
        rec.slots.acquire()
        rec.issue(session, statement, i % 100, time.perf_counter())
    rec.done.wait()
    seconds = time.perf_counter() - t0
    if rec.errors:
        raise RuntimeError(f"{len(rec.errors)} requests failed against {target}: {rec.errors[0]!r}")
    return RoundResult(target, requests, seconds, rec.latencies)


def open_loop(session: Any, statement: Any, *, rate: float, seconds: float, window: int, target: str) -> RoundResult:
    """Issue ``rate`` requests a second for ``seconds``; latency counts from each scheduled time."""
    requests = max(1, int(rate * seconds))
    interval = 1.0 / rate
    rec = _Recorder(requests, window)
    t0 = time.perf_counter()
    for i in range(requests):
        scheduled = t0 + i * interval
        ahead = scheduled - time.perf_counter()
        if ahead > 0.0005:
            time.sleep(ahead)
        rec.slots.acquire()  # the window is full: the schedule slips, and the latency shows it
        rec.issue(session, statement, i % 100, scheduled)
    rec.done.wait()
    elapsed = time.perf_counter() - t0
    if rec.errors:
        raise RuntimeError(f"{len(rec.errors)} requests failed against {target}: {rec.errors[0]!r}")
    return RoundResult(target, requests, elapsed, rec.latencies)


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
def guard_process(upstream: tuple[str, int], workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    port, metrics_port = free_ports(2)
    argv = [
        sys.executable, "-m", "isthmus.cqlguard.cli", "run",
        "--listen", f"127.0.0.1:{port}", "--upstream", f"{upstream[0]}:{upstream[1]}",
        "--policy", str(policy), "--flows", str(workdir / "flows.jsonl"),
        "--metrics", f"127.0.0.1:{metrics_port}", "--log-level", "warning",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"the guard did not start: {line}{proc.stderr.read().decode()}")
    print(line.strip(), file=sys.stderr)
    loop = line.rsplit("event loop: ", 1)[-1].rstrip(")\n ") if "event loop: " in line else "unknown"
    try:
        yield proc, port, loop
    finally:
        proc.terminate()
        proc.wait(10)


def _median_tput(rounds: list[RoundResult]) -> float:
    return statistics.median(r.throughput for r in rounds)


def _latencies(rounds: list[RoundResult]) -> list[float]:
    return [x for r in rounds for x in r.latencies_ms]


def _round_pct(rounds: list[RoundResult], q: float) -> float:
    """The median over rounds of each round's percentile: one noisy round (a neighbour's burst
    on this shared machine) does not decide the figure."""
    return statistics.median(pct(r.latencies_ms, q) for r in rounds)


def _per_round(rounds: list[RoundResult], q: float) -> str:
    return " / ".join(f"{pct(r.latencies_ms, q):.2f}" for r in rounds)


def _cpu_per_10k(rounds: list[RoundResult]) -> float:
    requests = sum(r.requests for r in rounds)
    return sum(r.guard_cpu_s for r in rounds) / requests * 10_000 if requests else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="closed loop: requests per round")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop: requests in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target, per measurement")
    parser.add_argument("--load", type=float, default=0.75, help="open loop: fraction of direct max throughput")
    parser.add_argument("--duration", type=float, default=10.0, help="open loop: seconds per round")
    parser.add_argument("--max-in-flight", type=int, default=256, help="open loop: outstanding requests at most")
    parser.add_argument("--max-p99-ms", type=float, default=100.0, help="open loop: direct's p99 at a sustained rate")
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

    closed: dict[str, list[RoundResult]] = {t: [] for t in TARGETS}
    fixed: dict[str, list[RoundResult]] = {t: [] for t in TARGETS}
    loads: list[str] = [_loadavg()]
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
        with guard_process(upstream, Path(tmp)) as (proc, port, loop_kind):
            sessions = {"direct": setup, "guard": _session("127.0.0.1", port)}
            statements = {name: s.prepare("SELECT v FROM benchks.kv WHERE k = ?") for name, s in sessions.items()}

            def measured(name: str, run: Any) -> RoundResult:
                cpu0 = _cpu_seconds(proc.pid)
                result: RoundResult = run()
                result.guard_cpu_s = _cpu_seconds(proc.pid) - cpu0 if name == "guard" else 0.0
                print(f"  {name}: {result.throughput:,.0f} req/s, p99 {pct(result.latencies_ms, 0.99):.2f} ms",
                      file=sys.stderr)
                return result

            for name in TARGETS:  # warm-up: JIT, caches, connections
                closed_loop(sessions[name], statements[name], requests=min(args.requests, 3000),
                            concurrency=args.concurrency, target=name)
            print("closed loop ...", file=sys.stderr)
            for _ in range(args.rounds):
                for name in TARGETS:
                    closed[name].append(measured(name, lambda n=name: closed_loop(
                        sessions[n], statements[n], requests=args.requests, concurrency=args.concurrency, target=n)))
            loads.append(_loadavg())
            rate = args.load * _median_tput(closed["direct"])
            for _ in range(6):  # find a rate direct sustains (see the module docstring)
                probe = open_loop(sessions["direct"], statements["direct"], rate=rate, seconds=min(args.duration, 4.0),
                                  window=args.max_in_flight, target="direct")
                p99 = pct(probe.latencies_ms, 0.99)
                print(f"  probe at {rate:,.0f} req/s: direct {probe.throughput:,.0f} req/s, p99 {p99:.1f} ms",
                      file=sys.stderr)
                if probe.throughput >= 0.97 * rate and p99 <= args.max_p99_ms:
                    break
                rate *= 0.8
            print(f"open loop at {rate:,.0f} req/s ...", file=sys.stderr)
            for _ in range(args.rounds):
                for name in TARGETS:
                    fixed[name].append(measured(name, lambda n=name: open_loop(
                        sessions[n], statements[n], rate=rate, seconds=args.duration, window=args.max_in_flight,
                        target=n)))
            loads.append(_loadavg())
            for s in sessions.values():
                s.cluster.shutdown()

    d_max, g_max = _median_tput(closed["direct"]), _median_tput(closed["guard"])
    d_fix, g_fix = _median_tput(fixed["direct"]), _median_tput(fixed["guard"])
    d_lat, g_lat = _latencies(fixed["direct"]), _latencies(fixed["guard"])
    dc_lat, gc_lat = _latencies(closed["direct"]), _latencies(closed["guard"])
    added_p50 = _round_pct(fixed["guard"], 0.50) - _round_pct(fixed["direct"], 0.50)
    added_p99 = _round_pct(fixed["guard"], 0.99) - _round_pct(fixed["direct"], 0.99)
    ratio = g_fix / d_fix
    sustained = d_fix >= 0.95 * rate
    met = sustained and ratio >= GOAL_RATIO and added_p99 <= GOAL_ADDED_P99_MS

    print(f"### cqlguard: prepared SELECT, protocol v5, direct vs through the guard ({loop_kind})\n")
    print(f"{os.cpu_count()} CPUs shared by the client, the guard and Cassandra; load average "
          f"{' -> '.join(loads)} (start, after the closed loop, at the end). {args.rounds} rounds per target, "
          "alternating.\n")
    print(f"**At a fixed rate** of {rate:,.0f} req/s ({rate / d_max:.0%} of direct's closed-loop maximum, the "
          f"highest rate tried from {args.load:.0%} down that direct sustained with p99 <= {args.max_p99_ms:g} ms), "
          f"open loop, {args.duration:g} s per round, latency from each request's scheduled time (p50, p99: all "
          "rounds' requests together; then each round's p99):\n")
    print("| target | req/s | p50 (ms) | p99 (ms) | p99 per round (ms) |")
    print("|---|---:|---:|---:|---:|")
    for label, name, tput, lat in (("direct", "direct", d_fix, d_lat), ("through the guard", "guard", g_fix, g_lat)):
        rounds_p99 = _per_round(fixed[name], 0.99)
        print(f"| {label} | {tput:,.0f} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | {rounds_p99} |")
    print()
    print(f"**Closed loop, maximum throughput:** {args.concurrency} in flight, {args.requests:,} requests per round:\n")
    print("| target | req/s | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|")
    print(f"| direct | {d_max:,.0f} | {pct(dc_lat, 0.5):.2f} | {pct(dc_lat, 0.99):.2f} |")
    print(f"| through the guard | {g_max:,.0f} | {pct(gc_lat, 0.5):.2f} | {pct(gc_lat, 0.99):.2f} |")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| throughput ratio at the fixed rate (guard / direct) | {ratio:.2f} |")
    print(f"| p50 latency added at the fixed rate (ms; median of rounds) | {added_p50:+.2f} |")
    print(f"| p99 latency added at the fixed rate (ms; median of rounds) | {added_p99:+.2f} |")
    print(f"| throughput ratio, closed loop (guard / direct) | {g_max / d_max:.2f} |")
    print(f"| guard CPU seconds per 10,000 requests, fixed rate | {_cpu_per_10k(fixed['guard']):.2f} |")
    print(f"| guard CPU seconds per 10,000 requests, closed loop | {_cpu_per_10k(closed['guard']):.2f} |")
    print()
    print(f"Goal: at least {GOAL_RATIO:.0%} of direct throughput and at most {GOAL_ADDED_P99_MS} ms added p99 at the "
          f"fixed rate: **{'met' if met else 'not met'}** in this run.")
    if not sustained:
        print(f"\nDirect did not sustain the offered {rate:,.0f} req/s in this run ({d_fix:,.0f} req/s): the machine "
              "was busier than during the closed loop, so latencies at this rate measure queueing, not the guard.")


if __name__ == "__main__":
    main()
