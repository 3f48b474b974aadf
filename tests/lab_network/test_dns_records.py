"""The lab DNS's records (pure): kube-dns names, headless endpoints, SRV, clusterset per KEP-1645."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from isthmus.lab.dnsrecords import AnswerKind, ClusterObjects, build_zone, objects_from
from isthmus.lab.dnsserver import respond
from isthmus.spec.fleet import Mesh


def svc(name: str, ns: str = "app", *, ip: str | None = None, pnr: bool = False,
        ports: tuple[tuple[str, int], ...] = (("cql", 9042),)) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip or "None", "publishNotReadyAddresses": pnr,
                     "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports]}}


def eps(service: str, *endpoints: tuple[str, str | None, bool | None], ns: str = "app") -> dict[str, Any]:
    return {"metadata": {"name": f"{service}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "cql", "port": 9042, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], **({"hostname": h} if h else {}),
                           "conditions": {} if ready is None else {"ready": ready}}
                          for ip, h, ready in endpoints]}


def export(name: str, ns: str = "app") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}}


C1 = objects_from(
    [svc("web", ip="172.16.16.20"), svc("db"), svc("seeds", pnr=True)],
    [eps("db", ("10.1.128.5", "db-0", True), ("10.1.128.6", None, None), ("10.1.128.7", "db-2", False)),
     eps("seeds", ("10.1.128.8", "s-0", False))],
    [])
C2 = objects_from([svc("db")], [eps("db", ("10.2.128.5", "db-0", True), ("10.2.128.9", "db-1", False))],
                  [export("db")])


def ips(zone: Any, name: str) -> list[str]:
    ans = zone.lookup(name, "A")
    return [str(a) for a in ans.a]


def test_cluster_local_names_follow_kube_dns() -> None:
    zone = build_zone("c1", {"c1": C1, "c2": C2}, mesh=Mesh.CILIUM)
    assert ips(zone, "web.app.svc.cluster.local.") == ["172.16.16.20"]
    # headless: ready (or unset) endpoints only; not-ready ones only with publishNotReadyAddresses
    assert ips(zone, "DB.app.svc.cluster.local") == ["10.1.128.5", "10.1.128.6"]
    assert ips(zone, "db-0.db.app.svc.cluster.local") == ["10.1.128.5"]
    assert zone.lookup("db-2.db.app.svc.cluster.local", "A").kind is AnswerKind.NXDOMAIN
    assert ips(zone, "s-0.seeds.app.svc.cluster.local") == ["10.1.128.8"]
    assert zone.lookup("db.app.svc.cluster.local", "AAAA").kind is AnswerKind.NODATA
    assert zone.lookup("app.svc.cluster.local", "A").kind is AnswerKind.NODATA  # empty non-terminal
    assert zone.lookup("nope.app.svc.cluster.local", "A").kind is AnswerKind.NXDOMAIN
    assert zone.lookup("example.com", "A").kind is AnswerKind.NXDOMAIN


def test_srv_for_named_ports() -> None:
    zone = build_zone("c1", {"c1": C1}, mesh=Mesh.CILIUM)
    web = zone.lookup("_cql._tcp.web.app.svc.cluster.local", "SRV")
    assert [(s.port, s.target) for s in web.srv] == [(9042, "web.app.svc.cluster.local")]
    db = zone.lookup("_cql._tcp.db.app.svc.cluster.local", "SRV")
    assert [s.target for s in db.srv] == ["10-1-128-6.db.app.svc.cluster.local", "db-0.db.app.svc.cluster.local"]
    assert dict(db.extra)["db-0.db.app.svc.cluster.local"] == (IPv4Address("10.1.128.5"),)


def test_clusterset_resolves_only_what_some_cluster_exports() -> None:
    both = {"c1": C1, "c2": C2}
    zone = build_zone("c1", both, mesh=Mesh.CILIUM)
    assert ips(zone, "db.app.svc.clusterset.local") == ["10.2.128.5"]  # c1 does not export its db
    assert ips(zone, "db-0.c2.db.app.svc.clusterset.local") == ["10.2.128.5"]
    assert zone.lookup("db-1.c2.db.app.svc.clusterset.local", "A").kind is AnswerKind.NXDOMAIN
    c1_exports = ClusterObjects(C1.services, C1.endpoints, frozenset({("app", "db")}))
    union = build_zone("c2", {"c1": c1_exports, "c2": C2}, mesh=Mesh.BOTH)
    assert ips(union, "db.app.svc.clusterset.local") == ["10.1.128.5", "10.1.128.6", "10.2.128.5"]
    unexported = build_zone("c1", {"c1": C1, "c2": ClusterObjects(C2.services, C2.endpoints)}, mesh=Mesh.CILIUM)
    assert unexported.lookup("db.app.svc.clusterset.local", "A").kind is AnswerKind.NXDOMAIN
    # On Istio nothing Isthmus renders answers clusterset.local.
    istio = build_zone("c1", both, mesh=Mesh.ISTIO)
    assert istio.lookup("db.app.svc.clusterset.local", "A").kind is AnswerKind.NXDOMAIN
    assert ips(istio, "web.app.svc.cluster.local") == ["172.16.16.20"]


def test_wire_answers_are_authoritative_and_nxdomain_for_strangers() -> None:
    zone = build_zone("c1", {"c1": C1}, mesh=Mesh.CILIUM)
    ok = dns.message.from_wire(respond(zone, dns.message.make_query("db.app.svc.cluster.local", "A").to_wire(),
                                       tcp=False) or b"")
    assert ok.rcode() == dns.rcode.NOERROR and ok.flags & dns.flags.AA and not ok.flags & dns.flags.RA
    assert sorted(r.to_text() for r in ok.answer[0]) == ["10.1.128.5", "10.1.128.6"]
    assert ok.answer[0].ttl == 5
    srv = dns.message.from_wire(respond(zone, dns.message.make_query("_cql._tcp.db.app.svc.cluster.local", "SRV")
                                        .to_wire(), tcp=True) or b"")
    assert srv.answer[0].rdtype == dns.rdatatype.SRV and len(srv.answer[0]) == 2 and len(srv.additional) == 2
    nx = dns.message.from_wire(respond(zone, dns.message.make_query("example.com", "A").to_wire(), tcp=False) or b"")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert respond(zone, b"\x00garbage", tcp=False) is None
