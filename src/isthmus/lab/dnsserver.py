"""The lab DNS: one process per cluster, answering on UDP and TCP 53 at the cluster's DNS IP.

Owns: watching Services, EndpointSlices and ServiceExports of the lab's clusters (list, then
watch; a missing ServiceExport CRD is "no exports", retried every few seconds), the listening
sockets (opened inside the cluster's network namespace by a thread that entered it, while the
watches reach the API servers on the host's 127.0.0.1), the DNS wire protocol (dnspython), and
the process entry point ``python -m isthmus.lab.dnsserver --state-dir DIR --cluster NAME``.
Must not: decide what a name resolves to; :mod:`.dnsrecords` does, from the watched objects.

Why dnspython and not CoreDNS: CoreDNS with its ``kubernetes`` and ``multicluster`` plugins would
be another Go build on a 2-core machine (minutes, and a plugin build of its own for the
clusterset zone), and its MCS plugin reads ServiceImports, which no controller in the lab writes.
A few hundred lines on dnspython (maintained, pure Python, typed) answer exactly the kube-dns and
KEP-1645 names, from the same objects a real mesh acts on, with freshness bounded by a watch.

A watch whose API server is unreachable (a stopped cluster) keeps that cluster's last known
objects, as a mesh agent keeps a lost peer's state until it reconnects, and retries every second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import httpx

from ..spec.fleet import Mesh
from .dnsrecords import AnswerKind, ClusterObjects, DnsZone, build_zone, exports_count, objects_from
from .netns import run_in_netns
from .podnet import LabNetwork
from .state import StateDir

__all__ = ["DNS_PORT", "TTL", "DnsServer", "ObjectWatch", "main", "respond"]

DNS_PORT = 53
#: seconds; CoreDNS's kubernetes plugin answers with a TTL of 5 s too
TTL = 5
SERVICES = "/api/v1/services"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SERVICE_EXPORTS = "/apis/multicluster.x-k8s.io/v1alpha1/serviceexports"
_RETRY = 1.0
_MISSING_RETRY = 3.0


class ObjectWatch:
    """The live objects of one resource in one cluster: list, then watch, in a daemon thread."""

    def __init__(self, client: httpx.Client, path: str, on_change: Callable[[], None],
                 stop: threading.Event) -> None:
        self._client, self._path, self._on_change, self._stop = client, path, on_change, stop
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch{path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def _replace(self, items: dict[str, dict[str, Any]]) -> None:
        with self._lock:
            self._items = items
        self._on_change()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._list_and_watch()
                self._stop.wait(0.05)  # the watch ended (timeout or ERROR event): list again
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:  # no such CRD (yet): nothing exported
                    if self.items():
                        self._replace({})
                    self.synced.set()
                    self._stop.wait(_MISSING_RETRY)
                    continue
                self._stop.wait(_RETRY)
            except (httpx.HTTPError, ValueError, KeyError, OSError):
                self._stop.wait(_RETRY)

    def _list_and_watch(self) -> None:
        r = self._client.get(self._path)
        r.raise_for_status()
        body = r.json()
        self._replace({_key(o): o for o in body.get("items") or []})
        self.synced.set()
        rv = str(body["metadata"]["resourceVersion"])
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "240"}
        timeout = httpx.Timeout(5.0, read=300.0)
        with self._client.stream("GET", self._path, params=params, timeout=timeout) as stream:
            stream.raise_for_status()
            for line in stream.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # e.g. 410 Gone: list again
                    return
                if kind == "BOOKMARK":
                    continue
                with self._lock:
                    if kind == "DELETED":
                        self._items.pop(_key(obj), None)
                    else:
                        self._items[_key(obj)] = obj
                self._on_change()


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _client(server: str, ca: Path, cert: Path, key: Path) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return httpx.Client(base_url=server, verify=ctx, timeout=5.0)


@dataclass(frozen=True)
class _Source:
    cluster: str
    services: ObjectWatch
    slices: ObjectWatch
    exports: ObjectWatch | None


def respond(zone: DnsZone, wire: bytes, *, tcp: bool) -> bytes | None:
    """The reply to one DNS message (None for garbage, which gets no reply)."""
    try:
        request = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(request)
    response.flags |= dns.flags.AA
    response.flags &= ~dns.flags.RA
    if request.opcode() != dns.opcode.QUERY or len(request.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if request.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
        return response.to_wire()
    question = request.question[0]
    qtype = dns.rdatatype.to_text(question.rdtype)
    ans = zone.lookup(question.name.to_text(), qtype)
    if question.rdclass != dns.rdataclass.IN or ans.kind is AnswerKind.NXDOMAIN:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif ans.kind is AnswerKind.RECORDS:
        if ans.a:
            response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", "A",
                                                            [str(ip) for ip in ans.a]))
        if ans.srv:
            targets = [f"{s.priority} {s.weight} {s.port} {s.target}." for s in ans.srv]
            response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", "SRV", targets))
            for target, ips in ans.extra:
                response.additional.append(dns.rrset.from_text_list(
                    dns.name.from_text(target), TTL, "IN", "A", [str(ip) for ip in ips]))
    limit = 65535 if tcp else (max(512, request.payload) if request.edns >= 0 else 512)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.answer.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()


class DnsServer:
    """The DNS of cluster ``local``: watches, a zone rebuilt on change, UDP and TCP listeners."""

    def __init__(self, state_dir: Path, local: str) -> None:
        state = StateDir(Path(state_dir)).load()
        if state is None:
            raise SystemExit(f"lab dns: no lab state in {state_dir}: start the lab first")
        spec = next((c.spec for c in state.clusters if c.spec.name == local), None)
        if spec is None:
            raise SystemExit(f"lab dns: the lab in {state_dir} has no cluster {local!r}")
        self.local, self.mesh, self.ip = local, Mesh(spec.mesh), spec.dns_service_ip
        self.netns = LabNetwork.for_specs(Path(state_dir), [c.spec for c in state.clusters]).cluster_netns(local)
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._dirty.set()
        self._zone_lock = threading.Lock()
        self._zone = DnsZone(records={}, names=frozenset())
        self._clients: list[httpx.Client] = []
        self._sources: list[_Source] = []
        dirs = StateDir(Path(state_dir))
        for cs in state.clusters:
            if cs.spec.name != local and not exports_count(self.mesh):
                continue  # only clusterset names need the other clusters
            pki = dirs.cluster(cs.spec.name).pki
            admin = pki.clients["admin"]
            client = _client(cs.ports.server, pki.ca.cert, admin.cert, admin.key)
            self._clients.append(client)
            self._sources.append(_Source(
                cluster=cs.spec.name,
                services=ObjectWatch(client, SERVICES, self._dirty.set, self._stop),
                slices=ObjectWatch(client, ENDPOINT_SLICES, self._dirty.set, self._stop),
                exports=ObjectWatch(client, SERVICE_EXPORTS, self._dirty.set, self._stop)
                if exports_count(self.mesh) else None,
            ))

    def zone(self) -> DnsZone:
        """The current zone, rebuilt from the watched objects when any of them changed."""
        with self._zone_lock:
            if self._dirty.is_set():
                self._dirty.clear()
                clusters: dict[str, ClusterObjects] = {
                    s.cluster: objects_from(s.services.items(), s.slices.items(),
                                            s.exports.items() if s.exports is not None else [])
                    for s in self._sources
                }
                self._zone = build_zone(self.local, clusters, mesh=self.mesh)
            return self._zone

    def answer(self, wire: bytes, *, tcp: bool) -> bytes | None:
        return respond(self.zone(), wire, tcp=tcp)

    # ------------------------------------------------------------------ sockets

    def _sockets(self) -> tuple[socket.socket, socket.socket]:
        def open_both() -> tuple[socket.socket, socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((str(self.ip), DNS_PORT))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((str(self.ip), DNS_PORT))
            tcp.listen(64)
            return udp, tcp

        return run_in_netns(self.netns, open_both)

    def _serve_udp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except OSError:
                return
            reply = self.answer(wire, tcp=False)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)

    def _serve_tcp(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10.0)
            try:
                while True:
                    head = _recv_exactly(conn, 2)
                    if head is None:
                        return
                    wire = _recv_exactly(conn, struct.unpack("!H", head)[0])
                    if wire is None:
                        return
                    reply = self.answer(wire, tcp=True)
                    if reply is None:
                        return
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    def serve_forever(self) -> None:
        udp, tcp = self._sockets()
        for source in self._sources:
            for w in (source.services, source.slices, source.exports):
                if w is not None:
                    w.start()
        # Serve once the local cluster's objects are listed, so the first answers are not empty.
        local = next(s for s in self._sources if s.cluster == self.local)
        deadline = time.monotonic() + 30.0
        while not (local.services.synced.is_set() and local.slices.synced.is_set()) and time.monotonic() < deadline:
            local.services.synced.wait(0.1)
        print(f"lab dns: cluster {self.local} serving {self.ip}:{DNS_PORT} (udp, tcp) in netns {self.netns};"
              f" mesh {self.mesh.value}", flush=True)
        threading.Thread(target=self._serve_tcp, args=(tcp,), name="dns-tcp", daemon=True).start()
        self._serve_udp(udp)


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m isthmus.lab.dnsserver", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="the lab's state folder")
    parser.add_argument("--cluster", required=True, help="the cluster whose DNS this is")
    args = parser.parse_args(argv)
    try:
        DnsServer(args.state_dir, args.cluster).serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
