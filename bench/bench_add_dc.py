"""Adding a datacenter to a running ring holding rows (issue 13 item 4): start, replication change, rebuild.

One fresh lab of three clusters, one node each. `isthmus apply` deploys dc-eu and dc-us; ROWS rows (default
100,000; `BENCH_ADD_DC_ROWS` for fewer) go into keyspace `bench` (dc-eu=1, dc-us=1) through a port-forward;
then `isthmus apply` of the spec with dc-ap added and `bench` declared with dc-ap=1. The phases are the
rollout's own step records (`isthmus rollout status -o json`): **start** (`join/dc-ap` and the rack step: the
pod scheduled, the JVM started without bootstrap, Ready), **replication change** (`keyspace/bench` plus the
system keyspaces' change at the start of the rebuild step is inside **rebuild**), and **rebuild**
(`rebuild/dc-ap`: `nodetool rebuild -- dc-eu` and the check that every row is readable at LOCAL_ONE in
dc-ap). Also recorded: wall time of the whole apply, CPU-seconds of the client, the lab and the JVMs during
it, the load average before and after, and what bounds the wall time.

Prints a markdown section (bench/run_all.py collects it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _measure import CORES, load_avg, measured, pid_cpu  # noqa: E402
from isthmus.kube import ClusterRegistry, PodPortForward  # noqa: E402
from isthmus.lab import Lab, LabSettings, PodMode  # noqa: E402
from isthmus.lab.fleet import specs_from_fleet  # noqa: E402
from isthmus.netplan import plan  # noqa: E402
from isthmus.spec import load_file, require_fleet  # noqa: E402

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
REGIONS = {"eu": "europe-west1", "us": "us-east1", "ap": "asia-south1"}
ROWS = int(os.environ.get("BENCH_ADD_DC_ROWS", "100000"))
GOAL_SECONDS = 300.0


def docs(dcs: list[str], keyspaces: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    fleet = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": "bench"},
             "spec": {"controlPlane": "eu",
                      "network": {"podSupernet": "10.0.0.0/12", "serviceSupernet": "10.96.0.0/12",
                                  "routing": "tunnel", "tunnelProtocol": "vxlan", "mesh": "cilium"},
                      "clusters": [{"name": c, "region": r, "context": f"lab-{c}", "nodeCIDR": f"10.{128 + i}.0.0/24",
                                    "zones": [{"name": f"{r}-a", "nodes": 1}]}
                                   for i, (c, r) in enumerate(REGIONS.items())]}}
    app = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
           "metadata": {"name": "bench", "namespace": "bench"},
           "spec": {"fleet": "bench", "version": "5.0.9", "numTokens": 16,
                    "datacenters": [{"name": f"dc-{c}", "cluster": c, "size": 1,
                                     "racks": [{"name": "ra", "zone": f"{r}-a"}]}
                                    for c, r in REGIONS.items() if f"dc-{c}" in dcs],
                    "keyspaces": keyspaces,
                    "resources": {"cpu": "1", "memory": "1Gi", "heap": "512M"}, "storage": {"size": "2Gi"},
                    "rollout": {"maxConcurrentDatacenters": 1}}}
    return fleet, app


def _jvms() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "org.apache.cassandra.service.CassandraDaemon"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _password(lab: Lab) -> str:
    import base64

    raw = lab.kubectl("eu", "get", "secret", "-n", "bench", "bench-superuser", "-o", "jsonpath={.data.password}")
    return base64.b64decode(raw).decode()


async def _load_rows(fleet_file: Path, lab: Lab, rows: int) -> float:
    """Create keyspace bench and insert ``rows`` rows at LOCAL_QUORUM through dc-eu's node; returns seconds."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.concurrent import execute_concurrent_with_args
    from cassandra.policies import WhiteListRoundRobinPolicy

    registry = ClusterRegistry.from_fleet(require_fleet(load_file(fleet_file)), lab.kubeconfig)
    try:
        async with PodPortForward(registry["eu"], "bench", "bench-dc-eu-ra-0", 9042) as (host, port):
            profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=60.0)
            cluster = Cluster([host], port=port, auth_provider=PlainTextAuthProvider("cassandra-admin", _password(lab)),
                              execution_profiles={EXEC_PROFILE_DEFAULT: profile}, protocol_version=5)

            def work() -> float:
                session = cluster.connect()
                session.execute("CREATE TABLE IF NOT EXISTS bench.kv (k int PRIMARY KEY, v text)")
                insert = session.prepare("INSERT INTO bench.kv (k, v) VALUES (?, ?)")
                started = time.monotonic()
                results = execute_concurrent_with_args(session, insert, [(k, f"row {k:08d} " + "x" * 80)
                                                                        for k in range(rows)], concurrency=64)
                if not all(ok for ok, _ in results):
                    raise SystemExit("some inserts failed")
                return time.monotonic() - started

            try:
                return await asyncio.to_thread(work)
            finally:
                cluster.shutdown()
    finally:
        await registry.close()


def _apply(files: list[Path], lab: Lab) -> None:
    proc = subprocess.run([ISTHMUS, "apply", "-f", str(files[0]), "-f", str(files[1]), "--timeout", "1800",
                           "--kubeconfig", str(lab.kubeconfig)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)


def _steps(files: list[Path], lab: Lab) -> dict[str, Any]:
    proc = subprocess.run([ISTHMUS, "rollout", "status", "-f", str(files[0]), "-f", str(files[1]), "-o", "json",
                           "--kubeconfig", str(lab.kubeconfig)], capture_output=True, text=True, check=True)
    steps: dict[str, Any] = json.loads(proc.stdout)["steps"]
    return steps


def _span(steps: dict[str, Any], *ids: str) -> float:
    recs = [steps[i] for i in ids if steps[i].get("started")]
    return max(r["finished"] for r in recs) - min(r["started"] for r in recs) if recs else 0.0


def run() -> dict[str, Any]:
    keyspace = {"name": "bench", "replication": {"dc-eu": 1, "dc-us": 1}, "consistency": "ONE"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fleet_doc, two = docs(["dc-eu", "dc-us"], [keyspace])
        _, three = docs(["dc-eu", "dc-us", "dc-ap"],
                        [{**keyspace, "replication": {"dc-eu": 1, "dc-us": 1, "dc-ap": 1}}])
        files = [folder / "fleet.yaml", folder / "app.yaml"]
        files[0].write_text(yaml.safe_dump(fleet_doc))
        files[1].write_text(yaml.safe_dump(two))
        fleet = require_fleet(load_file(files[0]))
        lab = Lab(name="bench-add-dc", specs=specs_from_fleet(fleet, plan(fleet)), state_dir=folder / "lab",
                  settings=LabSettings(ready_timeout=180.0, pods=PodMode.REAL))
        lab.up()
        try:
            _apply(files, lab)
            insert_s = asyncio.run(_load_rows(files[0], lab, ROWS))
            files[1].write_text(yaml.safe_dump(three))
            before = set(_jvms())
            jvm0 = {p: pid_cpu(p) for p in before}
            load_before = load_avg()
            result = measured(folder / "lab", lambda: _apply(files, lab))
            load_after = load_avg()
            jvm_cpu = sum(pid_cpu(p) - jvm0.get(p, 0.0) for p in _jvms())
            steps = _steps(files, lab)
            return {"rows": ROWS, "insert": insert_s, "wall": result.seconds, "client_cpu": result.client_cpu,
                    "lab_cpu": result.lab_cpu, "jvm_cpu": jvm_cpu,
                    "start": _span(steps, "join/dc-ap", "rack/dc-ap/ra"), "replication": _span(steps, "keyspace/bench"),
                    "rebuild": _span(steps, "rebuild/dc-ap"), "note": steps["rebuild/dc-ap"]["note"],
                    "load": f"{load_before} before, {load_after} after"}
        finally:
            lab.down()


def main() -> int:
    r = run()
    print("### Adding a datacenter to a ring holding rows (bench_add_dc.py)\n")
    print(f"{r['rows']:,} rows in keyspace `bench` (dc-eu=1, dc-us=1; inserted in {r['insert']:.0f} s), then dc-ap "
          "added with `bench` declared dc-ap=1 (one node per datacenter, one lab on this machine).\n")
    print("| phase | seconds |")
    print("| --- | --- |")
    print(f"| start (`join/dc-ap`, `rack/dc-ap/ra`: scheduled, JVM up without bootstrap, Ready) | {r['start']:.1f} |")
    print(f"| replication change (`keyspace/bench`: ALTER, no repair in the added datacenter) | "
          f"{r['replication']:.1f} |")
    print(f"| rebuild (`rebuild/dc-ap`: system keyspaces, `nodetool rebuild --keyspace` each, rows counted) | "
          f"{r['rebuild']:.1f} |")
    print(f"| the whole `isthmus apply` | {r['wall']:.1f} |")
    print()
    cpu = r["client_cpu"] + r["lab_cpu"] + r["jvm_cpu"]
    bound = "CPU" if cpu / CORES > 0.5 * r["wall"] else \
        "the new node's start (JVM start, gossip, readiness probe period)"
    print(f"CPU-seconds during the apply: client {r['client_cpu']:.1f}, lab {r['lab_cpu']:.1f}, Cassandra JVMs "
          f"{r['jvm_cpu']:.1f}; {CORES} cores; load average {r['load']}. The CPU work needs at least "
          f"{cpu / CORES:.0f} s of the {r['wall']:.0f} s on {CORES} cores; bound by: {bound}.\n")
    print(f"The rebuild step's note: {r['note']}\n")
    met = "met" if r["wall"] < GOAL_SECONDS else "not met"
    print(f"- Goal: add a datacenter holding {r['rows']:,} rows in under {GOAL_SECONDS:.0f} s: **{met}** "
          f"({r['wall']:.0f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
