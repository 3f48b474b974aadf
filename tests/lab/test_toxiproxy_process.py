"""The lab's Toxiproxy on its own, in front of a loopback echo server (no Kubernetes needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus.lab.binaries import ensure_toxiproxy
from isthmus.lab.errors import LabError
from isthmus.lab.latency import Link, ProxyState, Toxiproxy, start_proxy, stop_proxy

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def proxied(tmp_path: Path, echo_port: int) -> Iterator[ProxyState]:
    state = start_proxy(tmp_path, {"c1": echo_port}, ensure_toxiproxy())
    try:
        yield state
    finally:
        stop_proxy(tmp_path)


def round_trip(conn: socket.socket, payload: bytes = b"ping") -> float:
    started = time.monotonic()
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = conn.recv(4096)
        assert chunk, f"the proxy closed the connection after {got!r}"
        got += chunk
    assert got == payload
    return time.monotonic() - started


def test_a_round_trip_is_paid_once_per_request(proxied: ProxyState) -> None:
    with socket.create_connection(("127.0.0.1", proxied.listen["c1"]), timeout=10) as conn:
        round_trip(conn)
        with Toxiproxy(proxied.api_port) as api:
            api.set_link("c1", Link(rtt_ms=150))
        assert round_trip(conn) >= 0.15  # an open connection pays it too


def test_a_partition_accepts_and_healing_it_closes_what_it_held(proxied: ProxyState) -> None:
    with Toxiproxy(proxied.api_port) as api:
        api.set_link("c1", Link(partitioned=True))
        assert sorted(t["name"] for t in api.toxics("c1")) == ["partition-downstream", "partition-upstream"]
        with socket.create_connection(("127.0.0.1", proxied.listen["c1"]), timeout=10) as held:  # accepted
            held.sendall(b"lost in the partition")
            api.set_link("c1", Link())
            assert api.toxics("c1") == []
            assert held.recv(4096) == b""  # Toxiproxy closes what the timeout toxic held; clients reconnect
        with socket.create_connection(("127.0.0.1", proxied.listen["c1"]), timeout=10) as fresh:
            round_trip(fresh, b"after the partition")


def test_stopping_the_proxy_ends_its_process_and_forgets_it(tmp_path: Path, echo_port: int) -> None:
    state = start_proxy(tmp_path, {"c1": echo_port}, ensure_toxiproxy())
    assert state.process.alive() and ProxyState.load(tmp_path) == state
    stop_proxy(tmp_path)
    assert not state.process.alive()
    assert ProxyState.load(tmp_path) is None


def test_a_proxy_that_cannot_start_says_so_with_its_log(tmp_path: Path, echo_port: int) -> None:
    with pytest.raises(LabError, match=r"toxiproxy exited with code 1 \(log: .*toxiproxy.log\)"):
        start_proxy(tmp_path, {"c1": echo_port}, Path("/bin/false"))
