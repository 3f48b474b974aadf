"""Benchmark: `isthmus apply` of one app to 1, 3 and 10 far-away clusters, against `kubectl apply --server-side`.

Run with ``.venv/bin/python bench/bench_apply.py [--clusters 1 3 10] [--rounds 3] [--profile azure-east-us]``.

For each N a lab of N **minimal** clusters starts (only etcd and kube-apiserver: the API servers
hold the objects and no controller reacts to them, so neither client pays for the lab's
controllers) with every context **through Toxiproxy** and the RTT profile's round trips (cluster i
gets the profile's i-th region: 21 to 229 ms away from East US for azure-east-us). The same
rendered objects (a CassandraCluster with a datacenter of two racks per cluster) go out three
ways, each round under fresh app names, the three ways alternating within each round:

* **kubectl, sequential**: ``kubectl --context lab-cX apply --server-side -f cX.yaml`` for X = 1..N,
  one after another (a shell loop over contexts);
* **kubectl, parallel**: the same N commands all started at once, then waited for (``&`` and ``wait``);
* **isthmus**: ``bare_apply`` (bench/_bare.py: every cluster concurrently, the objects of one stage in parallel), in
  this process; then the same apply again with nothing changed (the no-op), whose writes are counted.

Before the rounds every path is warmed once (kubectl's discovery cache in a private ``--cache-dir``,
Isthmus's first server-side apply of each kind). Times are wall-clock to "all objects applied".
Each run records the CPU-seconds of the client (this process and the kubectl children), of the lab
(etcd and kube-apiserver) and of Toxiproxy, and the load average before and after each lab.
At N = 1 Isthmus is also timed with the one cluster as far as the profile's farthest member: the
cost of distance is the 10-cluster time over that. Prints markdown.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from _bare import bare_apply
from _measure import CORES, Run, load_avg, measured, pid_cpu
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab, LabSettings, default_specs
from isthmus.lab.apiclient import LabApi
from isthmus.lab.components import ClusterPaths
from isthmus.lab.fleet import cassandra_document, fleet_document
from isthmus.lab.latency import Link, ProxyState, rtt_profile
from isthmus.rollout import render_app
from isthmus.spec import CassandraCluster, Fleet, load_text


def docs(n: int, app: str) -> tuple[Fleet, CassandraCluster]:
    specs = default_specs(n)
    text = yaml.safe_dump(fleet_document(specs, name="bench")) + "---\n"
    text += yaml.safe_dump(cassandra_document(specs, app))
    loaded = load_text(text)
    assert loaded.fleet is not None and isinstance(loaded.apps[0], CassandraCluster)
    return loaded.fleet, loaded.apps[0]


class Kubectl:
    """The baseline: rendered per-cluster files, applied by kubectl one context after another or all at once."""

    def __init__(self, lab: Lab, n: int, folder: Path) -> None:
        self.lab, self.n, self.folder = lab, n, folder
        self.exe = str(lab._binaries().path("kubectl"))
        self.cache = folder / "kubectl-cache"

    def _commands(self, app_name: str) -> list[list[str]]:
        fleet, app = docs(self.n, app_name)
        manifests = render_app(app, fleet, "bench-password")
        out = []
        for i in range(1, self.n + 1):
            path = self.folder / f"{app_name}-c{i}.yaml"
            path.write_text(manifests.to_yaml(f"c{i}"))
            out.append([self.exe, f"--kubeconfig={self.lab.kubeconfig}", f"--context=lab-c{i}",
                        f"--cache-dir={self.cache}", "apply", "--server-side", "--field-manager=bench",
                        "-f", str(path)])
        return out

    def sequential(self, app_name: str) -> None:
        for cmd in self._commands(app_name):
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)

    def parallel(self, app_name: str) -> None:
        procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for cmd in self._commands(app_name)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            if p.returncode != 0:
                raise SystemExit(f"bench: kubectl failed: {err.decode(errors='replace')}")


@dataclass
class Counts:
    requests_first: float = 0.0
    requests_noop: float = 0.0
    writes_noop: int = 0


async def isthmus_apply(lab: Lab, n: int, app_name: str, into: Counts, *, noop: bool = False) -> None:
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


@dataclass
class Result:
    n: int
    rtts: list[int]
    load: str = ""
    runs: dict[str, list[Run]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    proxy_us_per_request: dict[str, float] = field(default_factory=dict)
    #: cores the idle lab keeps busy (etcd and kube-apiserver with no client)
    idle_cores: float = 0.0

    def median(self, way: str, attr: str = "seconds") -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[way])


def proxy_cost(lab: Lab, requests: int = 400) -> dict[str, float]:
    """Toxiproxy's CPU per proxied request (GET /version, no toxics): keep-alive, and a new TLS connection each."""
    proxy = ProxyState.load(lab.state_dir)
    assert proxy is not None
    pki = ClusterPaths(lab.state_dir / "clusters" / "c1").pki
    saved = lab.link("c1")
    lab.set_link("c1", Link())
    out = {}
    try:
        for kind, count, fresh in (("keep-alive", requests, False), ("a new connection each", requests // 4, True)):
            before = pid_cpu(proxy.process.pid)
            api = LabApi(proxy.server("c1"), pki.ca.cert, pki.clients["admin"])
            for _ in range(count):
                if fresh:
                    api.close()
                    api = LabApi(proxy.server("c1"), pki.ca.cert, pki.clients["admin"])
                assert api.status("/version") == 200
            api.close()
            out[kind] = (pid_cpu(proxy.process.pid) - before) / count * 1e6
    finally:
        lab.set_link("c1", saved)
    return out


SETTLE = 1.0
"""Seconds between runs (minimal clusters have no controllers whose aftermath needs to die down)."""


def bench(n: int, rounds: int, profile_name: str) -> Result:
    profile = rtt_profile(profile_name)
    res = Result(n=n, rtts=[profile.rtt_ms(i) for i in range(n)])
    before = load_avg()
    with tempfile.TemporaryDirectory() as tmp:
        lab_dir = Path(tmp) / "lab"
        lab = Lab(name=f"bench-apply-{n}", specs=default_specs(n), state_dir=lab_dir,
                  settings=LabSettings(ready_timeout=300, minimal=True, rtt_profile=profile_name))
        lab.up()
        try:
            kubectl = Kubectl(lab, n, Path(tmp))
            kubectl.parallel("warmup-kubectl")  # discovery cached, first apply of each kind done
            asyncio.run(isthmus_apply(lab, n, "warmup-isthmus", Counts()))
            idle = measured(lab_dir, lambda: time.sleep(5))
            res.idle_cores = (idle.lab_cpu + idle.proxy_cpu) / idle.seconds
            for way in ("kubectl sequential", "kubectl parallel", "isthmus", "isthmus no-op"):
                res.runs[way] = []
            for r in range(rounds):
                time.sleep(SETTLE)
                res.runs["kubectl sequential"].append(measured(lab_dir, lambda r=r: kubectl.sequential(f"seq{r}")))
                time.sleep(SETTLE)
                res.runs["kubectl parallel"].append(measured(lab_dir, lambda r=r: kubectl.parallel(f"par{r}")))
                time.sleep(SETTLE)
                res.runs["isthmus"].append(measured(lab_dir, lambda r=r: asyncio.run(
                    isthmus_apply(lab, n, f"ist{r}", res.counts))))
                time.sleep(SETTLE)
                res.runs["isthmus no-op"].append(measured(lab_dir, lambda r=r: asyncio.run(
                    isthmus_apply(lab, n, f"ist{r}", res.counts, noop=True))))
                assert res.counts.writes_noop == 0, f"a no-op apply wrote {res.counts.writes_noop} times"
            if n == 1:
                farthest = max(profile.rtt_ms(i) for i in range(10))
                lab.set_link("c1", Link(rtt_ms=farthest))
                res.runs["isthmus, farthest"] = []
                for r in range(rounds):
                    time.sleep(SETTLE)
                    res.runs["isthmus, farthest"].append(measured(lab_dir, lambda r=r: asyncio.run(
                        isthmus_apply(lab, n, f"far{r}", Counts()))))
                res.rtts.append(farthest)
                res.proxy_us_per_request = proxy_cost(lab)
        finally:
            lab.down()
    res.load = f"{before} / {load_avg()}"
    return res


def report(results: list[Result], rounds: int, profile_name: str) -> None:
    profile = rtt_profile(profile_name)
    print(f"### Apply: isthmus vs kubectl, clusters far away ({CORES} CPUs)\n")
    print(f"Minimal lab clusters (etcd and kube-apiserver only), every context through Toxiproxy with the "
          f"`{profile.name}` profile: round trips from {profile.origin} to "
          + ", ".join(f"{r} ({ms} ms)" for r, ms in profile.regions)
          + f"; cluster i is the i-th. Source: {profile.source}. Median of {rounds} rounds, the ways "
          "alternating within each round, fresh app names each time.\n")
    print("| clusters | RTTs (ms) | kubectl sequential (s) | kubectl parallel (s) | isthmus (s) "
          "| vs sequential | vs parallel | no-op (s) | writes in no-op | requests per cluster: first / no-op "
          "| load avg 1/5/15 (before / after) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for res in results:
        seq, par, ist = res.median("kubectl sequential"), res.median("kubectl parallel"), res.median("isthmus")
        rtts = f"{min(res.rtts[:res.n])}–{max(res.rtts[:res.n])}" if res.n > 1 else str(res.rtts[0])
        print(f"| {res.n} | {rtts} | {seq:.2f} | {par:.2f} | {ist:.2f} | {seq / ist:.1f}x | {par / ist:.1f}x "
              f"| {res.median('isthmus no-op'):.2f} | {res.counts.writes_noop} "
              f"| {res.counts.requests_first:.0f} / {res.counts.requests_noop:.0f} | {res.load} |")
    print(f"\nWhere the time goes (CPU-seconds, medians; client = this process and its kubectl children, lab = "
          f"etcd + kube-apiserver, proxy = Toxiproxy; CPU bound = all of it spread over {CORES} cores; a run is "
          "bound by CPU when that is more than half its wall time, else by distance):\n")
    print("| clusters | way | wall (s) | client CPU | lab CPU | proxy CPU | CPU bound (s) | bound by |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for res in results:
        for way, runs in res.runs.items():
            mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
            print(f"| {res.n} | {way} | {mid.seconds:.2f} | {mid.client_cpu:.2f} | {mid.lab_cpu:.2f} "
                  f"| {mid.proxy_cpu:.2f} | {mid.cpu_bound:.2f} | {mid.bound_by} |")
    one = next((r for r in results if r.n == 1 and "isthmus, farthest" in r.runs), None)
    if one is not None and one.proxy_us_per_request:
        print("\nToxiproxy's own cost, GET /version through the proxy with no toxics: "
              + ", ".join(f"{kind}: {us:.0f} µs CPU per request" for kind, us in one.proxy_us_per_request.items())
              + ".")
    ten = next((r for r in results if r.n == 10), None)
    if ten is not None:
        seq, par, ist = ten.median("kubectl sequential"), ten.median("kubectl parallel"), ten.median("isthmus")
        print("\nGoals at 10 clusters, 21–229 ms away:\n")
        print(f"- at least 5x faster than sequential kubectl: **{'met' if seq / ist >= 5 else 'not met'}** "
              f"({seq / ist:.1f}x)")
        print(f"- at least 1.5x faster than parallel kubectl: **{'met' if par / ist >= 1.5 else 'not met'}** "
              f"({par / ist:.1f}x)")
        if one is not None:
            far = one.median("isthmus, farthest")
            print(f"- at most 1.3x Isthmus's own time to the farthest single cluster ({far:.2f} s at "
                  f"{one.rtts[-1]} ms): **{'met' if ist <= 1.3 * far else 'not met'}** ({ist / far:.2f}x)")
        print(f"- a no-op apply makes zero writes: **{'met' if ten.counts.writes_noop == 0 else 'not met'}** "
              f"({ten.counts.writes_noop} writes)")


def python_start() -> tuple[float, float]:
    """Wall and CPU seconds to start Python and import the `isthmus` command (median of 3): not in Isthmus's times."""
    walls, cpus = [], []
    for _ in range(3):
        before, started = os.times(), time.perf_counter()
        subprocess.run([sys.executable, "-c", "import isthmus.cli, isthmus.rollout, isthmus.kube"], check=True)
        walls.append(time.perf_counter() - started)
        cpus.append(sum(os.times()[2:4]) - sum(before[2:4]))
    return statistics.median(walls), statistics.median(cpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default="azure-east-us")
    args = parser.parse_args()
    results: list[Any] = [bench(n, args.rounds, args.profile) for n in args.clusters]
    report(results, args.rounds, args.profile)
    wall, cpu = python_start()
    print(f"\nIsthmus runs in this process, so its times leave out starting Python and importing the `isthmus` "
          f"command: {wall:.2f} s wall and {cpu:.2f} CPU-s on this machine now (median of 3), once per command "
          "whatever the number of clusters. Each kubectl time includes its process starts. Idle lab, cores busy: "
          + ", ".join(f"{r.n} clusters {r.idle_cores:.2f}" for r in results) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
