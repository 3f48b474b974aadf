"""One lab that runs Cassandra for real: three clusters, a datacenter in each (two racks of one node in
``eu``, one node elsewhere: the smallest ring that shows both a rack-by-rack rollout and a lost region),
deployed by ``isthmus apply`` alone. The package's tests share it (a ring takes minutes on two cores)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.kube import ClusterRegistry, PodPortForward
from isthmus.lab import Lab, LabSettings, PodMode
from isthmus.lab.fleet import specs_from_fleet
from isthmus.netplan import plan
from isthmus.spec import load_file, require_fleet

ISTHMUS = str(Path(sys.executable).with_name("isthmus"))
REGIONS = {"eu": "europe-west1", "us": "us-east1", "ap": "asia-south1"}
#: zones (one node each) per cluster, and so the racks of its datacenter: r1 in zone a, r2 in zone b
RACKS = {"eu": "ab", "us": "a", "ap": "a"}
#: lab nodes per zone: us has a spare one, for the node tests/ring/test_scaling.py adds to dc-us (pods have a
#: required anti-affinity per host); a lab node without a Cassandra pod costs next to nothing
NODES = {"eu": 1, "us": 2, "ap": 1}

FLEET = {
    "apiVersion": "isthmus.dev/v1alpha1", "kind": "Fleet", "metadata": {"name": "ring"},
    "spec": {
        "controlPlane": "eu",
        "network": {"podSupernet": "10.0.0.0/12", "serviceSupernet": "10.96.0.0/12", "routing": "tunnel",
                    "tunnelProtocol": "vxlan", "mesh": "cilium"},
        "clusters": [{"name": c, "region": r, "context": f"lab-{c}", "nodeCIDR": f"10.{128 + i}.0.0/24",
                      "zones": [{"name": f"{r}-{z}", "nodes": NODES[c]} for z in RACKS[c]]}
                     for i, (c, r) in enumerate(REGIONS.items())],
    },
}
APP = {
    "apiVersion": "isthmus.dev/v1alpha1", "kind": "CassandraCluster",
    "metadata": {"name": "ring", "namespace": "ring"},
    "spec": {
        "fleet": "ring", "version": "5.0.9", "numTokens": 16,
        "datacenters": [{"name": f"dc-{c}", "cluster": c, "size": len(RACKS[c]),
                         "racks": [{"name": f"r{i}", "zone": f"{r}-{z}"} for i, z in enumerate(RACKS[c], start=1)]}
                        for c, r in REGIONS.items()],
        "resources": {"cpu": "1", "memory": "1Gi", "heap": "512M"},
        "storage": {"size": "1Gi"},
        "rollout": {"maxConcurrentDatacenters": 1},
        # The guard fronts every node, so everything below (the superuser's setup included) goes through it.
        "access": {"enabled": True, "rules": [
            {"name": "reader-reads", "identities": {"users": ["reader"]},
             "allow": [{"actions": ["read"], "tables": ["guarded.*"]}]}]},
    },
}


@dataclass
class Ring:
    lab: Lab
    files: list[Path]
    apply_output: str

    def spec_args(self) -> list[str]:
        return [a for f in self.files for a in ("-f", str(f))]

    def pod(self, cluster: str, rack: int = 1) -> str:
        return f"ring-dc-{cluster}-r{rack}-0"

    def nodetool(self, cluster: str, *args: str) -> str:
        return self.lab.kubectl(cluster, "exec", "-n", "ring", self.pod(cluster), "-c", "cassandra", "--",
                                "nodetool", *args, timeout=120)

    def lab_kubectl_args(self, cluster: str, *args: str) -> list[str]:
        return [str(self.lab._binaries().path("kubectl")), f"--kubeconfig={self.lab.kubeconfig}",
                f"--context={self.lab.context(cluster)}", *args]

    def registry(self) -> ClusterRegistry:
        fleet = require_fleet(load_file(self.files[0]))
        return ClusterRegistry.from_fleet(fleet, self.lab.kubeconfig)

    def password(self) -> str:
        import base64
        raw = self.lab.kubectl("eu", "get", "secret", "-n", "ring", "ring-superuser", "-o",
                               "jsonpath={.data.password}")
        return base64.b64decode(raw).decode()


@pytest.fixture(scope="package")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    folder = tmp_path_factory.mktemp("ring")
    files = [folder / "fleet.yaml", folder / "cassandra.yaml"]
    files[0].write_text(yaml.safe_dump(FLEET))
    files[1].write_text(yaml.safe_dump(APP))
    fleet = require_fleet(load_file(files[0]))
    lab = Lab(name="pytest-ring", specs=specs_from_fleet(fleet, plan(fleet)), state_dir=folder / "lab",
              settings=LabSettings(ready_timeout=180.0, pods=PodMode.REAL))
    lab.up()
    try:
        proc = subprocess.run([ISTHMUS, "apply", *[a for f in files for a in ("-f", str(f))], "--wait",
                               "--timeout", "900", "--kubeconfig", str(lab.kubeconfig)],
                              capture_output=True, text=True, timeout=1000)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield Ring(lab, files, proc.stdout + proc.stderr)
    finally:
        lab.down()


@contextlib.asynccontextmanager
async def cql(ring: Ring, cluster: str, user: str, password: str) -> Any:
    """A driver session to the cluster's node, through a port-forward on its API server (never its pod IP)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy

    registry = ring.registry()
    try:
        async with PodPortForward(registry[cluster], "ring", ring.pod(cluster), 9042) as (host, port):
            profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=30.0)
            c = Cluster([host], port=port, auth_provider=PlainTextAuthProvider(user, password), protocol_version=5,
                        execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=20.0,
                        control_connection_timeout=20.0)
            try:
                session = await asyncio.to_thread(c.connect)
                yield session
            finally:
                await asyncio.to_thread(c.shutdown)
    finally:
        await registry.close()


async def until(what: str, check: Callable[[], bool], seconds: float = 600, *, every: float = 3) -> None:
    """Poll ``check`` (in a thread: it runs kubectl) until it is true; kubectl's and the driver's failures while
    the ring changes count as "not yet". Fails with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if await asyncio.to_thread(check):
                return
        except (subprocess.SubprocessError, RuntimeError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)
