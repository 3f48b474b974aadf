"""A heap change rolls out rack by rack, each JVM restarting once with the new heap (issue 18)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import time

import pytest
import yaml

from .conftest import APP, ISTHMUS, Ring

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(1800)]


def _eu_down(ring: Ring) -> int | None:
    """How many dc-eu nodes are not UN, as a running dc-eu node sees it (None: none answered)."""
    for rack in (2, 1):
        try:
            status = ring.lab.kubectl("eu", "exec", "-n", "ring", ring.pod("eu", rack), "-c", "cassandra", "--",
                                      "nodetool", "status", timeout=60)
        except Exception:
            continue
        section = status.split("Datacenter: dc-eu", 1)[1].split("Datacenter:", 1)[0]
        states = re.findall(r"^(UN|DN|UJ|UL|DJ|DL)\s", section, re.M)
        return sum(1 for s in states if s != "UN") + max(0, 2 - len(states))
    return None


def _pods(ring: Ring) -> dict[str, tuple[str, int]]:
    out = {}
    for cluster in ("eu", "us", "ap"):
        for pod in json.loads(ring.lab.kubectl(cluster, "get", "pods", "-n", "ring", "-o", "json"))["items"]:
            restarts = sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses", []))
            out[f"{cluster}/{pod['metadata']['name']}"] = (pod["metadata"]["uid"], restarts)
    return out


async def test_a_heap_change_restarts_each_node_once_and_never_two_racks_of_a_dc_at_once(ring: Ring) -> None:
    before = _pods(ring)
    app = copy.deepcopy(APP)
    app["spec"]["resources"]["heap"] = "384M"  # type: ignore[index]
    changed = ring.files[1].with_name("cassandra-384m.yaml")
    changed.write_text(yaml.safe_dump(app))
    proc = await asyncio.to_thread(
        subprocess.Popen, [ISTHMUS, "apply", "-f", str(ring.files[0]), "-f", str(changed), "--wait", "--timeout",
                           "1500", "--kubeconfig", str(ring.lab.kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, set[str]] = {name: {uid} for name, (uid, _) in before.items()}
    worst = 0
    samples = 0
    deadline = time.monotonic() + 1600
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the rollout did not finish"
        down = await asyncio.to_thread(_eu_down, ring)
        if down is not None:
            samples += 1
            worst = max(worst, down)
        for name, (uid, _) in (await asyncio.to_thread(_pods, ring)).items():
            seen.setdefault(name, set()).add(uid)
        await asyncio.sleep(2)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out
    assert samples >= 5, f"too few samples of nodetool status ({samples})"
    assert worst <= 1, f"two dc-eu racks were down at once ({worst} not UN)"
    after = _pods(ring)
    assert set(after) == set(before)
    for name, (uid, restarts) in after.items():
        assert uid != before[name][0], f"{name} was not restarted"
        assert len(seen[name]) == 2, f"{name} was replaced more than once: {seen[name]}"
        assert restarts == 0, f"{name}'s new JVM restarted {restarts} times"
    for rack in (1, 2):
        info = ring.lab.kubectl("eu", "exec", "-n", "ring", ring.pod("eu", rack), "-c", "cassandra", "--",
                                "nodetool", "info", timeout=120)
        used_max = re.search(r"Heap Memory \(MB\)\s*:\s*([\d.]+)\s*/\s*([\d.]+)", info)
        assert used_max is not None, info
        assert 360 <= float(used_max.group(2)) <= 400, info
