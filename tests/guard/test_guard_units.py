"""Pure pieces of the guard, no sockets: settings values, the decision step, flow files."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest

from isthmus.cqlguard.flows import Flow, FlowFilter, FlowLog, FlowVerdict, FlowWriter, read_flows
from isthmus.cqlguard.guard import Disposition, Guard
from isthmus.cqlguard.policy import Identity, Policy
from isthmus.cqlguard.protocol import CQLConnection, Request
from isthmus.cqlguard.proxy import tls_principal
from isthmus.cqlguard.settings import Endpoint, GuardSettings, GuardSettingsError, Limits
from protocol import cqlwire as w

POLICY = Policy.from_yaml(
    """
rules:
  - name: app
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["a.*", "b.t"]
"""
)
ME = Identity(address=ipaddress.ip_address("127.0.0.1"))


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("text", ["127.0.0.1:9042", "[::1]:9042", "db.example:19042"])
def test_endpoint_round_trips(text: str) -> None:
    assert str(Endpoint.parse(text)) == text


@pytest.mark.parametrize("text", ["127.0.0.1", "::1:9042", "[zz]:1", ":9042", "h:99999"])
def test_bad_endpoints_are_user_errors(text: str) -> None:
    with pytest.raises(GuardSettingsError):
        Endpoint.parse(text)


def test_limits_are_validated() -> None:
    with pytest.raises(GuardSettingsError, match="max_connections"):
        Limits(max_connections=0)


# ------------------------------------------------------------------------------- guard


def _established(version: int = 4) -> CQLConnection:
    conn = CQLConnection()
    [startup] = conn.receive_client_data(w.startup(version, stream=0))
    assert isinstance(startup, Request)
    conn.forward_to_server(startup)
    [ready] = conn.receive_server_data(w.ready(version, 0))
    conn.forward_to_client(ready)
    return conn


def _request(conn: CQLConnection, data: bytes) -> Request:
    [event] = conn.receive_client_data(data)
    assert isinstance(event, Request)
    return event


def _check(guard: Guard, conn: CQLConnection, request: Request) -> Disposition:
    return guard.check(
        request, ME, connection_keyspace=conn.keyspace, keyspace_in_doubt=conn.keyspace_in_doubt
    ).step


def test_unqualified_requests_wait_while_a_use_is_in_flight() -> None:
    guard = Guard(POLICY, upstream="u")
    conn = _established()
    use = guard.check(_request(conn, w.query("USE a", stream=1)), ME, connection_keyspace=None)
    assert use.step is Disposition.FORWARD and use.changes_keyspace
    conn.forward_to_server(use.request, changes_keyspace=True)
    unqualified = _request(conn, w.query("SELECT * FROM t", stream=2))
    assert _check(guard, conn, unqualified) is Disposition.HOLD
    assert _check(guard, conn, _request(conn, w.query("SELECT * FROM b.t", stream=3))) is Disposition.FORWARD
    conn.receive_server_data(w.result_set_keyspace("a", stream=1))
    released = guard.check(unqualified, ME, connection_keyspace=conn.keyspace, keyspace_in_doubt=False)
    assert released.step is Disposition.FORWARD and released.request.keyspace == "a"


def test_preparing_a_use_does_not_change_the_keyspace_but_executing_it_does() -> None:
    guard = Guard(POLICY, upstream="u")
    conn = _established()
    prepare = guard.check(_request(conn, w.prepare("USE b", stream=1)), ME, connection_keyspace=None)
    assert prepare.step is Disposition.FORWARD and not prepare.changes_keyspace
    conn.forward_to_server(prepare.request)
    [prepared] = conn.receive_server_data(w.result_prepared(b"id-use-b", stream=1))
    guard.learn(prepared)
    execute = guard.check(_request(conn, w.execute(b"id-use-b", stream=2)), ME, connection_keyspace=None)
    assert execute.step is Disposition.FORWARD and execute.changes_keyspace


def test_unknown_prepared_ids_are_answered_unprepared_and_known_ones_rechecked() -> None:
    guard = Guard(POLICY, upstream="u")
    conn = _established()
    check = guard.check(_request(conn, w.execute(b"never-seen", stream=1)), ME, connection_keyspace=None)
    assert check.step is Disposition.UNPREPARED and check.unprepared_id == b"never-seen"
    prepare = guard.check(_request(conn, w.prepare("SELECT * FROM b.t", stream=2)), ME, connection_keyspace=None)
    conn.forward_to_server(prepare.request)
    [prepared] = conn.receive_server_data(w.result_prepared(b"id-bt", stream=2))
    guard.learn(prepared)
    assert _check(guard, conn, _request(conn, w.execute(b"id-bt", stream=3))) is Disposition.FORWARD
    guard.policy = Policy.from_yaml("rules: []")  # hot reload: the next EXECUTE is decided anew
    assert _check(guard, conn, _request(conn, w.execute(b"id-bt", stream=4))) is Disposition.DENY


def test_prepared_ids_are_per_upstream_node() -> None:
    guard_a = Guard(POLICY, upstream="node-a")
    conn = _established()
    prepare = guard_a.check(_request(conn, w.prepare("SELECT * FROM b.t", stream=1)), ME, connection_keyspace=None)
    conn.forward_to_server(prepare.request)
    [prepared] = conn.receive_server_data(w.result_prepared(b"id", stream=1))
    guard_a.learn(prepared)
    guard_b = Guard(POLICY, upstream="node-b", prepared=guard_a.prepared)
    assert _check(guard_b, conn, _request(conn, w.execute(b"id", stream=2))) is Disposition.UNPREPARED


def test_v5_keyspace_flag_wins_over_the_connection_keyspace() -> None:
    guard = Guard(POLICY, upstream="u")
    conn = _established(5)
    data = w.segment(w.query("SELECT * FROM t", version=5, stream=1, keyspace="secret"))
    [request] = conn.receive_client_data(data)
    assert isinstance(request, Request)
    assert guard.check(request, ME, connection_keyspace="a").step is Disposition.DENY


def test_tls_principal_prefers_spiffe_then_subject() -> None:
    cert = {
        "subject": ((("organizationName", "acme"),), (("commonName", "app"),)),
        "subjectAltName": (("DNS", "app.local"), ("URI", "spiffe://prod/ns/sales/sa/app")),
    }
    assert tls_principal(cert) == "spiffe://prod/ns/sales/sa/app"
    assert tls_principal({"subject": cert["subject"]}) == "CN=app,O=acme"
    assert tls_principal(None) is None


# ------------------------------------------------------------------------------- flows


def _flow(verdict: FlowVerdict, user: str | None = None) -> Flow:
    from isthmus.cqlguard.classify import classify

    return Flow(
        time=time.time(), verdict=verdict, source_ip="127.0.0.1", source_port=5000, user=user, principal=None,
        destination_ip="127.0.1.1", destination_port=9042, kind="query", stream=1,
        classification=classify("SELECT * FROM a.t"), rule=None, reason="r",
    )


def test_flow_writer_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    writer = FlowWriter(path, check_interval_s=0.0)
    writer.write(_flow(FlowVerdict.ALLOWED))
    path.rename(tmp_path / "flows.jsonl.1")  # logrotate moves the file away
    writer.write(_flow(FlowVerdict.DENIED))
    writer.close()
    assert [json.loads(x)["verdict"] for x in (tmp_path / "flows.jsonl.1").read_text().splitlines()] == ["ALLOWED"]
    assert [json.loads(x)["verdict"] for x in path.read_text().splitlines()] == ["DENIED"]


def test_read_flows_filters_and_skips_noise(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    writer = FlowWriter(path)
    for verdict, user in [(FlowVerdict.ALLOWED, "a"), (FlowVerdict.DENIED, "a"), (FlowVerdict.DENIED, "b")]:
        writer.add(_flow(verdict, user))
    writer.close()
    with path.open("a") as f:
        f.write("not json\n[1]\n")
    denied_b = list(read_flows(path, FlowFilter(verdict=FlowVerdict.DENIED, user="b")))
    assert [(r["verdict"], r["source"]["user"]) for r in denied_b] == [("DENIED", "b")]
    assert len(list(read_flows(path, FlowFilter(table="a.t")))) == 3
    assert list(read_flows(path, FlowFilter(table="a.other"))) == []


def test_follow_reads_new_lines_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    writer = FlowWriter(path, check_interval_s=0.0)
    writer.write(_flow(FlowVerdict.ALLOWED, "first"))
    got: list[str] = []
    stop = threading.Event()

    def follow() -> None:
        for record in read_flows(path, follow=True, poll_s=0.02, stop=stop.is_set):
            got.append(record["source"]["user"])

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while got != ["first"]:  # the follower read the file to its end: it follows it now
            assert time.monotonic() < deadline, "the follower did not read the first line"
            time.sleep(0.01)
        writer.write(_flow(FlowVerdict.ALLOWED, "second"))
        path.rename(tmp_path / "old.jsonl")
        writer.write(_flow(FlowVerdict.ALLOWED, "third"))
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        writer.close()
    assert got == ["first", "second", "third"]


def test_flow_template_renders_the_flows_own_line() -> None:
    for latency in (None, 0.0004, 1.5, 1234.56789):
        flow = dataclasses.replace(_flow(FlowVerdict.ALLOWED, 'us"er%s'), upstream_latency_ms=latency, stream=77)
        line = flow.to_line()
        assert line.endswith("\n") and "\n" not in line[:-1]
        record = json.loads(line)
        assert record == flow.to_json()
        assert list(record) == ["time", "verdict", "source", "destination", "l7", "rule", "reason",
                                "upstream_latency_ms", "summary"]
        assert record["l7"]["stream"] == 77 and record["source"]["user"] == 'us"er%s'
        expected = None if latency is None else round(latency, 3)
        assert record["upstream_latency_ms"] == expected
        assert flow.template().render(flow.time, flow.stream, latency) == line


def test_flow_writer_caps_the_file_and_keeps_one_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    line_size = len(_flow(FlowVerdict.ALLOWED, "u00").to_line().encode())
    writer = FlowWriter(path, max_bytes=3 * line_size + 10)
    written: list[str] = []
    for i in range(10):  # one line a flush: rotates before the 4th, 7th and 10th line
        writer.write(_flow(FlowVerdict.ALLOWED, f"u{i:02d}"))
        written.append(f"u{i:02d}")
        assert path.stat().st_size <= writer.max_bytes
    writer.close()

    def users(p: Path) -> list[str]:
        return [json.loads(line)["source"]["user"] for line in p.read_text().splitlines()]

    assert writer.rotations == 3
    assert users(path.with_name("flows.jsonl.1")) == written[6:9]
    assert users(path) == written[9:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.jsonl", "flows.jsonl.1"]


def test_flow_writer_without_a_cap_never_rotates(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    writer = FlowWriter(path, max_bytes=0)
    for i in range(50):
        writer.add(_flow(FlowVerdict.DENIED, f"u{i}"))
    writer.close()
    assert writer.rotations == 0 and len(path.read_text().splitlines()) == 50
    assert not path.with_name("flows.jsonl.1").exists()


def test_flow_writer_batches_lines_until_flushed(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    writer = FlowWriter(path, flush_bytes=10_000)
    for i in range(5):
        writer.add(_flow(FlowVerdict.ALLOWED, f"u{i}"))
    assert path.read_text() == "" and writer.pending == 5 and not writer.due
    while not writer.due:
        writer.add(_flow(FlowVerdict.ALLOWED, "more"))
    writer.flush()
    assert writer.pending == 0 and len(path.read_text().splitlines()) == writer.written
    writer.close()


def test_the_flow_log_writes_on_its_own_thread(tmp_path: Path) -> None:
    """The event loop only hands lines over; the writer thread writes them, at once when enough
    are waiting (long before the 60 s period), and ``close`` writes what is left."""
    path = tmp_path / "flows.jsonl"
    log = FlowLog(path, flush_interval_s=60.0, flush_bytes=1000)
    writers: list[int] = []
    write_lines = log._writer.write_lines

    def recording(lines: list[str]) -> None:
        writers.append(threading.get_ident())
        write_lines(lines)

    log._writer.write_lines = recording  # type: ignore[method-assign]
    lines = [_flow(FlowVerdict.ALLOWED, f"u{i}").to_line() for i in range(3)]
    while sum(map(len, lines)) < 1000:
        lines.append(_flow(FlowVerdict.DENIED, "more").to_line())
    log.add_lines(lines)  # returns at once; the file is the thread's
    deadline = time.monotonic() + 10
    while len(path.read_text().splitlines()) < len(lines):
        assert time.monotonic() < deadline, "the writer thread did not write a due batch"
        time.sleep(0.02)
    assert writers and threading.get_ident() not in writers
    log.add_lines([lines[0]])
    log.flush()  # from this thread: written before it returns
    assert len(path.read_text().splitlines()) == len(lines) + 1
    log.add_lines([lines[1]])
    log.close()
    assert path.read_text().splitlines() == [line.rstrip("\n") for line in [*lines, lines[0], lines[1]]]
    assert log.written == len(lines) + 2 and log.errors == 0


def test_settings_refuse_a_negative_flows_cap() -> None:
    with pytest.raises(GuardSettingsError, match="flows-max-bytes"):
        GuardSettings(
            listen=(Endpoint("127.0.0.1", 0),), upstream=Endpoint("127.0.0.1", 9042), policy_path=Path("p"),
            flows_max_bytes=-1,
        )


@pytest.mark.parametrize(("listen", "upstream", "problem"), [
    ((), "127.0.0.2:9042", "at least one --listen"),
    (("127.0.0.1:9042", "127.0.0.1:9042"), "127.0.0.2:9042", "repeat"),
    (("10.0.0.1:9042", "127.0.0.2:9042"), "127.0.0.2:9042", "would loop"),
])
def test_settings_refuse_listen_addresses_that_cannot_work(listen: tuple[str, ...], upstream: str,
                                                            problem: str) -> None:
    with pytest.raises(GuardSettingsError, match=problem):
        GuardSettings(listen=tuple(Endpoint.parse(e) for e in listen), upstream=Endpoint.parse(upstream),
                      policy_path=Path("p"))
