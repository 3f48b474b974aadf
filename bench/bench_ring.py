"""A real Cassandra ring in the lab (issue 18): from `isthmus apply` to every node UN, and memory.

Two shapes, each a fresh lab: 3 datacenters x 1 node and 3 x 2 (one node per rack, 512M heap). Measured:
wall time of `isthmus apply --wait` and then until `nodetool status` (through `kubectl exec`) shows every
node UN in every DC; CPU-seconds the JVMs and the lab spent; RSS of each Cassandra JVM and of the whole
lab (every process in the lab's state folder's cgroup-less process tree: control planes, runtimes, JVMs).
Goals: 3x1 under 120 s, 3x2 under 240 s; RSS per node under 1 GiB; the 6-node lab under 10 GiB.

Prints a markdown section (bench/run_all.py collects it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from isthmus.lab import Lab, LabSettings, PodMode  # noqa: E402
from isthmus.lab.fleet import specs_from_fleet  # noqa: E402
from isthmus.netplan import plan  # noqa: E402
from isthmus.spec import load_file, require_fleet  # noqa: E402

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
REGIONS = {"eu": "europe-west1", "us": "us-east1", "ap": "asia-south1"}


def docs(per_dc: int) -> tuple[dict[str, object], dict[str, object]]:
    fleet = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": "bench"},
             "spec": {"controlPlane": "eu",
                      "network": {"podSupernet": "10.0.0.0/12", "serviceSupernet": "10.96.0.0/12",
                                  "routing": "tunnel", "tunnelProtocol": "vxlan", "mesh": "cilium"},
                      "clusters": [{"name": c, "region": r, "context": f"lab-{c}", "nodeCIDR": f"10.{128 + i}.0.0/24",
                                    "zones": [{"name": f"{r}-{z}", "nodes": 1} for z in "ab"[:per_dc]]}
                                   for i, (c, r) in enumerate(REGIONS.items())]}}
    app = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
           "metadata": {"name": "bench", "namespace": "bench"},
           "spec": {"fleet": "bench", "version": "5.0.9",
                    "datacenters": [{"name": f"dc-{c}", "cluster": c, "size": per_dc,
                                     "racks": [{"name": f"r{z}", "zone": f"{r}-{z}"} for z in "ab"[:per_dc]]}
                                    for c, r in REGIONS.items()],
                    "resources": {"cpu": "1", "memory": "1Gi", "heap": "512M"}, "storage": {"size": "1Gi"},
                    "rollout": {"maxConcurrentDatacenters": 1}}}
    return fleet, app


def _jvms() -> list[int]:
    out = subprocess.run(["pgrep", "-f", "org.apache.cassandra.service.CassandraDaemon"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root_pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(Path(d, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), list(root_pids)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += children.get(pid, [])
    return out


def run(per_dc: int) -> dict[str, float | str]:
    before = set(_jvms())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fleet_doc, app_doc = docs(per_dc)
        files = [folder / "fleet.yaml", folder / "app.yaml"]
        files[0].write_text(yaml.safe_dump(fleet_doc))
        files[1].write_text(yaml.safe_dump(app_doc))
        fleet = require_fleet(load_file(files[0]))
        lab = Lab(name=f"bench-ring-{per_dc}", specs=specs_from_fleet(fleet, plan(fleet)), state_dir=folder / "lab",
                  settings=LabSettings(ready_timeout=180.0, pods=PodMode.REAL))
        lab.up()
        try:
            load0 = os.getloadavg()[0]
            started = time.monotonic()
            proc = subprocess.run([ISTHMUS, "apply", "-f", str(files[0]), "-f", str(files[1]), "--wait",
                                   "--timeout", "1800", "--kubeconfig", str(lab.kubeconfig)],
                                  capture_output=True, text=True)
            applied = time.monotonic() - started
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr)
            want = 3 * per_dc
            while True:
                status = lab.kubectl("eu", "exec", "-n", "bench", "bench-dc-eu-ra-0", "-c", "cassandra", "--",
                                     "nodetool", "status", timeout=120)
                if len(re.findall(r"^UN\s", status, re.M)) == want:
                    break
                time.sleep(2)
            ring = time.monotonic() - started
            jvms = [p for p in _jvms() if p not in before]
            rss = [_rss_mib(p) for p in jvms]
            cpu = sum(_cpu_s(p) for p in jvms)
            lab_pids = _tree([r for procs in lab.pids().values() for r in procs.values()])
            lab_rss = sum(_rss_mib(p) for p in lab_pids if Path(f"/proc/{p}").exists())
            return {"nodes": want, "apply": applied, "ring": ring, "rss_max": max(rss), "rss_mean": sum(rss) / len(rss),
                    "lab_rss": lab_rss, "jvm_cpu": cpu, "load": f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"}
        finally:
            lab.down()


def main() -> int:
    goals = {1: 120.0, 2: 240.0}
    rows = [run(n) for n in (1, 2)]
    print("### A real ring in the lab (bench_ring.py)\n")
    print("| shape | apply --wait | every node UN | JVM CPU-s | RSS per node (max / mean) | whole lab RSS | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for per_dc, r in zip((1, 2), rows, strict=True):
        print(f"| 3 DC x {per_dc} | {r['apply']:.0f} s | {r['ring']:.0f} s | {r['jvm_cpu']:.0f} | "
              f"{r['rss_max']:.0f} / {r['rss_mean']:.0f} MiB | {r['lab_rss'] / 1024:.1f} GiB | {r['load']} |")
    print()
    for per_dc, r in zip((1, 2), rows, strict=True):
        met = "met" if float(r["ring"]) < goals[per_dc] else "not met"
        print(f"- Goal: 3 DC x {per_dc} ring in under {goals[per_dc]:.0f} s: **{met}** ({r['ring']:.0f} s).")
    rss_ok = max(float(r["rss_max"]) for r in rows) < 1024
    print(f"- Goal: RSS per node under 1 GiB: **{'met' if rss_ok else 'not met'}**.")
    print(f"- Goal: 6-node lab under 10 GiB: **{'met' if float(rows[1]['lab_rss']) < 10240 else 'not met'}**.")
    print("\nWhat bounds the time: nodes join one after the other (the seed DC first, then one DC per wave, a "
          "rack's pods in order), and each JVM start costs CPU on the machine's two cores; the readiness "
          "probe (`nodetool statusbinary`, a JVM of its own, every 15 s) adds up to a period per node.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
