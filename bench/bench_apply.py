"""Benchmark: `isthmus apply` of one app to N lab clusters beside sequential `kubectl apply --server-side`.

Run with ``.venv/bin/python bench/bench_apply.py [--clusters 3 10]``. For each N a lab of N real
control planes starts; the same rendered objects (one CassandraCluster with a datacenter of two
racks per cluster) are applied twice, under two app names so neither run sees the other's objects:
 * baseline: ``kubectl --context lab-cX apply --server-side -f cX.yaml`` for X = 1..N, one after another;
 * isthmus: ``apply_app`` (all clusters concurrently, objects of one stage in parallel).
Then isthmus applies again with nothing changed, and the writes and requests of that no-op are counted.
Times are wall-clock to "all objects applied" (not to pods Ready). Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab, LabSettings, default_specs
from isthmus.lab.fleet import cassandra_document, fleet_document
from isthmus.rollout import apply_app, render_app
from isthmus.spec import CassandraCluster, Fleet, load_text


def docs(n: int, app: str) -> tuple[Fleet, CassandraCluster]:
    specs = default_specs(n)
    text = yaml.safe_dump(fleet_document(specs, name="bench")) + "---\n"
    text += yaml.safe_dump(cassandra_document(specs, app))
    loaded = load_text(text)
    assert loaded.fleet is not None and isinstance(loaded.apps[0], CassandraCluster)
    return loaded.fleet, loaded.apps[0]


def kubectl_baseline(lab: Lab, n: int, folder: Path) -> float:
    fleet, app = docs(n, "viakubectl")
    manifests = render_app(app, fleet, "bench-password")
    files = []
    for i in range(1, n + 1):
        path = folder / f"c{i}.yaml"
        path.write_text(manifests.to_yaml(f"c{i}"))
        files.append((f"c{i}", path))
    kubectl = str(lab._binaries().path("kubectl"))
    started = time.perf_counter()
    for cluster, path in files:
        subprocess.run([kubectl, "--kubeconfig", str(lab.kubeconfig), "--context", f"lab-{cluster}", "apply",
                        "--server-side", "--field-manager=bench", "-f", str(path)], check=True,
                       capture_output=True, timeout=300)
    return time.perf_counter() - started


async def isthmus_runs(lab: Lab, n: int) -> tuple[float, float, int, float]:
    fleet, app = docs(n, "viaisthmus")
    registry = ClusterRegistry.from_fleet(fleet, lab.kubeconfig, settings=ConnectionSettings(timeout=30))
    try:
        started = time.perf_counter()
        first = await apply_app(app, fleet, registry)
        elapsed = time.perf_counter() - started
        assert all(o.value is not None for o in first.values()), {k: o.error for k, o in first.items()}
        before = {c: (sum(registry[c].requests.values()), registry[c].writes) for c in registry}
        started = time.perf_counter()
        await apply_app(app, fleet, registry)
        noop = time.perf_counter() - started
        requests = [sum(registry[c].requests.values()) - before[c][0] for c in registry]
        writes = sum(registry[c].writes - before[c][1] for c in registry)
        first_requests = before["c1"][0]
        return elapsed, noop, writes, (sum(requests) / len(requests)) if requests else 0.0, first_requests
    finally:
        await registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, nargs="+", default=[3, 10])
    args = parser.parse_args()
    rows = []
    for n in args.clusters:
        with tempfile.TemporaryDirectory() as tmp:
            lab = Lab(name=f"bench-apply-{n}", specs=default_specs(n), state_dir=Path(tmp) / "lab",
                      settings=LabSettings(ready_timeout=300))
            lab.up()
            try:
                baseline = kubectl_baseline(lab, n, Path(tmp))
                elapsed, noop, writes, noop_requests, first_requests = asyncio.run(isthmus_runs(lab, n))
            finally:
                lab.down()
        rows.append((n, baseline, elapsed, noop, writes, noop_requests, first_requests))
    print(f"### Apply: isthmus vs sequential kubectl ({os.cpu_count()} CPUs, Python {platform.python_version()})\n")
    print("| clusters | kubectl --server-side, one context after another (s) | isthmus apply (s) | speed-up "
          "| no-op apply (s) | writes in no-op | API requests per cluster: first apply / no-op |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, baseline, elapsed, noop, writes, noop_requests, first_requests in rows:
        print(f"| {n} | {baseline:.2f} | {elapsed:.2f} | {baseline / elapsed:.1f}x | {noop:.2f} | {writes} "
              f"| {first_requests} / {noop_requests:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
