"""Benchmark: the same client load straight to Cassandra and through the guard, in one run.

    .venv/bin/python bench/bench_guard.py [--requests 10000] [--concurrency 64] [--closed-rounds 3]
                                          [--loads 0.2 0.5] [--rounds 20] [--duration 3]
                                          [--max-in-flight 256] [--no-pin] [--placement sidecar|split]
                                          [--host H --port P]   # an existing node, else a lab node

Load: one cassandra-driver session per target (protocol v5, the driver's default compression),
a prepared single-partition SELECT. After a warm-up of both targets:

1. **Closed loop, maximum throughput:** ``--concurrency`` requests always in flight,
   ``--requests`` per round, direct and guarded rounds alternating. This finds what the direct
   path sustains on this machine (its maximum, the reference for the fixed rates).
2. **Open loop at fixed rates:** for each of ``--loads`` (fractions of direct's maximum: 20% is the
   light load, 50% the moderate one) ``--rounds`` short rounds of ``--duration`` seconds per target,
   direct and guarded alternating (which one goes first alternates too), so a neighbour's burst
   hits both sides alike. Requests are issued on the schedule whatever the answers do (at most
   ``--max-in-flight`` outstanding; past that the schedule slips), and each latency is measured
   from the request's *scheduled* time (no coordinated omission). Each round pair gives one
   difference of p50 and of p99 (guard minus direct); the figures are the median of those
   differences and their spread (the middle half: 25th to 75th percentile of the pairs).

**Pinning:** with ``os.sched_setaffinity`` (what ``taskset`` does), every thread of Cassandra, of the
guard and of this client goes to its own core when the machine has three. On two cores two of them
must share one, and which two decides what is measured. By default (``--placement sidecar``) the
client gets a core of its own and the guard shares the other with Cassandra, as in production: the
guard is a sidecar in Cassandra's pod, on Cassandra's machine, and the client is on another machine.
Then both paths cross between cores twice per request (direct: client to Cassandra and back;
guarded: client to guard and back, the guard's hop to Cassandra staying on its core), so the added
latency is the guard's own work and its loopback hop. ``--placement split`` gives the guard the core
of its own and has the client share with Cassandra (what runs before 2026-12-02 did): every hop of
the guarded path then crosses cores, where the direct path crosses none, which charges the guard for
cross-core wake-ups a sidecar does not pay. ``--no-pin`` leaves scheduling to the kernel.

The guard runs as a subprocess (``python -m isthmus.cqlguard.cli run`` with a flows file and
metrics on, as in production), so its CPU time (user + system) is read from
``/proc/<pid>/stat`` around its rounds: the guard's CPU per request. Prints a markdown section.
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
#: added p99 allowed at each fixed load (fraction of direct's maximum -> ms)
GOAL_ADDED_P99_MS = {0.2: 0.3, 0.5: 1.0}


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
def lab_node() -> Iterator[tuple[tuple[str, int], int]]:
    from isthmus.lab.cassandra import claim_addresses, prepare_node, start_node

    with tempfile.TemporaryDirectory(prefix="bench-guard-") as tmp, claim_addresses(1) as claim:
        [address] = claim.addresses
        spec = prepare_node(
            name="bench", address=address, node_dir=Path(tmp) / "node", cluster_name="bench-guard", seeds=(address,)
        )
        print(f"starting a lab Cassandra on {address} ...", file=sys.stderr)
        node = start_node(spec)
        try:
            yield (node.host, node.port), node.pid
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


def _cpu_us_per_request(rounds: list[RoundResult]) -> float:
    requests = sum(r.requests for r in rounds)
    return sum(r.guard_cpu_s for r in rounds) / requests * 1e6 if requests else float("nan")


def _spread(values: list[float]) -> tuple[float, float, float]:
    """Median and the middle half (25th and 75th percentile) of ``values``."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return statistics.median(values), q[0], q[2]


def _tasks(pid: int) -> list[int]:
    """Every thread of ``pid`` and of its descendants (a JVM started through a script is a child)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            out += [int(t.name) for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
        todo += children.get(p, [])
    return out


def pin(pid: int, cpus: set[int]) -> int:
    """Put every thread of ``pid`` (and its descendants) on ``cpus``; threads made later inherit it. Returns
    how many threads were pinned."""
    n = 0
    for tid in _tasks(pid):
        try:
            os.sched_setaffinity(tid, cpus)
            n += 1
        except OSError:
            pass
    return n


def placement(cores: int, kind: str = "sidecar") -> dict[str, set[int]] | None:
    """Which cores Cassandra, the guard and the client get (None: one core, nothing to separate); on two
    cores ``kind`` says which two share one (see the module docstring)."""
    if cores >= 3:
        return {"cassandra": {0}, "guard": {1}, "client": {2}}
    if cores == 2:
        if kind == "split":
            return {"cassandra": {0}, "guard": {1}, "client": {0}}
        return {"cassandra": {1}, "guard": {1}, "client": {0}}
    return None


@dataclass
class FixedLoad:
    load: float
    rate: float
    pairs: list[tuple[RoundResult, RoundResult]]  # (direct, guard) per round

    def diffs(self, q: float) -> list[float]:
        return [pct(g.latencies_ms, q) - pct(d.latencies_ms, q) for d, g in self.pairs]

    @property
    def ratio(self) -> float:
        return _median_tput([g for _, g in self.pairs]) / _median_tput([d for d, _ in self.pairs])

    @property
    def sustained(self) -> bool:
        return _median_tput([d for d, _ in self.pairs]) >= 0.95 * self.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000, help="closed loop: requests per round")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop: requests in flight")
    parser.add_argument("--closed-rounds", type=int, default=3, help="closed loop: rounds per target")
    parser.add_argument("--loads", type=float, nargs="+", default=sorted(GOAL_ADDED_P99_MS),
                        help="open loop: fractions of direct's maximum throughput")
    parser.add_argument("--rounds", type=int, default=20, help="open loop: rounds per target, per load")
    parser.add_argument("--duration", type=float, default=3.0, help="open loop: seconds per round")
    parser.add_argument("--max-in-flight", type=int, default=256, help="open loop: outstanding requests at most")
    parser.add_argument("--no-pin", action="store_true", help="do not pin Cassandra, the guard and the client")
    parser.add_argument("--placement", choices=("sidecar", "split"), default="sidecar",
                        help="on two cores: the guard shares Cassandra's core (sidecar) or has its own (split)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=9042)
    args = parser.parse_args()
    ncores = len(os.sched_getaffinity(0))
    cores = placement(ncores, args.placement) if not args.no_pin else None
    pinned: list[str] = []
    if cores is not None:
        pin(os.getpid(), cores["client"])
        pinned.append(f"client on core {min(cores['client'])}")

    @contextmanager
    def node() -> Iterator[tuple[str, int]]:
        if args.host:
            yield args.host, args.port
        else:
            with lab_node() as (endpoint, pid):
                if cores is not None:
                    n = pin(pid, cores["cassandra"])
                    pinned.append(f"Cassandra ({n} threads) on core {min(cores['cassandra'])}")
                yield endpoint

    closed: dict[str, list[RoundResult]] = {t: [] for t in TARGETS}
    fixed: list[FixedLoad] = []
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
            if cores is not None:
                n = pin(proc.pid, cores["guard"])
                pinned.append(f"the guard ({n} threads) on core {min(cores['guard'])}")
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
            for _ in range(args.closed_rounds):
                for name in TARGETS:
                    closed[name].append(measured(name, lambda n=name: closed_loop(
                        sessions[n], statements[n], requests=args.requests, concurrency=args.concurrency, target=n)))
            loads.append(_loadavg())
            d_max = _median_tput(closed["direct"])
            for load in args.loads:
                rate = load * d_max
                print(f"open loop at {rate:,.0f} req/s ({load:.0%}) ...", file=sys.stderr)
                level = FixedLoad(load, rate, [])
                for i in range(args.rounds):
                    order = TARGETS if i % 2 == 0 else TARGETS[::-1]
                    got = {n: measured(n, lambda n=n, r=rate: open_loop(
                        sessions[n], statements[n], rate=r, seconds=args.duration, window=args.max_in_flight,
                        target=n)) for n in order}
                    level.pairs.append((got["direct"], got["guard"]))
                fixed.append(level)
                loads.append(_loadavg())
            for s in sessions.values():
                s.cluster.shutdown()

    d_max, g_max = _median_tput(closed["direct"]), _median_tput(closed["guard"])
    dc_lat, gc_lat = _latencies(closed["direct"]), _latencies(closed["guard"])

    print(f"### cqlguard: prepared SELECT, protocol v5, direct vs through the guard ({loop_kind})\n")
    where = {"sidecar": " (placement `sidecar`: the guard shares Cassandra's core, as a sidecar shares its machine;"
                         " the client, elsewhere in production, has its own)",
             "split": " (placement `split`: the guard has a core of its own; the client shares Cassandra's)"}
    print(f"{os.cpu_count()} CPUs; " + ("; ".join(pinned) + (where[args.placement] if ncores == 2 else "")
                                         if pinned else "not pinned") + f". Load average "
          f"{' -> '.join(loads)} (start, after the closed loop, after each fixed load).\n")
    print(f"**Closed loop, maximum throughput:** {args.concurrency} in flight, {args.requests:,} requests per round, "
          f"{args.closed_rounds} rounds per target:\n")
    print("| target | req/s | p50 (ms) | p99 (ms) | guard CPU per request (µs) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| direct | {d_max:,.0f} | {pct(dc_lat, 0.5):.2f} | {pct(dc_lat, 0.99):.2f} | - |")
    print(f"| through the guard | {g_max:,.0f} | {pct(gc_lat, 0.5):.2f} | {pct(gc_lat, 0.99):.2f} "
          f"| {_cpu_us_per_request(closed['guard']):.0f} |")
    print(f"\nThroughput ratio, closed loop (guard / direct): {g_max / d_max:.2f}.\n")
    print(f"**Open loop at fixed rates:** {args.rounds} rounds of {args.duration:g} s per target and load, direct and "
          "guarded alternating; latency from each request's scheduled time. Added latency: the median over round "
          "pairs of (guard − direct), with the middle half of the pairs in brackets.\n")
    print("| load | rate (req/s) | direct p50 / p99 (ms, median of rounds) | added p50 (ms) | added p99 (ms) "
          "| throughput ratio | guard CPU per request (µs) |")
    print("|---:|---:|---|---|---|---:|---:|")
    verdicts = []
    for level in fixed:
        direct = [d for d, _ in level.pairs]
        d50 = statistics.median(pct(r.latencies_ms, 0.5) for r in direct)
        d99 = statistics.median(pct(r.latencies_ms, 0.99) for r in direct)
        m50, lo50, hi50 = _spread(level.diffs(0.5))
        m99, lo99, hi99 = _spread(level.diffs(0.99))
        print(f"| {level.load:.0%} | {level.rate:,.0f} | {d50:.2f} / {d99:.2f} | {m50:+.3f} [{lo50:+.3f}, {hi50:+.3f}] "
              f"| {m99:+.3f} [{lo99:+.3f}, {hi99:+.3f}] | {level.ratio:.2f} "
              f"| {_cpu_us_per_request([g for _, g in level.pairs]):.0f} |")
        goal = GOAL_ADDED_P99_MS.get(level.load)
        if goal is not None:
            met = level.sustained and level.ratio >= GOAL_RATIO and m99 <= goal
            verdicts.append(
                f"- Goal at {level.load:.0%} load: added p99 at most {goal:g} ms and at least {GOAL_RATIO:.0%} of "
                f"direct's throughput: **{'met' if met else 'not met'}** (added p99 {m99:+.3f} ms, ratio "
                f"{level.ratio:.2f}{'' if level.sustained else '; direct did not sustain the rate'}).")
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
