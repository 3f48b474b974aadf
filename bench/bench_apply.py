"""Benchmark: `isthmus apply` of one app to N lab clusters beside sequential `kubectl apply --server-side`.

Run with ``.venv/bin/python bench/bench_apply.py [--clusters 3 10]``. For each N a lab of N real
control planes starts; the same rendered objects (one CassandraCluster with a datacenter of two
racks per cluster) are applied twice, under two app names so neither run sees the other's objects:
 * baseline: ``kubectl --context lab-cX apply --server-side -f cX.yaml`` for X = 1..N, one after another;
 * isthmus: ``bare_apply`` (bench/_bare.py: all clusters concurrently, objects of one stage in parallel).
Then isthmus applies again with nothing changed, and the writes and requests of that no-op are counted.
Times are wall-clock to "all objects applied" (not to pods Ready). Both paths run on servers warmed by
one throwaway apply, with a pause between runs so one run's aftermath is not charged to the next, and
the CPU-seconds of the client and of every lab process are counted, so the table shows how close the
run is to what 2 cores can do at all. Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from _bare import bare_apply
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab, LabSettings, default_specs
from isthmus.lab.fleet import cassandra_document, fleet_document
from isthmus.rollout import render_app
from isthmus.spec import CassandraCluster, Fleet, load_text


def docs(n: int, app: str) -> tuple[Fleet, CassandraCluster]:
    specs = default_specs(n)
    text = yaml.safe_dump(fleet_document(specs, name="bench")) + "---\n"
    text += yaml.safe_dump(cassandra_document(specs, app))
    loaded = load_text(text)
    assert loaded.fleet is not None and isinstance(loaded.apps[0], CassandraCluster)
    return loaded.fleet, loaded.apps[0]


def lab_cpu(lab_dir: Path) -> float:
    """CPU seconds used so far by the lab's processes (its apiservers, etcds, controllers, kwoks)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if str(lab_dir) not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


@dataclass
class Run:
    seconds: float
    client_cpu: float
    lab_cpu: float


def measured(lab_dir: Path, work: Callable[[], None]) -> Run:
    lab_before, client_before, started = lab_cpu(lab_dir), os.times(), time.perf_counter()
    work()
    seconds, client_after = time.perf_counter() - started, os.times()
    client = sum(client_after[:4]) - sum(client_before[:4])  # user+system, ours and the kubectl children
    return Run(seconds, client, lab_cpu(lab_dir) - lab_before)


def kubectl_baseline(lab: Lab, n: int, folder: Path, app_name: str) -> None:
    fleet, app = docs(n, app_name)
    manifests = render_app(app, fleet, "bench-password")
    files = []
    for i in range(1, n + 1):
        path = folder / f"{app_name}-c{i}.yaml"
        path.write_text(manifests.to_yaml(f"c{i}"))
        files.append((f"c{i}", path))
    kubectl = str(lab._binaries().path("kubectl"))
    for cluster, path in files:
        subprocess.run([kubectl, "--kubeconfig", str(lab.kubeconfig), "--context", f"lab-{cluster}", "apply",
                        "--server-side", "--field-manager=bench", "-f", str(path)], check=True,
                       capture_output=True, timeout=300)


@dataclass
class IsthmusRun:
    requests_first: float = 0.0
    requests_noop: float = 0.0
    writes_noop: int = 0


async def isthmus_apply(lab: Lab, n: int, app_name: str, into: IsthmusRun, *, noop: bool = False) -> None:
    """One apply (all clusters concurrently); with ``noop`` the app is already there and nothing may change."""
    fleet, app = docs(n, app_name)
    registry = ClusterRegistry.from_fleet(fleet, lab.kubeconfig, settings=ConnectionSettings(timeout=30))
    try:
        outcomes = await bare_apply(app, fleet, registry)
        assert all(o.value is not None for o in outcomes.values()), {k: o.error for k, o in outcomes.items()}
        requests = statistics.mean(sum(registry[c].requests.values()) for c in registry)
        if noop:
            into.requests_noop, into.writes_noop = requests, sum(registry[c].writes for c in registry)
        else:
            into.requests_first = requests
    finally:
        await registry.close()


SETTLE = 8.0
"""Seconds between runs, so one run's aftermath (controllers creating pods) is not charged to the next."""


def bench(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp) / "lab"
        lab = Lab(name=f"bench-apply-{n}", specs=default_specs(n), state_dir=lab_dir,
                  settings=LabSettings(ready_timeout=300))
        lab.up()
        try:
            # Warm both paths' servers alike (first server-side apply of a kind builds its type caches).
            asyncio.run(isthmus_apply(lab, n, "warmup", IsthmusRun()))
            time.sleep(SETTLE)
            idle = measured(lab_dir, lambda: time.sleep(SETTLE))
            kubectl_runs, isthmus_runs, noop_runs, counts = [], [], [], IsthmusRun()
            for r in range(rounds):
                by_kubectl, by_isthmus = f"viakubectl{r}", f"viaisthmus{r}"
                kubectl_runs.append(measured(lab_dir, partial(kubectl_baseline, lab, n, Path(tmp), by_kubectl)))
                time.sleep(SETTLE)
                isthmus_runs.append(measured(lab_dir, lambda app=by_isthmus: asyncio.run(
                    isthmus_apply(lab, n, app, counts))))
                time.sleep(SETTLE)
                noop_runs.append(measured(lab_dir, lambda app=by_isthmus: asyncio.run(
                    isthmus_apply(lab, n, app, counts, noop=True))))
                assert counts.writes_noop == 0, f"a no-op apply wrote {counts.writes_noop} times"
        finally:
            lab.down()
    return {"n": n, "idle_cores": idle.lab_cpu / idle.seconds, "kubectl": kubectl_runs, "isthmus": isthmus_runs,
            "noop": noop_runs, "counts": counts}


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = [bench(n, args.rounds) for n in args.clusters]
    print(f"### Apply: isthmus vs sequential kubectl ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after)\n")
    print(f"Median of {args.rounds} rounds; each round applies a fresh app both ways on the same lab.\n")
    print("| clusters | kubectl --server-side, one context after another (s) | isthmus apply (s) | speed-up "
          "| no-op apply (s) | writes in no-op | API requests per cluster: first / no-op |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for res in results:
        k, i = median(res["kubectl"], "seconds"), median(res["isthmus"], "seconds")
        c = res["counts"]
        print(f"| {res['n']} | {k:.2f} | {i:.2f} | {k / i:.1f}x | {median(res['noop'], 'seconds'):.2f} "
              f"| {c.writes_noop} | {c.requests_first:.0f} / {c.requests_noop:.0f} |")
    print("\nWhere the CPU goes (CPU-seconds, medians; the lab is every apiserver, etcd, controller-manager, "
          "scheduler and kwok; the machine has "
          f"{os.cpu_count()} cores):\n")
    print("| clusters | lab idle (cores busy) | kubectl: client CPU | kubectl: lab CPU | isthmus: client CPU "
          "| isthmus: lab CPU | isthmus lower bound (s) | 5x goal (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    cores = os.cpu_count() or 1
    for res in results:
        idle = res["idle_cores"]
        i_client, i_lab = median(res["isthmus"], "client_cpu"), median(res["isthmus"], "lab_cpu")
        # Wall time cannot be shorter than the CPU work done in it spread over every core, with the
        # lab's idle load taking its share meanwhile.
        bound = (i_client + i_lab - idle * median(res["isthmus"], "seconds")) / max(cores - idle, 0.1)
        print(f"| {res['n']} | {idle:.2f} | {median(res['kubectl'], 'client_cpu'):.2f} "
              f"| {median(res['kubectl'], 'lab_cpu'):.2f} | {i_client:.2f} | {i_lab:.2f} | {bound:.2f} "
              f"| {median(res['kubectl'], 'seconds') / 5:.2f} |")
    for res in results:
        if res["n"] != 10:
            continue
        k, i = median(res["kubectl"], "seconds"), median(res["isthmus"], "seconds")
        verdict = "met" if k / i >= 5 else "not met"
        print(f"\nGoal: at 10 clusters at least 5x faster than sequential kubectl: **{verdict}** ({k / i:.1f}x). "
              "Goal: a no-op apply makes zero writes: "
              f"**{'met' if res['counts'].writes_noop == 0 else 'not met'}**.")
    print("\nThe lower bound is the CPU work of the run (isthmus and the lab's reaction: server-side apply, "
          "then controllers creating pods) divided by the cores left over by the lab's idle load. When it "
          "is above the 5x goal, no client can reach the goal on this machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
