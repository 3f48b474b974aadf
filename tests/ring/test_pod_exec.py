"""``kube.pod_exec``: a command in a real pod's container through its API server, as the control plane runs
``nodetool``: stdout and stderr apart, the exit status as the command left it, and refusals named."""

from __future__ import annotations

import pytest

from isthmus.kube import ExecError, pod_exec

from .conftest import Ring

pytestmark = [pytest.mark.lab, pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(600)]


async def test_streams_and_exit_status_come_back_apart(ring: Ring) -> None:
    registry = ring.registry()
    try:
        conn = registry["us"]
        result = await pod_exec(conn, "ring", ring.pod("us"), "cassandra",
                                ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"], within=60)
        assert (result.stdout, result.stderr, result.exit_code, result.ok) == ("to-out\n", "to-err\n", 3, False)
        status = await pod_exec(conn, "ring", ring.pod("us"), "cassandra", ["nodetool", "status"], within=120)
        assert status.ok and "Datacenter: dc-us" in status.stdout and "UN " in status.stdout
        missing = await pod_exec(conn, "ring", ring.pod("us"), "cassandra", ["no-such-command"], within=60)
        assert not missing.ok and "no-such-command" in missing.stderr
        with pytest.raises(ExecError, match="ring/no-such-pod"):
            await pod_exec(conn, "ring", "no-such-pod", "cassandra", ["true"], within=60)
    finally:
        await registry.close()
