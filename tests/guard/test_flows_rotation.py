"""The flows file stays under its cap (one rotated file is kept), and ``isthmus guard flows --follow``,
run as its own process, keeps following across the guard's rotations: real driver, real guard,
the lab's Cassandra 5.0."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus.lab.cassandra import CassandraNode

from .conftest import running_guard

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(300)]

CAP = 4096
QUERIES = 24


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    with contextlib.suppress(OSError):
        return any(str(fd.readlink()) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    return False


def test_follow_survives_the_guards_own_rotation(guard_schema: CassandraNode, tmp_path: Path) -> None:
    with running_guard(guard_schema, tmp_path, flows_max_bytes=CAP, flush_s=0.1) as guard:
        session: Any = guard.connect(protocol_version=4)
        guard.run(lambda: guard.server.flows.flush() if guard.server.flows else None)
        isthmus = Path(sys.executable).with_name("isthmus")
        follower = subprocess.Popen(
            [str(isthmus), "guard", "flows", "--follow", "--table", "guardks.kv", str(guard.flows_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        seen: list[dict[str, Any]] = []

        def read() -> None:
            assert follower.stdout is not None
            for line in follower.stdout:
                seen.append(json.loads(line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            # The follower is reading the first file (its start-up takes seconds on a busy machine).
            deadline = time.monotonic() + 60
            while not _has_open(follower.pid, guard.flows_path):
                assert follower.poll() is None and time.monotonic() < deadline, "the follower did not start"
                time.sleep(0.05)
            sizes = []
            for i in range(QUERIES):
                session.execute(f"SELECT v FROM guardks.kv WHERE k = {1000 + i}")  # a distinct line each
                time.sleep(0.3)  # a flush each: about 5 lines per file, several rotations
                sizes.append(guard.flows_path.stat().st_size)
            deadline = time.monotonic() + 15
            while len(seen) < QUERIES and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            follower.terminate()
            follower.wait(10)
            reader.join(5)
        rotations = guard.run(lambda: guard.server.flows.rotations if guard.server.flows else 0)

    assert rotations >= 3
    assert max(sizes) <= CAP
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("flows")) == [
        "flows.jsonl", "flows.jsonl.1"
    ]
    assert len(seen) == QUERIES, f"followed {len(seen)} of {QUERIES} flows across {rotations} rotations"
    assert all(r["verdict"] == "ALLOWED" and r["l7"]["table"] == "kv" for r in seen)
    # In order, none twice: the follower read each file to its end before the next one.
    stamps = [r["time"] for r in seen]
    assert stamps == sorted(stamps) and len(set(stamps)) == QUERIES
