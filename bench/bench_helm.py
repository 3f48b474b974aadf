"""Benchmark: Bitnami's etcd chart released to 3 and 10 clusters, `isthmus apply` against `helm upgrade --install`.

Run with ``.venv/bin/python bench/bench_helm.py [--clusters 3 10] [--rounds 1]``.

For each N a lab of N clusters starts (real kube-apiserver, controller-manager and scheduler; kwok's
pods, which become Ready). Each round, under fresh release names, the chart (unmodified, from
``../shared/charts/etcd``) goes out two ways, both waiting until the release is healthy:

* **helm, context by context**: ``helm upgrade --install --wait --kube-context lab-cX`` for X = 1..N,
  one after another: what a team without Isthmus does (no gates, no fleet-wide history or rollback);
* **isthmus**: :func:`isthmus.rollout.render_release` (``helm template`` twice per cluster, with that
  cluster's capabilities) and :func:`isthmus.rollout.apply_rollout` with ``canary: c1`` then
  ``maxConcurrentClusters: N`` (the canary alone, then every other cluster at once, gated); then the
  same apply again with nothing changed (``unless_settled``), whose writes are counted.

Times are wall-clock; CPU-seconds of the client (this process and its helm children) and of the lab
show what bounds each way. Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from _measure import CORES, Run, load_avg, measured
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab, LabSettings, PodMode, default_specs
from isthmus.lab.binaries import ensure_helm
from isthmus.lab.fleet import fleet_document
from isthmus.rollout import RolloutOptions, apply_rollout, render_release
from isthmus.spec import ChartRelease, Fleet, bind_release, load_text

ETCD = Path(__file__).resolve().parents[1].parent / "shared" / "charts" / "etcd"
if not ETCD.is_dir():
    ETCD = Path("/work/shared/charts/etcd")


def release(n: int, name: str) -> tuple[Fleet, ChartRelease]:
    doc = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "ChartRelease", "metadata": {"name": name},
           "spec": {"chart": str(ETCD), "namespace": name,
                    "rollout": {"canary": "c1", "maxConcurrentClusters": max(1, n - 1)}}}
    loaded = load_text(yaml.safe_dump(fleet_document(default_specs(n), name="bench")) + "---\n" + yaml.safe_dump(doc))
    assert loaded.fleet is not None and isinstance(loaded.apps[0], ChartRelease)
    return loaded.fleet, bind_release(loaded.apps[0], loaded.fleet)


def helm_each(lab: Lab, helm: Path, n: int, name: str, home: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(lab.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
    for i in range(1, n + 1):
        subprocess.run([str(helm), "upgrade", "--install", name, str(ETCD), "--namespace", name, "--create-namespace",
                        "--kube-context", f"lab-c{i}", "--wait", "--timeout", "10m"], check=True, capture_output=True,
                       env=env, timeout=900)


async def isthmus_release(lab: Lab, n: int, name: str, counts: dict[str, Any], *, noop: bool = False) -> None:
    fleet, rel = release(n, name)
    registry = ClusterRegistry.from_fleet(fleet, lab.kubeconfig, settings=ConnectionSettings(timeout=30))
    try:
        t0 = time.perf_counter()
        manifests = await render_release(rel, fleet, registry)
        counts["render seconds" + (" (no-op)" if noop else "")] = time.perf_counter() - t0
        result = await apply_rollout(rel, fleet, registry, RolloutOptions(poll_interval=0.5, unless_settled=noop),
                                     rendered=manifests)
        assert result.ok, result.state.message
        if noop:
            counts["writes in no-op"] = sum(registry[c].writes for c in registry)
    finally:
        await registry.close()


def bench(n: int, rounds: int, helm: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "runs": {"helm, context by context": [], "isthmus": [], "isthmus no-op": []},
                           "counts": {}, "load": load_avg()}
    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp) / "lab"
        lab = Lab(name=f"bench-helm-{n}", specs=default_specs(n), state_dir=lab_dir,
                  settings=LabSettings(ready_timeout=300, pods=PodMode.SIMULATED))
        lab.up()
        try:
            for r in range(rounds):
                runs: dict[str, list[Run]] = out["runs"]
                runs["helm, context by context"].append(
                    measured(lab_dir, lambda r=r: helm_each(lab, helm, n, f"h{r}", Path(tmp))))
                runs["isthmus"].append(measured(lab_dir, lambda r=r: asyncio.run(
                    isthmus_release(lab, n, f"i{r}", out["counts"]))))
                runs["isthmus no-op"].append(measured(lab_dir, lambda r=r: asyncio.run(
                    isthmus_release(lab, n, f"i{r}", out["counts"], noop=True))))
        finally:
            lab.down()
    out["load"] += f" / {load_avg()}"
    return out


def report(results: list[dict[str, Any]], rounds: int) -> None:
    print(f"### Chart release: isthmus vs helm upgrade --install, context by context ({CORES} CPUs)\n")
    print(f"Bitnami etcd (unmodified), lab clusters with kwok pods; median of {rounds} round(s).\n")
    print("| clusters | way | wall (s) | client CPU | lab CPU | CPU bound (s) | bound by |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for res in results:
        for way, runs in res["runs"].items():
            mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
            bound = mid.bound_by if mid.bound_by == "CPU" else "waiting (readiness polls, one context after another)"
            print(f"| {res['n']} | {way} | {mid.seconds:.2f} | {mid.client_cpu:.2f} | {mid.lab_cpu:.2f} "
                  f"| {mid.cpu_bound:.2f} | {bound} |")
    for res in results:
        counts = ", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}" for k, v in res["counts"].items())
        print(f"\n{res['n']} clusters: {counts}; load avg before / after: {res['load']}")
        helm_s = statistics.median(r.seconds for r in res["runs"]["helm, context by context"])
        ist_s = statistics.median(r.seconds for r in res["runs"]["isthmus"])
        print(f"isthmus / helm wall time: {ist_s / helm_s:.2f}")
    print("\nWhat bounds each way: `helm upgrade --install --wait` spends most of its wall time waiting, one"
          " context after another (its readiness polls); Isthmus renders with `helm template` (twice per distinct"
          " values and capabilities, so members with the same values share the runs; the render seconds above),"
          " then applies to every cluster of a wave at once, so its time is the render's CPU plus one wave's wait"
          " per wave (canary, then the rest).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    helm = ensure_helm()
    os.environ.setdefault("ISTHMUS_HELM", str(helm))
    results = [bench(n, args.rounds, helm) for n in args.clusters]
    report(results, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
