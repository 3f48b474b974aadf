"""``isthmus guard run`` as its own process, in front of the lab's Cassandra 5.0: it runs on uvloop,
SIGHUP reloads the policy under an open driver session (which is not dropped), SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from isthmus.lab.cassandra import CassandraNode
from isthmus.lab.processes import free_ports

from .conftest import driver_cluster

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(300)]

#: Before: guardks.kv readable, guardks.open not writable.
BEFORE = """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["guardks.kv", "guardks.open"]
"""
#: After: guardks.open writable, guardks.kv no longer readable.
AFTER = """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select, insert]
        tables: ["guardks.open"]
"""




@dataclass
class GuardProcess:
    proc: subprocess.Popen[str]
    port: int
    metrics_url: str
    policy: Path
    flows: Path
    banner: str

    def metric(self, name: str) -> float:
        """One sample's value from /metrics (``name`` with its labels, as exposed)."""
        for line in httpx.get(self.metrics_url, timeout=10).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not exposed")


@pytest.fixture
def guard_process(guard_schema: CassandraNode, tmp_path: Path) -> Iterator[GuardProcess]:
    isthmus = Path(sys.executable).with_name("isthmus")
    assert isthmus.exists(), f"{isthmus}: the isthmus command is not installed in this environment"
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE)
    flows = tmp_path / "flows.jsonl"
    port, metrics_port = free_ports(2)
    proc = subprocess.Popen(
        [str(isthmus), "guard", "run", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"{guard_schema.host}:{guard_schema.port}", "--policy", str(policy),
         "--flows", str(flows), "--metrics", f"127.0.0.1:{metrics_port}"],
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    banner = proc.stderr.readline()
    try:
        assert "listening" in banner, banner + proc.stderr.read()
        yield GuardProcess(proc, port, f"http://127.0.0.1:{metrics_port}/metrics", policy, flows, banner)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _rewrite_unnoticed(path: Path, text: str) -> None:
    """Replace the file's content in place, keeping its inode, size and mtime: the guard's file
    poller cannot see the change, so only SIGHUP can make the guard read it."""
    st = path.stat()
    old = path.read_bytes()
    new = text.encode()
    assert len(new) <= len(old), "the new policy must not be longer than the old one"
    new += b"#" * (len(old) - len(new) - 1) + b"\n" if len(new) < len(old) else b""
    with path.open("r+b") as f:
        f.write(new)
        f.truncate()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_sighup_reloads_the_policy_without_dropping_the_session(
    guard_process: GuardProcess, guard_schema: CassandraNode
) -> None:
    from cassandra import Unauthorized

    g = guard_process
    assert "event loop: uvloop" in g.banner
    session = driver_cluster("127.0.0.1", g.port).connect()
    try:
        select_kv = session.prepare("SELECT v FROM guardks.kv WHERE k = ?")
        for _ in range(5):  # decided once, then from the connection's fast path
            assert session.execute(select_kv, (1,)).one().v == "one"
        with pytest.raises(Unauthorized, match="cqlguard"):
            session.execute("INSERT INTO guardks.open (k, v) VALUES (70, 'before')")
        connections = g.metric("isthmus_cqlguard_connections_total")
        assert connections >= 1

        _rewrite_unnoticed(g.policy, AFTER)
        checks = g.metric("isthmus_cqlguard_policy_checks_total")
        deadline = time.monotonic() + 10
        while g.metric("isthmus_cqlguard_policy_checks_total") < checks + 2:  # a whole look after the rewrite
            assert time.monotonic() < deadline, "the policy file poller did not look at the file"
            time.sleep(0.1)
        with pytest.raises(Unauthorized, match="cqlguard"):
            session.execute("INSERT INTO guardks.open (k, v) VALUES (70, 'unnoticed')")
        assert g.metric('isthmus_cqlguard_policy_reloads_total{result="success"}') == 0

        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                session.execute("INSERT INTO guardks.open (k, v) VALUES (70, 'after')")
                break
            except Unauthorized:
                assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
                time.sleep(0.1)
        # The statement the connection had already allowed is decided anew: now denied.
        with pytest.raises(Unauthorized, match="cqlguard"):
            session.execute(select_kv, (1,))
        assert session.execute("SELECT v FROM guardks.open WHERE k = 70").one().v == "after"

        assert g.metric('isthmus_cqlguard_policy_reloads_total{result="success"}') == 1
        assert g.metric("isthmus_cqlguard_connections_total") == connections  # nobody reconnected
        assert g.metric("isthmus_cqlguard_open_connections") == connections
    finally:
        session.cluster.shutdown()
        guard_schema.session().execute("DELETE FROM guardks.open WHERE k = 70")

    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(15) == 0
    lines = g.flows.read_text().splitlines()  # flushed on the way out
    assert any('"verdict":"DENIED"' in line and '"kind":"execute"' in line for line in lines)
    assert sum('"kind":"execute"' in line and '"verdict":"ALLOWED"' in line for line in lines) == 5
