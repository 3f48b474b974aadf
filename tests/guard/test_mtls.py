"""Mutual TLS end to end: real cassandra-driver clients with client certificates, through the real
guard, to the lab's Cassandra 5.0. Rules name a certificate's SPIFFE ID or its subject.

The CA, the guard's server certificate and the client certificates are made here with
``cryptography``: ``app`` carries a SPIFFE ID (URI SAN) and a subject, ``reporter`` a subject only,
``stranger`` is signed by another CA.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from isthmus.cqlguard.settings import TLSSettings
from isthmus.lab.cassandra import CassandraNode
from isthmus.lab.pki import Credential, PemAuthority, subject

from .conftest import RunningGuard, running_guard

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.timeout(300)]

APP_SPIFFE = "spiffe://lab.isthmus/ns/shop/sa/app"
APP_SUBJECT = "CN=app,O=acme"
REPORTER_SUBJECT = "CN=reporter,O=acme"

POLICY = f"""
rules:
  - name: app-by-spiffe
    identities: {{principals: ["{APP_SPIFFE}"]}}
    allow:
      - actions: [select]
        tables: ["guardks.kv"]
      - actions: [write]
        tables: ["guardks.open"]
  - name: app-by-subject
    identities: {{principals: ["{APP_SUBJECT}"]}}
    allow:
      - actions: [select]
        tables: ["guardks2.kv"]
  - name: reporter
    identities: {{principals: ["{REPORTER_SUBJECT}"]}}
    allow:
      - actions: [select]
        tables: ["guardks.kv"]
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (cert, key)


def _cred(root: Path, name: str) -> Credential:
    return Credential(root / f"{name}.crt", root / f"{name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = PemAuthority.new("isthmus test CA")
    ca.write(ca_files := _cred(root, "ca"))
    server = _cred(root, "server")
    ca.issue(server, subject("cqlguard", "acme"), ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    clients: dict[str, tuple[Path, Path]] = {}
    for name, sans in [
        ("app", [x509.UniformResourceIdentifier(APP_SPIFFE), x509.DNSName("app.shop.svc")]),
        ("reporter", None),
    ]:
        ca.issue(cred := _cred(root, name), subject(name, "acme"), ExtendedKeyUsageOID.CLIENT_AUTH, sans)
        clients[name] = (cred.cert, cred.key)
    # The same subject and SPIFFE ID, from a CA the guard does not trust.
    stranger = _cred(root, "stranger")
    PemAuthority.new("some other CA").issue(stranger, subject("app", "acme"), ExtendedKeyUsageOID.CLIENT_AUTH,
                                         [x509.UniformResourceIdentifier(APP_SPIFFE)])
    clients["stranger"] = (stranger.cert, stranger.key)
    ca_path, server_cert_path, server_key_path = ca_files.cert, server.cert, server.key
    return Pki(ca_path, server_cert_path, server_key_path, clients)


def _client_context(pki: Pki, client: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if client is not None:
        cert, key = pki.clients[client]
        ctx.load_cert_chain(cert, key)
    return ctx


@pytest.fixture
def mtls_guard(guard_schema: CassandraNode, tmp_path: Path, pki: Pki) -> Any:
    tls = TLSSettings(cert=pki.server_cert, key=pki.server_key, client_ca=pki.ca)
    with running_guard(guard_schema, tmp_path, policy=POLICY, tls=tls) as guard:
        yield guard


def test_rules_follow_the_client_certificate(mtls_guard: RunningGuard, pki: Pki) -> None:
    from cassandra import Unauthorized

    guard = mtls_guard
    app: Any = guard.connect(protocol_version=5, compression="lz4", ssl_context=_client_context(pki, "app"))
    assert app.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"  # by its SPIFFE ID
    assert app.execute("SELECT v FROM guardks2.kv WHERE k = 1").one().v == "two"  # by its subject
    select = app.prepare("SELECT v FROM guardks.kv WHERE k = ?")
    assert [app.execute(select, (1,)).one().v for _ in range(3)] == ["one"] * 3
    app.execute("INSERT INTO guardks.open (k, v) VALUES (60, 'by app')")
    with pytest.raises(Unauthorized, match=f"cqlguard: no rule allows insert on guardks.kv .*{APP_SPIFFE}"):
        app.execute("INSERT INTO guardks.kv (k, v) VALUES (61, 'by app')")

    reporter: Any = guard.connect(protocol_version=4, ssl_context=_client_context(pki, "reporter"))
    assert reporter.execute("SELECT v FROM guardks.kv WHERE k = 1").one().v == "one"
    with pytest.raises(Unauthorized, match="cqlguard"):
        reporter.execute("SELECT v FROM guardks2.kv WHERE k = 1")
    with pytest.raises(Unauthorized, match="cqlguard"):
        reporter.execute("INSERT INTO guardks.open (k, v) VALUES (62, 'by reporter')")

    direct = guard.upstream.session()
    assert direct.execute("SELECT v FROM guardks.open WHERE k = 60").one().v == "by app"
    assert direct.execute("SELECT v FROM guardks.kv WHERE k = 61").one() is None
    assert direct.execute("SELECT v FROM guardks.open WHERE k = 62").one() is None

    mine = [f for f in guard.flows() if f["l7"]["keyspace"] in ("guardks", "guardks2")]
    seen = {
        (f["source"]["principal"], f["source"]["subject"], f["l7"]["action"], f["l7"]["keyspace"], f["l7"]["table"],
         f["verdict"], f["rule"])
        for f in mine
    }
    assert seen == {
        (APP_SPIFFE, APP_SUBJECT, "select", "guardks", "kv", "ALLOWED", "app-by-spiffe"),
        (APP_SPIFFE, APP_SUBJECT, "select", "guardks2", "kv", "ALLOWED", "app-by-subject"),
        (APP_SPIFFE, APP_SUBJECT, "insert", "guardks", "open", "ALLOWED", "app-by-spiffe"),
        (APP_SPIFFE, APP_SUBJECT, "insert", "guardks", "kv", "DENIED", None),
        (REPORTER_SUBJECT, REPORTER_SUBJECT, "select", "guardks", "kv", "ALLOWED", "reporter"),
        (REPORTER_SUBJECT, REPORTER_SUBJECT, "select", "guardks2", "kv", "DENIED", None),
        (REPORTER_SUBJECT, REPORTER_SUBJECT, "insert", "guardks", "open", "DENIED", None),
    }
    executes = [f for f in mine if f["l7"]["kind"] == "execute"]
    assert len(executes) == 3 and all(f["source"]["principal"] == APP_SPIFFE for f in executes)
    app.execute("DELETE FROM guardks.open WHERE k = 60")


@pytest.mark.parametrize("client", [None, "stranger"], ids=["no-certificate", "other-ca"])
def test_a_client_without_a_trusted_certificate_is_refused(
    mtls_guard: RunningGuard, pki: Pki, client: str | None
) -> None:
    from cassandra.cluster import NoHostAvailable

    guard = mtls_guard
    with pytest.raises(NoHostAvailable):
        guard.connect(protocol_version=5, ssl_context=_client_context(pki, client))
    # The same with a bare TLS socket: the handshake (or the first read after it) fails.
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection((guard.host, guard.port), timeout=10) as raw,
        _client_context(pki, client).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"\x05\x00\x00\x00\x05\x00\x00\x00\x00")  # OPTIONS
        if not tls.recv(9):
            raise ConnectionResetError("closed by the guard")
    assert [f for f in guard.flows() if f["l7"]["keyspace"] is not None] == []
    assert guard.server.metrics.requests_total() == 0


def test_plain_tcp_is_refused_by_a_tls_guard(mtls_guard: RunningGuard) -> None:
    guard = mtls_guard
    with socket.create_connection((guard.host, guard.port), timeout=10) as raw:
        raw.sendall(b"\x05\x00\x00\x00\x05\x00\x00\x00\x00")  # OPTIONS, in the clear
        raw.settimeout(10)
        try:
            answer = raw.recv(9)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer[0] != 0x85  # closed (or a TLS alert), never a CQL answer
    assert guard.server.metrics.requests_total() == 0
