"""Ring steps that wait or retry instead of failing. A failed ``nodetool rebuild`` is tried again,
``retry_wait`` apart on the injected clock, and after the last attempt the step fails naming the node, the
command and Cassandra's own words (issue 13 item 4); Cassandra's answers are scripted through the step's exec
seam (the ring test runs the real ``pods/exec``). A keyspace statement Cassandra answers with Unavailable waits
for the ring (the engine pauses on ClusterUnreachable) instead of failing the rollout."""

from __future__ import annotations

import asyncio

from lightkube.config.kubeconfig import KubeConfig

from isthmus.kube import ClusterConnection, ClusterRegistry, ExecResult
from isthmus.rollout.clock import FakeClock
from isthmus.rollout.datacenters import RingDatacenters
from isthmus.rollout.steps import Step, StepKind
from isthmus.spec import API_VERSION, CassandraCluster

REFUSED = ExecResult("", "error: Unable to find sufficient sources for streaming range (1,2] in keyspace shop\n"
                         "-- StackTrace --\njava.lang.IllegalStateException", 2)


def _app() -> CassandraCluster:
    return CassandraCluster.model_validate({
        "apiVersion": API_VERSION, "kind": "CassandraCluster", "metadata": {"name": "ring"},
        "spec": {"version": "5.0.2", "datacenters": [
            {"name": "dc-eu", "cluster": "eu", "size": 1, "racks": [{"name": "r1", "zone": "a"}]},
            {"name": "dc-ap", "cluster": "ap", "size": 1, "racks": [{"name": "r1", "zone": "a"}]}]}})


class Cassandra:
    """Answers each exec with the next scripted result, recording what was run where."""

    def __init__(self, *answers: ExecResult) -> None:
        self.answers, self.calls = list(answers), list[tuple[str, str, tuple[str, ...]]]()

    async def __call__(self, conn: ClusterConnection, namespace: str, pod: str, container: str,
                       command: tuple[str, ...], *, within: float) -> ExecResult:
        self.calls.append((conn.name, pod, tuple(command)))
        return self.answers.pop(0)


def _steps(cassandra: Cassandra, clock: FakeClock, said: list[str]) -> RingDatacenters:
    config = KubeConfig.from_server("https://127.0.0.1:1").get()
    assert config is not None
    registry = ClusterRegistry([ClusterConnection("ap", config)])
    return RingDatacenters(registry, _app(), cql=None, store=None,  # type: ignore[arg-type]
                           revision=1,
                           say=lambda _c, m: said.append(m), clock=clock, retry_wait=10.0, execute=cassandra)


STEP = Step(StepKind.REBUILD, "ap", datacenter="dc-ap", source="dc-eu", nodes=("ring-dc-ap-r1-0",))
COMMAND = ("nodetool", "rebuild", "--keyspace", "shop", "--", "dc-eu")


async def test_a_failed_rebuild_is_retried_after_the_wait_and_then_succeeds() -> None:
    clock, said = FakeClock(), list[str]()
    cassandra = Cassandra(REFUSED, ExecResult("", "", 0))
    work = asyncio.create_task(_steps(cassandra, clock, said)._command(STEP, "ring-dc-ap-r1-0", COMMAND))
    await clock.until_sleeping()
    assert len(cassandra.calls) == 1  # the second attempt waits for the clock
    await clock.advance(9.9)
    assert len(cassandra.calls) == 1 and not work.done()
    await clock.advance(0.1)
    assert await asyncio.wait_for(work, 5) == ""
    assert cassandra.calls == [("ap", "ring-dc-ap-r1-0", COMMAND)] * 2
    assert any("failed (attempt 1)" in m and "Unable to find sufficient sources" in m for m in said), said


async def test_three_failures_name_the_node_the_command_and_cassandras_words() -> None:
    clock, said = FakeClock(), list[str]()
    cassandra = Cassandra(REFUSED, REFUSED, REFUSED)
    work = asyncio.create_task(_steps(cassandra, clock, said)._command(STEP, "ring-dc-ap-r1-0", COMMAND))
    for _ in range(2):
        await clock.until_sleeping()
        await clock.advance(10.0)
    failure = await asyncio.wait_for(work, 5)
    assert len(cassandra.calls) == 3 and clock.sleepers() == 0  # no wait after the last attempt
    assert failure.startswith("ap/ring-dc-ap-r1-0: nodetool rebuild --keyspace shop -- dc-eu exited 2: "), failure
    assert "error: Unable to find sufficient sources for streaming range (1,2] in keyspace shop" in failure
    assert failure.endswith("(after 3 attempts)")


async def test_one_attempt_means_no_retry() -> None:
    clock, said = FakeClock(), list[str]()
    cassandra = Cassandra(REFUSED)
    steps = _steps(cassandra, clock, said)
    steps.attempts = 1
    failure = await asyncio.wait_for(steps._command(STEP, "ring-dc-ap-r1-0", COMMAND), 5)
    assert "(after 1 attempts)" in failure and len(cassandra.calls) == 1


def test_cassandras_unavailable_is_a_wait_not_a_failure_of_a_keyspace_step() -> None:
    from cassandra import ConsistencyLevel, InvalidRequest, Unavailable
    from cassandra.cluster import NoHostAvailable

    from isthmus.rollout.cqlsession import unavailable

    down = Unavailable("Cannot achieve consistency level LOCAL_ONE", ConsistencyLevel.LOCAL_ONE, 1, 0)
    assert unavailable(down)
    assert unavailable(NoHostAvailable("Unable to complete the operation against any hosts", {"h": down}))
    assert not unavailable(NoHostAvailable("Unable to complete the operation against any hosts",
                                            {"h": InvalidRequest("bad replication")}))
    assert not unavailable(InvalidRequest("bad replication"))
