"""The database gate (issue 13): a node the ring marks DN in one region blocks a restart in another, even while
every pod is Ready; once the node is UN again, the restart goes on.

The us node stops gossiping (``nodetool disablegossip``): its process and its CQL port stay up, so its pod
stays Ready, and Kubernetes sees nothing wrong, but the other datacenters mark it DN. A heap change then
waits before its first step, in dc-eu, naming the node; ``enablegossip`` lets it through.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import copy
import json
import subprocess
import time
from typing import Any

import pytest
import yaml

from fixtures.labspecs import load
from isthmus.rollout import RolloutOptions, apply_rollout

from .conftest import APP, ISTHMUS, Ring

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1800)]


def _sees_us(ring: Ring, state: str) -> bool:
    out = ring.nodetool("eu", "status")
    section = out.split("Datacenter: dc-us", 1)[1].split("Datacenter:", 1)[0]
    return any(line.startswith(state + " ") for line in section.splitlines())


def _uids(ring: Ring, cluster: str) -> dict[str, str]:
    pods = json.loads(ring.lab.kubectl(cluster, "get", "pods", "-n", "ring", "-o", "json"))["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


def _ready(ring: Ring, cluster: str, pod: str) -> bool:
    doc = json.loads(ring.lab.kubectl(cluster, "get", "pod", "-n", "ring", pod, "-o", "json"))
    return [c["status"] for c in doc["status"]["conditions"] if c["type"] == "Ready"] == ["True"]


async def _until(what: str, check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {within:.0f}s: {what}"
        await asyncio.sleep(1)


async def test_a_node_down_in_one_region_blocks_a_restart_in_another_until_it_is_back(ring: Ring) -> None:
    us_pod = ring.pod("us")
    ring.lab.kubectl("us", "exec", "-n", "ring", us_pod, "-c", "cassandra", "--", "nodetool", "disablegossip",
                     timeout=120)
    gossip_back: float | None = None
    try:
        await _until("dc-eu sees the us node DN", lambda: _sees_us(ring, "DN"), 120)
        assert _ready(ring, "us", us_pod), "the us pod should stay Ready: Kubernetes cannot see this"
        eu_before = _uids(ring, "eu")

        app_doc = copy.deepcopy(APP)
        app_doc["spec"]["resources"]["heap"] = "448M"  # type: ignore[index]
        fleet, app = load(yaml.safe_load(ring.files[0].read_text()), app_doc)
        said: list[tuple[str, str]] = []
        registry = ring.registry()
        rollout = asyncio.create_task(apply_rollout(app, fleet, registry, RolloutOptions(poll_interval=2.0),
                                                    progress=lambda c, m: said.append((c, m))))

        def blocked() -> bool:
            return any("database: wait" in m and "dc-us" in m and "DN" in m for _, m in said)

        deadline = time.monotonic() + 600
        while not blocked():
            assert not rollout.done(), f"the rollout ended without waiting for the us node: {said}"
            assert time.monotonic() < deadline, f"the database gate never said it waits: {said}"
            await asyncio.sleep(1)
        # Blocked by the database alone: every pod is Ready, and no dc-eu pod has been restarted.
        assert _ready(ring, "us", us_pod)
        assert _uids(ring, "eu") == eu_before
        message = next(m for _, m in said if "database: wait" in m)
        assert "of dc-us rack r1 DN" in message, message
        # `isthmus status` shows the same: every pod Ready, and the ring's own view beside it.
        proc = await asyncio.to_thread(subprocess.run, [ISTHMUS, "status", *ring.spec_args(), "-o", "json",
                                                        "--kubeconfig", str(ring.lab.kubeconfig)],
                                       capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["healthy"] is True
        nodes = {n["pod"] or n["address"]: n for n in doc["database"]["nodes"]}
        assert nodes[us_pod]["seen"]["dc-eu"] == "DN" and nodes[us_pod]["datacenter"] == "dc-us", nodes
        assert all(n["seen"]["dc-eu"] == "UN" for name, n in nodes.items() if name != us_pod), nodes
        assert len(nodes) == 4 and all(n["schema"] != "?" for n in nodes.values()), nodes

        ring.lab.kubectl("us", "exec", "-n", "ring", us_pod, "-c", "cassandra", "--", "nodetool", "enablegossip",
                         timeout=120)
        gossip_back = time.time()
        result = await asyncio.wait_for(rollout, 1500)
        assert result.ok, said
    finally:
        if gossip_back is None:
            ring.lab.kubectl("us", "exec", "-n", "ring", us_pod, "-c", "cassandra", "--", "nodetool",
                             "enablegossip", timeout=120)
        if "rollout" in locals() and not rollout.done():  # a failed check must not leave a rollout holding the lock
            rollout.cancel()
            with contextlib.suppress(BaseException):
                await rollout
        if "registry" in locals():
            await registry.close()
    assert any("gates pass" in m for c, m in said if c == "eu"), said
    after = _uids(ring, "eu")
    assert set(after) == set(eu_before) and all(after[p] != eu_before[p] for p in after), (eu_before, after)
    for pod in after:  # restarted only once the us node was back
        doc = json.loads(ring.lab.kubectl("eu", "get", "pod", "-n", "ring", pod, "-o", "json"))
        created = calendar.timegm(time.strptime(doc["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        assert created >= int(gossip_back) - 1, (pod, doc["metadata"]["creationTimestamp"], gossip_back)
    await _until("dc-eu sees the us node UN", lambda: _sees_us(ring, "UN"), 120)
