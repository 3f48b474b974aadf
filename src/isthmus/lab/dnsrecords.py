"""The lab DNS's records, built from Kubernetes objects: pure, no sockets, no API calls.

Owns: reading Services, EndpointSlices and ServiceExports (raw JSON in, small frozen values out),
the records kube-dns serves for one cluster (``cluster.local``) and those the MCS API (KEP-1645)
serves across the clusterset (``clusterset.local``), and answering one name (records, NODATA for
an existing name without that type, NXDOMAIN otherwise). Must not: talk to API servers or
sockets (:mod:`.dnsserver` does).

What resolves (the Kubernetes DNS specification and KEP-1645):

* ``<svc>.<ns>.svc.cluster.local``: the ClusterIP, or for a headless Service its endpoints'
  addresses: those ready (a missing ``ready`` condition counts as ready), all of them when the
  Service sets ``publishNotReadyAddresses``. ``<hostname>.<svc>.<ns>.svc.cluster.local`` for each
  such endpoint with a hostname (StatefulSet pods), ``<a-b-c-d>.<svc>...`` for the others.
  ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local`` SRV for named ports (ClusterIP: one target,
  the Service; headless: one per endpoint).
* ``<svc>.<ns>.svc.clusterset.local``: only while at least one cluster *exports* the Service
  (it has the Service and an export signal for it: a ``ServiceExport`` on ``mesh: cilium|both``,
  none on ``mesh: istio``, where nothing Isthmus renders answers clusterset.local). It resolves to
  the union of the exporting clusters' endpoint addresses (the lab runs no service proxy, so a
  clusterset VIP would lead nowhere: the lab answers with the endpoints for headless and
  ClusterSetIP Services alike). ``<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local`` per
  endpoint with a hostname; SRV for named ports.
* ExternalName Services and ``pod.cluster.local`` names are not served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any

from ..spec.fleet import Mesh

__all__ = [
    "CLUSTERSET_DOMAIN",
    "CLUSTER_DOMAIN",
    "Answer",
    "ClusterObjects",
    "DnsZone",
    "Records",
    "ServiceEndpoint",
    "ServiceInfo",
    "Srv",
    "build_zone",
    "exports_count",
    "objects_from",
    "parse_endpoints",
    "parse_export",
    "parse_service",
]

CLUSTER_DOMAIN = "cluster.local"
CLUSTERSET_DOMAIN = "clusterset.local"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True)
class ServiceInfo:
    """What DNS needs of a Service."""

    namespace: str
    name: str
    cluster_ip: IPv4Address | None  # None: headless (or ExternalName)
    headless: bool
    publish_not_ready: bool
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class ServiceEndpoint:
    """One endpoint of a Service (from an EndpointSlice), with the slice's ports."""

    namespace: str
    service: str
    address: IPv4Address
    ready: bool
    hostname: str | None
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class ClusterObjects:
    """A snapshot of one cluster: its Services, endpoints and exported ``(namespace, name)``s."""

    services: tuple[ServiceInfo, ...] = ()
    endpoints: tuple[ServiceEndpoint, ...] = ()
    exports: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # absolute, lowercase, no trailing dot


@dataclass
class Records:
    a: set[IPv4Address] = field(default_factory=set)
    srv: set[Srv] = field(default_factory=set)


class AnswerKind(StrEnum):
    RECORDS = "records"
    NODATA = "nodata"  # the name exists (maybe as an empty non-terminal), not with this type
    NXDOMAIN = "nxdomain"


@dataclass(frozen=True)
class Answer:
    kind: AnswerKind
    a: tuple[IPv4Address, ...] = ()
    srv: tuple[Srv, ...] = ()
    #: A records of SRV targets (the additional section)
    extra: tuple[tuple[str, tuple[IPv4Address, ...]], ...] = ()


@dataclass(frozen=True)
class DnsZone:
    """Every name the lab DNS of one cluster answers, and their ancestors inside the zones."""

    records: Mapping[str, Records]
    names: frozenset[str]

    def lookup(self, qname: str, qtype: str) -> Answer:
        """Answer ``qname`` (any case, trailing dot or not) for ``qtype`` ("A", "SRV", ...)."""
        name = qname.lower().rstrip(".")
        rec = self.records.get(name)
        if rec is None:
            return Answer(AnswerKind.NODATA if name in self.names else AnswerKind.NXDOMAIN)
        if qtype == "A" and rec.a:
            return Answer(AnswerKind.RECORDS, a=tuple(sorted(rec.a)))
        if qtype == "SRV" and rec.srv:
            srv = tuple(sorted(rec.srv, key=lambda s: (s.target, s.port)))
            extra = tuple((s.target, tuple(sorted(self.records[s.target].a)))
                          for s in srv if s.target in self.records and self.records[s.target].a)
            return Answer(AnswerKind.RECORDS, srv=srv, extra=extra)
        return Answer(AnswerKind.NODATA)


# ---------------------------------------------------------------------- parsing raw objects


def _ipv4(value: object) -> IPv4Address | None:
    try:
        return IPv4Address(str(value))
    except ValueError:
        return None


def _ports(raw: object) -> tuple[ServicePort, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for p in raw:
        if isinstance(p, dict) and p.get("name") and isinstance(p.get("port"), int):
            out.append(ServicePort(str(p["name"]).lower(), str(p.get("protocol") or "TCP").lower(), p["port"]))
    return tuple(out)


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo | None:
    """A Service's DNS facts, or None for what DNS does not serve (ExternalName, malformed)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    if not meta.get("name") or not meta.get("namespace") or spec.get("type") == "ExternalName":
        return None
    raw_ip = spec.get("clusterIP")
    headless = raw_ip in (None, "", "None")
    return ServiceInfo(
        namespace=str(meta["namespace"]), name=str(meta["name"]),
        cluster_ip=None if headless else _ipv4(raw_ip), headless=headless,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")), ports=_ports(spec.get("ports")),
    )


def parse_endpoints(obj: Mapping[str, Any]) -> tuple[ServiceEndpoint, ...]:
    """The IPv4 endpoints of one EndpointSlice (none for a slice of no Service)."""
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or obj.get("addressType", "IPv4") != "IPv4":
        return ()
    ports = _ports(obj.get("ports"))
    out = []
    for ep in obj.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        ready = conditions.get("ready") is not False  # nil means ready (discovery/v1)
        hostname = ep.get("hostname")
        for addr in ep.get("addresses") or []:
            ip = _ipv4(addr)
            if ip is not None:
                out.append(ServiceEndpoint(namespace=str(meta.get("namespace")), service=str(service), address=ip,
                                    ready=ready, hostname=str(hostname).lower() if hostname else None,
                                    ports=ports))
    return tuple(out)


def parse_export(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(namespace, name)`` of a ServiceExport (it exports the Service of the same name)."""
    meta = obj.get("metadata") or {}
    if not meta.get("name") or not meta.get("namespace") or meta.get("deletionTimestamp"):
        return None
    return str(meta["namespace"]), str(meta["name"])


def exports_count(mesh: Mesh) -> bool:
    """Whether a ``ServiceExport`` makes clusterset.local names on this mesh (Cilium's MCS-API support)."""
    return mesh in (Mesh.CILIUM, Mesh.BOTH)


# ---------------------------------------------------------------------- building the zone


def _dashed(ip: IPv4Address) -> str:
    return str(ip).replace(".", "-")


def _published(svc: ServiceInfo, endpoints: Iterable[ServiceEndpoint]) -> list[ServiceEndpoint]:
    return [e for e in endpoints if e.ready or svc.publish_not_ready]


class _Builder:
    def __init__(self) -> None:
        self.records: dict[str, Records] = {}

    def a(self, name: str, ip: IPv4Address) -> None:
        self.records.setdefault(name, Records()).a.add(ip)

    def srv(self, name: str, port: int, target: str) -> None:
        self.records.setdefault(name, Records()).srv.add(Srv(0, 100, port, target))

    def zone(self) -> DnsZone:
        names: set[str] = set()
        for name in self.records:
            labels = name.split(".")
            for i in range(len(labels)):
                names.add(".".join(labels[i:]))
        return DnsZone(records=self.records, names=frozenset(names))


def _local(b: _Builder, objects: ClusterObjects) -> None:
    by_service: dict[tuple[str, str], list[ServiceEndpoint]] = {}
    for e in objects.endpoints:
        by_service.setdefault((e.namespace, e.service), []).append(e)
    for svc in objects.services:
        base = f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}".lower()
        if not svc.headless:
            if svc.cluster_ip is None:
                continue
            b.a(base, svc.cluster_ip)
            for p in svc.ports:
                b.srv(f"_{p.name}._{p.protocol}.{base}", p.port, base)
            continue
        for e in _published(svc, by_service.get((svc.namespace, svc.name), [])):
            b.a(base, e.address)
            host = f"{e.hostname or _dashed(e.address)}.{base}"
            b.a(host, e.address)
            for p in e.ports:
                b.srv(f"_{p.name}._{p.protocol}.{base}", p.port, host)


def _clusterset(b: _Builder, clusters: Mapping[str, ClusterObjects]) -> None:
    for cluster, objects in sorted(clusters.items()):
        by_service: dict[tuple[str, str], list[ServiceEndpoint]] = {}
        for e in objects.endpoints:
            by_service.setdefault((e.namespace, e.service), []).append(e)
        for svc in objects.services:
            if (svc.namespace, svc.name) not in objects.exports:
                continue
            base = f"{svc.name}.{svc.namespace}.svc.{CLUSTERSET_DOMAIN}".lower()
            b.records.setdefault(base, Records())  # exported with no endpoints yet: NODATA, not NXDOMAIN
            for e in _published(svc, by_service.get((svc.namespace, svc.name), [])):
                b.a(base, e.address)
                if svc.headless and e.hostname:
                    host = f"{e.hostname}.{cluster}.{base}".lower()
                    b.a(host, e.address)
                    for p in e.ports:
                        b.srv(f"_{p.name}._{p.protocol}.{base}", p.port, host)
            if not svc.headless:
                for p in svc.ports:
                    b.srv(f"_{p.name}._{p.protocol}.{base}", p.port, base)


def build_zone(local: str, clusters: Mapping[str, ClusterObjects], *, mesh: Mesh) -> DnsZone:
    """The names the DNS of cluster ``local`` answers, given every cluster's objects."""
    b = _Builder()
    if local in clusters:
        _local(b, clusters[local])
    if exports_count(mesh):
        _clusterset(b, clusters)
    return b.zone()


def objects_from(services: Sequence[Mapping[str, Any]], slices: Sequence[Mapping[str, Any]],
                 exports: Sequence[Mapping[str, Any]]) -> ClusterObjects:
    """A :class:`ClusterObjects` from raw API objects."""
    return ClusterObjects(
        services=tuple(s for s in map(parse_service, services) if s is not None),
        endpoints=tuple(e for sl in slices for e in parse_endpoints(sl)),
        exports=frozenset(x for x in map(parse_export, exports) if x is not None),
    )
