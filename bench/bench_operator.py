"""Benchmark: the operator's reaction time to a spec change, and what an idle operator costs.

Run with ``.venv/bin/python bench/bench_operator.py [--clusters 3 10] [--changes 15]``. For each N
a lab of N real control planes starts; the CRDs, N member Secrets (kubeconfigs of the lab
contexts), a Fleet and one CassandraCluster (a datacenter of two racks per cluster) go to c1,
and ``isthmus operator run`` (defaults: 5 s status refresh, 5 s probes, 30 s resync) runs as a
process. Then, repeatedly: ``kubectl apply --server-side`` of a heap change, and the clock runs
until every member holds the new StatefulSets (their content hash equals the rendered one; polled
every 50 ms through ``isthmus.kube``). Between changes the CassandraCluster is left to turn Ready.
Idle cost: CPU seconds and RSS of the operator process over 30 s with the app Ready.
Prints markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from isthmus.kube import ClusterRegistry, ConnectionSettings, fetch_owned
from isthmus.lab import Lab, LabSettings, default_specs
from isthmus.lab.fleet import cassandra_document, fleet_document
from isthmus.operator.crds import crds_yaml
from isthmus.rollout import render_app
from isthmus.spec import CassandraCluster, Fleet, load_text

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
NAMESPACE = "isthmus-system"
APP = "bench"
HASH = "isthmus.dev/content-hash"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubectl(lab: Lab, *args: str, stdin: str | None = None) -> str:
    cmd = [str(lab._binaries().path("kubectl")), f"--kubeconfig={lab.kubeconfig}", f"--context={lab.context('c1')}",
           *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True, timeout=60).stdout


def apply(lab: Lab, *docs: dict[str, Any]) -> None:
    kubectl(lab, "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin="".join("---\n" + yaml.safe_dump(d) for d in docs))


def setup(lab: Lab, n: int) -> tuple[Fleet, dict[str, Any]]:
    kubectl(lab, "apply", "--server-side", "-f", "-", stdin=crds_yaml())
    kubectl(lab, "wait", "--for=condition=Established", "crd/fleets.isthmus.dev", "crd/cassandraclusters.isthmus.dev")
    specs = default_specs(n)
    secrets = []
    for s in specs:
        config = subprocess.run([str(lab._binaries().path("kubectl")), f"--kubeconfig={lab.kubeconfig}",
                                 f"--context={s.context}", "config", "view", "--minify", "--flatten", "--raw"],
                                capture_output=True, text=True, check=True).stdout
        secrets.append({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": f"member-{s.name}", "namespace": NAMESPACE,
                                     "labels": {"isthmus.dev/cluster": s.name}},
                        "stringData": {"kubeconfig": config}})
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in (NAMESPACE, APP)]
    fleet_doc = fleet_document(specs, name="bench")
    apply(lab, *namespaces, *secrets, fleet_doc)
    loaded = load_text(yaml.safe_dump(fleet_doc))
    assert loaded.fleet is not None
    return loaded.fleet, cassandra_document(specs, APP)


def expected_hashes(fleet: Fleet, doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    app = load_text(yaml.safe_dump(doc)).apps[0]
    assert isinstance(app, CassandraCluster)
    manifests = render_app(app, fleet, "any-password")
    return {c: {o["metadata"]["name"]: o["metadata"]["annotations"][HASH]
                for o in manifests.for_cluster(c) if o["kind"] == "StatefulSet"} for c in manifests.clusters}


async def live_hashes(registry: ClusterRegistry) -> dict[str, dict[str, str]]:
    async def one(name: str) -> tuple[str, dict[str, str]]:
        live = await fetch_owned(registry[name], APP, {("apps/v1", "StatefulSet", APP)})
        return name, {r.name: (o["metadata"].get("annotations") or {}).get(HASH, "") for r, o in live.items()}

    return dict(await asyncio.gather(*(one(n) for n in registry)))


def ready(lab: Lab) -> bool:
    out = kubectl(lab, "get", "cassandracluster", APP, "-n", APP, "-o", "json")
    obj = json.loads(out)
    status = obj.get("status") or {}
    conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return conds.get("Ready") == "True" and status.get("observedGeneration") == obj["metadata"]["generation"]


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not within {timeout:.0f}s")
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def run_one(n: int, changes: int, idle_window: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(name=f"bench-operator-{n}", specs=default_specs(n), state_dir=Path(tmp) / "lab",
                  settings=LabSettings(ready_timeout=300))
        lab.up()
        proc = None
        try:
            fleet, doc = setup(lab, n)
            port = free_port()
            log = (Path(tmp) / "operator.log").open("wb")
            proc = subprocess.Popen([ISTHMUS, "operator", "run", "--kubeconfig", str(lab.kubeconfig), "--context",
                                     lab.context("c1"), "--namespace", NAMESPACE, "--metrics-port", str(port),
                                     "--id", "bench"], stdout=log, stderr=subprocess.STDOUT)
            wait(lambda: "leader" in _get(f"http://127.0.0.1:{port}/readyz"), 60, "operator leading")
            apply(lab, doc)
            wait(lambda: ready(lab), 300, "first rollout Ready")
            time.sleep(5)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle_window)
            idle_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            rss = rss_mib(proc.pid)
            latencies = asyncio.run(_changes(lab, fleet, doc, changes))
            return {"median": statistics.median(latencies), "p99": p99(latencies), "min": min(latencies),
                    "idle_cpu": idle_cpu * 100, "rss": rss, "changes": len(latencies)}
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            lab.down()


def _get(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


async def _changes(lab: Lab, fleet: Fleet, doc: dict[str, Any], changes: int) -> list[float]:
    registry = ClusterRegistry.from_fleet(fleet, lab.kubeconfig, settings=ConnectionSettings(timeout=10))
    latencies = []
    try:
        for i in range(changes):
            doc["spec"]["resources"]["heap"] = "768M" if i % 2 == 0 else "1G"
            want = expected_hashes(fleet, doc)
            started = time.perf_counter()
            await asyncio.to_thread(apply, lab, doc)
            while await live_hashes(registry) != want:
                if time.perf_counter() - started > 120:
                    raise SystemExit(f"bench: change {i} did not reach every member within 120s")
                await asyncio.sleep(0.05)
            latencies.append(time.perf_counter() - started)
            await asyncio.to_thread(wait, lambda: ready(lab), 300, f"Ready after change {i}")
    finally:
        await registry.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clusters", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--changes", type=int, default=15)
    parser.add_argument("--idle-window", type=float, default=30.0)
    args = parser.parse_args()
    rows = [(n, run_one(n, args.changes, args.idle_window)) for n in args.clusters]
    print(f"### Operator: spec change to every member holding it ({os.cpu_count()} CPUs, "
          f"Python {platform.python_version()})\n")
    print("| members | changes | median (s) | p99 (s) | fastest (s) | idle CPU (% of a core) | RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows:
        print(f"| {n} | {r['changes']:.0f} | {r['median']:.2f} | {r['p99']:.2f} | {r['min']:.2f} "
              f"| {r['idle_cpu']:.1f} | {r['rss']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
