"""A rack-parallel restart of a datacenter with RF 3 over 3 racks (issue 13 item 7): dc-eu grows by a rack r3
(its node joins through the rack step), every keyspace gets 3 replicas there on NetworkTopologyStrategy
(``spec.keyspaces``), ``rollout plan --live`` proves a rack at once, and ``isthmus restart --dc dc-eu`` restarts
rack after rack while a client at LOCAL_QUORUM sees no failed request. Then the ring is put back as it was
(the replication as the ring had it, r3 decommissioned and removed, no DN ghost). With RF 3 over 2 racks the
plan falls back to one node at a time: tests/rollout/test_restart_choice.py, and test_keyspaces' live plan."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.kube import PodPortForward

from .conftest import APP, ISTHMUS, Ring, cql, until

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.ringops, pytest.mark.timeout(2400)]

SYSTEM = ("system_auth", "system_distributed", "system_traces")
EU_PODS = ["ring-dc-eu-r1-0", "ring-dc-eu-r2-0", "ring-dc-eu-r3-0"]


def _isthmus(ring: Ring, *args: str, files: list[Path] | None = None, timeout: float = 1500) \
        -> subprocess.CompletedProcess[str]:
    spec = [a for f in (files or ring.files) for a in ("-f", str(f))]
    return subprocess.run([ISTHMUS, args[0], *args[1:], *spec, "--kubeconfig", str(ring.lab.kubeconfig)],
                          capture_output=True, text=True, timeout=timeout)


def _three_racks(ring: Ring) -> list[Path]:
    app: dict[str, Any] = copy.deepcopy(APP)
    eu = app["spec"]["datacenters"][0]
    eu["size"] = 3
    eu["racks"].append({"name": "r3", "zone": "europe-west1-c"})
    everywhere = {"dc-eu": 3, "dc-us": 1, "dc-ap": 1}
    app["spec"]["keyspaces"] = [*({"name": k, "replication": everywhere, "consistency": "ONE"} for k in SYSTEM),
                                {"name": "racks", "replication": {"dc-eu": 3}, "consistency": "LOCAL_QUORUM"}]
    path = ring.files[1].with_name("cassandra-3-racks.yaml")
    path.write_text(yaml.safe_dump(app))
    return [ring.files[0], path]


def _uids(ring: Ring) -> dict[str, str]:
    pods = json.loads(ring.lab.kubectl("eu", "get", "pods", "-n", "ring", "-o", "json"))["items"]
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}


def _eu_states(ring: Ring) -> list[str]:
    status = ring.nodetool("eu", "status")
    section = status.split("Datacenter: dc-eu", 1)[1].split("Datacenter:", 1)[0]
    return re.findall(r"^(UN|DN|UJ|UL|DJ|DL)\s", section, re.M)


class _Client:
    """Writes then reads a row at LOCAL_QUORUM, over and over, through a session to each dc-eu node (each
    through a port-forward on eu's API server). A request goes to the next node whose session answers, as a
    driver does when a coordinator is down; it fails when the node that took it says so (Unavailable, a
    timeout: too few replicas), or when no node at all would take it."""

    def __init__(self, sessions: list[Any]) -> None:
        self.sessions, self.ok, self.failed, self.errors = sessions, 0, 0, list[str]()
        self.stop = asyncio.Event()

    def _one(self, i: int) -> None:
        from cassandra import ConsistencyLevel, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.query import SimpleStatement

        write = SimpleStatement("INSERT INTO racks.kv (id, v) VALUES (%s, %s)",
                                consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        read = SimpleStatement("SELECT v FROM racks.kv WHERE id = %s", consistency_level=ConsistencyLevel.LOCAL_QUORUM)
        tried = []
        for k in range(len(self.sessions)):
            session = self.sessions[(i + k) % len(self.sessions)]
            try:
                session.execute(write, (i % 500, i), timeout=10)
                row = session.execute(read, (i % 500,), timeout=10).one()
            except (Unavailable, ReadTimeout, WriteTimeout) as exc:  # the coordinator answered: too few replicas
                self.failed += 1
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            except Exception as exc:  # this coordinator is down (restarting): the next one
                tried.append(type(exc).__name__)
                continue
            if row is None or row.v != i:
                self.failed += 1
                self.errors.append(f"row {i % 500} read back {row}")
            else:
                self.ok += 1
            return
        self.failed += 1
        self.errors.append(f"no node took request {i}: {tried}")

    async def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            await asyncio.to_thread(self._one, i)
            await asyncio.sleep(0.05)


@pytest.fixture
async def three_racks(ring: Ring) -> AsyncIterator[list[Path]]:
    """dc-eu on 3 racks, RF 3 there for every keyspace; afterwards the ring as it was."""
    started = time.monotonic()
    before = await _replication(ring)
    files = _three_racks(ring)
    grown = await asyncio.to_thread(_isthmus, ring, "apply", "--wait", "--timeout", "1200", files=files)
    assert grown.returncode == 0, grown.stdout + grown.stderr
    print(f"grew dc-eu by a rack in {time.monotonic() - started:.0f}s")
    try:
        yield files
    finally:
        started = time.monotonic()
        await _restore(ring, before)
        await asyncio.to_thread(ring.lab.kubectl, "eu", "exec", "-n", "ring", "ring-dc-eu-r3-0", "-c", "cassandra",
                                "--", "nodetool", "decommission", timeout=900)
        for kind, name in (("statefulset", "ring-dc-eu-r3"), ("pvc", "data-ring-dc-eu-r3-0")):
            await asyncio.to_thread(ring.lab.kubectl, "eu", "delete", kind, "-n", "ring", name, "--wait=true",
                                    timeout=300)
        back = await asyncio.to_thread(_isthmus, ring, "apply", "--wait", "--timeout", "900")
        assert back.returncode == 0, back.stdout + back.stderr
        assert await asyncio.to_thread(_eu_states, ring) == ["UN", "UN"]  # r3 left the ring: no DN ghost
        print(f"put the ring back in {time.monotonic() - started:.0f}s")


async def _replication(ring: Ring) -> dict[str, dict[str, str]]:
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        rows = await asyncio.to_thread(session.execute,
                                       "SELECT keyspace_name, replication FROM system_schema.keyspaces")
        return {r.keyspace_name: dict(r.replication) for r in rows if r.keyspace_name in SYSTEM}


async def _restore(ring: Ring, before: dict[str, dict[str, str]]) -> None:
    async with cql(ring, "eu", "cassandra-admin", ring.password()) as session:
        await asyncio.to_thread(session.execute, "DROP KEYSPACE IF EXISTS racks")
        for name, replication in before.items():
            await asyncio.to_thread(session.execute, f"ALTER KEYSPACE {name} WITH replication = "
                                                     + json.dumps(replication).replace('"', "'"))


async def test_a_rack_at_once_restart_of_rf3_over_3_racks_fails_no_local_quorum_request(
        ring: Ring, three_racks: list[Path]) -> None:
    assert _eu_states(ring) == ["UN", "UN", "UN"]
    plan = _isthmus(ring, "rollout", "plan", "--live", "-o", "json", files=three_racks)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    choices = {c["datacenter"]: c for c in json.loads(plan.stdout)["restarts"]}
    assert choices["dc-eu"]["rackAtOnce"] is True, choices
    assert "3 replicas over 3 racks" in choices["dc-eu"]["reason"], choices
    assert choices["dc-us"]["rackAtOnce"] is False and choices["dc-ap"]["rackAtOnce"] is False, choices

    registry = ring.registry()
    password = ring.password()
    try:
        async with AsyncExitStack() as stack:
            sessions = []
            for pod in EU_PODS:
                host, port = await stack.enter_async_context(PodPortForward(registry["eu"], "ring", pod, 9042))
                sessions.append(await stack.enter_async_context(_session(host, port, password)))
            await asyncio.to_thread(sessions[0].execute, "CREATE TABLE IF NOT EXISTS racks.kv (id int PRIMARY KEY, "
                                                         "v int)")
            client = _Client(sessions)
            before = _uids(ring)
            loop = asyncio.create_task(client.run())
            await until("the client's first requests", lambda: client.ok >= 20, 120, every=1)
            restart = await asyncio.to_thread(_isthmus, ring, "restart", "--dc", "dc-eu", "--poll", "2", "-o", "json",
                                              files=three_racks)
            await asyncio.sleep(5)
            client.stop.set()
            await loop
    finally:
        await registry.close()
    print(f"restart: {result_seconds(restart)}; client: {client.ok} requests ok, {client.failed} failed")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    result = json.loads(restart.stdout)
    assert result["phase"] == "Succeeded", result
    assert result["rounds"] == [[f"dc-eu/{p}"] for p in EU_PODS], result  # a rack (of one node) per round
    assert any(c.startswith("dc-eu: a rack at once is safe") for c in result["choices"]), result
    after = _uids(ring)
    assert all(after[p] != before[p] for p in EU_PODS), (before, after)
    assert client.failed == 0, client.errors[:10]
    assert client.ok >= 50, f"too few requests during the restart ({client.ok})"
    history = _isthmus(ring, "history", "-o", "json", files=three_racks)
    assert history.returncode == 0, history.stderr
    last = json.loads(history.stdout)["restarts"][-1]
    assert (last["phase"], last["done"], last["total"], last["datacenters"]) == ("Succeeded", 3, 3, ["dc-eu"]), last


def result_seconds(proc: subprocess.CompletedProcess[str]) -> str:
    try:
        return f"{json.loads(proc.stdout)['seconds']:.0f} s"
    except (ValueError, KeyError):
        return "no result"


def _session(host: str, port: int, password: str) -> Any:
    import contextlib

    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import ConstantReconnectionPolicy, WhiteListRoundRobinPolicy

    @contextlib.asynccontextmanager
    async def opened() -> Any:
        profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([host]), request_timeout=10.0)
        c = Cluster([host], port=port, auth_provider=PlainTextAuthProvider("cassandra-admin", password),
                    protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile}, connect_timeout=10.0,
                    control_connection_timeout=10.0, reconnection_policy=ConstantReconnectionPolicy(1.0))
        try:
            yield await asyncio.to_thread(c.connect)
        finally:
            await asyncio.to_thread(c.shutdown)

    return opened()
