"""Restarting a datacenter a rack at once against one node at a time (issue 13 item 7), in the same run.

One lab cluster, one datacenter of 3 racks x N nodes (N=2 by default: 6 nodes; ``--per-rack 1`` for a
smaller run), every keyspace on NetworkTopologyStrategy with 3 replicas there (``spec.keyspaces`` declares
the system ones), so the ring proves a rack at once safe. Then, while a client writes and reads a row at
LOCAL_QUORUM through a port-forward to every node (the next node when one is down, as a driver does):

1. ``isthmus restart --dc dc-eu``: a rack at once (3 rounds);
2. ``isthmus restart --dc dc-eu --one-node-at-a-time``: node by node (3 x N rounds).

Reported for each: rounds (the figure that holds on real hardware, where each node has its own cores:
3 against 3 x N, 3 against 300 for a 300-node datacenter of 3 racks), wall time, the CPU-seconds the new
JVMs spent until the restart finished (their start, mostly), the machine's busy CPU-seconds, the load
average before and after, what bounds the wall time, and the client's failed LOCAL_QUORUM requests
(goal: none). On a 2-core machine the JVMs of a rack start together and compete for the cores, so the
rack-at-once wall time is bounded by CPU, not by the number of rounds.

Prints a markdown section (bench/run_all.py collects it). Heavy: run it alone (``flock`` the lab lock).

The deploy itself needs the first node of every rack to start before any rack grows (Cassandra's token
allocation refuses a datacenter of 2 racks when it allocates for 3): :mod:`isthmus.rollout.rackrolling`
does that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _measure import CORES, load_avg, pid_cpu  # noqa: E402
from isthmus.kube import ClusterRegistry, PodPortForward  # noqa: E402
from isthmus.lab import Lab, LabSettings, PodMode  # noqa: E402
from isthmus.lab.fleet import specs_from_fleet  # noqa: E402
from isthmus.netplan import plan  # noqa: E402
from isthmus.spec import load_file, require_fleet  # noqa: E402

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
RACKS = "abc"
SYSTEM = ("system_auth", "system_distributed", "system_traces")


def docs(per_rack: int) -> tuple[dict[str, Any], dict[str, Any]]:
    fleet = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": "rst"},
             "spec": {"controlPlane": "eu",
                      "network": {"podSupernet": "10.0.0.0/12", "serviceSupernet": "10.96.0.0/12",
                                  "routing": "tunnel", "tunnelProtocol": "vxlan", "mesh": "cilium"},
                      "clusters": [{"name": "eu", "region": "europe-west1", "context": "lab-eu",
                                    "nodeCIDR": "10.128.0.0/24",
                                    "zones": [{"name": f"europe-west1-{z}", "nodes": per_rack} for z in RACKS]}]}}
    rf3 = {"dc-eu": 3}
    app = {"apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
           "metadata": {"name": "rst", "namespace": "rst"},
           "spec": {"fleet": "rst", "version": "5.0.9", "numTokens": 16,
                    "datacenters": [{"name": "dc-eu", "cluster": "eu", "size": 3 * per_rack,
                                     "racks": [{"name": f"r{i}", "zone": f"europe-west1-{z}"}
                                               for i, z in enumerate(RACKS, start=1)]}],
                    "resources": {"cpu": "1", "memory": "1Gi", "heap": "384M"}, "storage": {"size": "1Gi"},
                    "keyspaces": [*({"name": k, "replication": rf3} for k in SYSTEM),
                                  {"name": "bench", "replication": rf3, "consistency": "LOCAL_QUORUM"}]}}
    return fleet, app


def _jvms() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "org.apache.cassandra.service.CassandraDaemon"], capture_output=True,
                         text=True).stdout
    return {int(p) for p in out.split()}


def _busy() -> float:
    """CPU-seconds the whole machine has spent busy (every core, all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Client:
    """Writes then reads at LOCAL_QUORUM, one request after another, through a session to each node."""

    def __init__(self, sessions: list[Any]) -> None:
        self.sessions, self.ok, self.failed, self.errors = sessions, 0, 0, list[str]()
        self.stop = threading.Event()

    def one(self, i: int) -> None:
        from cassandra import ConsistencyLevel, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.query import SimpleStatement

        write = SimpleStatement("INSERT INTO bench.kv (id, v) VALUES (%s, %s)",
                                consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        read = SimpleStatement("SELECT v FROM bench.kv WHERE id = %s", consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        for k in range(len(self.sessions)):
            session = self.sessions[(i + k) % len(self.sessions)]
            try:
                session.execute(write, (i % 1000, i), timeout=10)
                row = session.execute(read, (i % 1000,), timeout=10).one()
            except (Unavailable, ReadTimeout, WriteTimeout) as exc:
                self.failed += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            except Exception:  # this coordinator is down: the next
                continue
            if row is None or row.v != i:
                self.failed += 1
                self.errors.append(f"row {i % 1000} read back {row}")
            else:
                self.ok += 1
            return
        self.failed += 1
        self.errors.append(f"no node took request {i}")

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            self.one(i)
            time.sleep(0.05)


def _cluster(host: str, port: int, password: str) -> Any:
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import ConstantReconnectionPolicy, WhiteListRoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=10.0)
    return Cluster([host], port=port, auth_provider=PlainTextAuthProvider("cassandra-admin", password),
                   protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=10.0,
                   control_connection_timeout=10.0, reconnection_policy=ConstantReconnectionPolicy(1.0))


def restart(files: list[Path], lab: Lab, extra: list[str]) -> dict[str, Any]:
    spec = [a for f in files for a in ("-f", str(f))]
    before, busy0, load0, t0 = _jvms(), _busy(), load_avg(), time.monotonic()
    proc = subprocess.run([ISTHMUS, "restart", *spec, "--dc", "dc-eu", "--poll", "2", "-o", "json", *extra,
                           "--kubeconfig", str(lab.kubeconfig)], capture_output=True, text=True, timeout=7200)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    result = json.loads(proc.stdout)
    new = _jvms() - before
    return {"rounds": len(result["rounds"]), "seconds": seconds, "jvm_cpu": sum(pid_cpu(p) for p in new),
            "busy": _busy() - busy0, "load": f"{load0} -> {load_avg()}", "jvms": len(new),
            "choice": "; ".join(result["choices"])}


async def measure(files: list[Path], lab: Lab, password: str, per_rack: int) -> list[tuple[dict[str, Any], Client]]:
    fleet = require_fleet(load_file(files[0]))
    registry = ClusterRegistry.from_fleet(fleet, lab.kubeconfig)
    pods = [f"rst-dc-eu-r{r}-{i}" for r in range(1, 4) for i in range(per_rack)]
    out = []
    try:
        async with AsyncExitStack() as stack:
            clusters = []
            for pod in pods:
                host, port = await stack.enter_async_context(PodPortForward(registry["eu"], "rst", pod, 9042))
                clusters.append(_cluster(host, port, password))
            sessions = [await asyncio.to_thread(c.connect) for c in clusters]
            try:
                await asyncio.to_thread(sessions[0].execute,
                                        "CREATE TABLE IF NOT EXISTS bench.kv (id int PRIMARY KEY, v int)")
                for extra in ([], ["--one-node-at-a-time"]):
                    client = Client(sessions)
                    loop = asyncio.create_task(asyncio.to_thread(client.run))
                    await asyncio.sleep(5)
                    row = await asyncio.to_thread(restart, files, lab, extra)
                    await asyncio.sleep(5)
                    client.stop.set()
                    await loop
                    out.append((row, client))
            finally:
                for c in clusters:
                    await asyncio.to_thread(c.shutdown)
    finally:
        await registry.close()
    return out


def _crashes(lab: Lab) -> str:
    """The last words of every container that restarted (kubectl logs --previous), to say why a deploy failed."""
    out = []
    pods = json.loads(lab.kubectl("eu", "get", "pods", "-n", "rst", "-o", "json"))["items"]
    for pod in pods:
        for status in pod["status"].get("containerStatuses") or []:
            if status.get("restartCount"):
                name = pod["metadata"]["name"]
                said = ""
                for which in (["--previous"], []):  # the lab may keep only the current run's
                    try:
                        said = lab.kubectl("eu", "logs", "-n", "rst", name, "-c", status["name"], *which,
                                           "--tail", "40")
                        break
                    except Exception as exc:
                        said = f"(no logs: {exc})"
                out.append(f"--- {name}/{status['name']} restarted {status['restartCount']} time(s):\n{said}")
    return "\n" + "\n".join(out)


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so that the lab is taken down (finally)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-rack", type=int, default=2, help="nodes per rack (3 racks)")
    per_rack = parser.parse_args().per_rack
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fleet_doc, app_doc = docs(per_rack)
        files = [folder / "fleet.yaml", folder / "app.yaml"]
        files[0].write_text(yaml.safe_dump(fleet_doc))
        files[1].write_text(yaml.safe_dump(app_doc))
        fleet = require_fleet(load_file(files[0]))
        lab = Lab(name="bench-restart", specs=specs_from_fleet(fleet, plan(fleet)), state_dir=folder / "lab",
                  settings=LabSettings(ready_timeout=180.0, pods=PodMode.REAL))
        lab.up()
        try:
            t0 = time.monotonic()
            proc = subprocess.run([ISTHMUS, "apply", "-f", str(files[0]), "-f", str(files[1]), "--wait", "--timeout",
                                   "3600", "--kubeconfig", str(lab.kubeconfig)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr + _crashes(lab))
            deployed = time.monotonic() - t0
            import base64
            password = base64.b64decode(lab.kubectl("eu", "get", "secret", "-n", "rst", "rst-superuser", "-o",
                                                    "jsonpath={.data.password}")).decode()
            rows = asyncio.run(measure(files, lab, password, per_rack))
        finally:
            lab.down()
    nodes = 3 * per_rack
    print(f"### Restarting a datacenter of 3 racks x {per_rack} nodes (bench_restart.py)\n")
    print(f"A fresh lab, one datacenter of {nodes} nodes (384M heap, RF 3 for every keyspace), deployed in "
          f"{deployed:.0f} s (nodes join one at a time). Then, in the same run, with a client at LOCAL_QUORUM:\n")
    print("| mode | rounds | wall time | JVM CPU-s (new JVMs) | machine busy CPU-s | CPU bound | load before -> after "
          "| requests ok / failed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (row, client), mode in zip(rows, ("a rack at once", "one node at a time"), strict=True):
        print(f"| {mode} | {row['rounds']} | {row['seconds']:.0f} s | {row['jvm_cpu']:.0f} | {row['busy']:.0f} | "
              f"{row['busy'] / CORES:.0f} s | {row['load']} | {client.ok} / {client.failed} |")
    print()
    fast, slow = rows[0][0], rows[1][0]
    ok = all(c.failed == 0 for _, c in rows)
    print(f"- Goal: zero failed LOCAL_QUORUM requests in both modes: **{'met' if ok else 'not met'}** "
          f"({', '.join(str(c.failed) for _, c in rows)}).")
    print(f"- Goal: a rack at once takes 3 rounds against {nodes} node by node: "
          f"**{'met' if (fast['rounds'], slow['rounds']) == (3, nodes) else 'not met'}** "
          f"({fast['rounds']} against {slow['rounds']}; a 300-node datacenter of 3 racks: 3 against 300).")
    print(f"\nThe choice, as the restart said it: {fast['choice']}\n")
    bound = "CPU" if fast["busy"] / CORES > 0.8 * fast["seconds"] else "the rounds (waits: drain, start, probes)"
    print(f"What bounds the wall time: on this machine's {CORES} cores a rack's {per_rack} JVMs start together "
          f"and compete for them; the rack-at-once run kept the machine busy for {fast['busy']:.0f} CPU-seconds "
          f"in {fast['seconds']:.0f} s ({fast['busy'] / CORES / fast['seconds']:.0%} of every core), so it is "
          f"bounded by {bound}. Node by node, each start has the cores to itself "
          f"({slow['busy'] / CORES / slow['seconds']:.0%} of every core), and the wall time is the sum of the "
          f"rounds. On real hardware each node has its own cores and a round costs one node's start, so the "
          f"wall time follows the rounds.")
    for (_, client), mode in zip(rows, ("rack at once", "node by node"), strict=True):
        if client.errors:
            print(f"\n{mode}: first failures: {client.errors[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
