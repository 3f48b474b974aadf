"""Preflight: the live clusters checked against the plan, before anything is deployed.

Owns: reading what a cluster already is (:func:`gather_facts`: nodes' addresses and pod CIDRs,
Services' ClusterIPs, an existing ``cilium-config``, the CoreDNS domain) and judging it against a
plan (:func:`judge`, pure: facts in, findings out, so the decisions are tested without a cluster).
:func:`preflight` does both for every cluster of a registry, concurrently; a cluster that does not
answer within the connection timeout is a blocker, not a hang.
Must not: change anything in a cluster (every call here is a read) or decide the plan.

What blocks a deploy
====================
* an API server that does not answer (or refuses us);
* a ClusterIP outside the planned service CIDR, above all the ``kubernetes`` Service's: the API
  server's ``--service-cluster-ip-range`` is not what the plan says;
* a planned pod CIDR that holds a node address (of this cluster or any other: ClusterMesh routes
  pod CIDRs across clusters), a ClusterIP, or nodes whose ``spec.podCIDRs`` lie outside it;
* a ``cilium-config`` whose ``cluster-id`` or ``cluster-name`` differs from the plan, or one cluster
  ID live in two clusters (identities would collide across the mesh);
* a ``cilium-config`` MTU other than the plan's underlay MTU (pods of one cluster would send
  packets a peer drops).

Warnings: an unknown DNS domain (no ``coredns`` ConfigMap: ``cluster.local`` is assumed), a domain
other than ``cluster.local`` (rendered names assume it), Cilium running without a cluster ID.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Node, Service

from ..netplan import ClusterPlan, NetworkPlan
from ..spec.fleet import Mesh
from .connection import ClusterConnection
from .fanout import Reach, across
from .fetching import get_object

__all__ = [
    "DEFAULT_DNS_DOMAIN",
    "ClusterFacts",
    "PreflightCheck",
    "PreflightFinding",
    "PreflightReport",
    "PreflightSeverity",
    "gather_facts",
    "judge",
    "preflight",
]

DEFAULT_DNS_DOMAIN = "cluster.local"
_SYSTEM = "kube-system"
_COREDNS_ZONE = re.compile(r"^\s*kubernetes\s+(\S+)", re.MULTILINE)
_SHOWN = 3  # how many offending addresses a message lists

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class PreflightSeverity(StrEnum):
    BLOCKER = "blocker"
    WARNING = "warning"


class PreflightCheck(StrEnum):
    """What a finding is about, so a message, a test and the docs can point at one."""

    REACHABLE = "reachable"
    SERVICE_CIDR = "service-cidr"
    POD_CIDR = "pod-cidr"
    CLUSTER_ID = "cluster-id"
    MTU = "mtu"
    DNS_DOMAIN = "dns-domain"


@dataclass(frozen=True)
class PreflightFinding:
    cluster: str
    check: PreflightCheck
    severity: PreflightSeverity
    message: str

    def __str__(self) -> str:
        return f"[{self.check.value}] cluster {self.cluster}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"cluster": self.cluster, "check": self.check.value, "severity": self.severity.value,
                "message": self.message}


@dataclass(frozen=True)
class ClusterFacts:
    """What one cluster is today, as read from its API server."""

    name: str
    node_ips: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)  # node -> InternalIPs
    node_pod_cidrs: Mapping[str, tuple[IPNetwork, ...]] = field(default_factory=dict)  # node -> spec.podCIDRs
    cluster_ips: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)  # "ns/name" -> ClusterIPs
    cilium_config: Mapping[str, str] | None = None  # kube-system/cilium-config data, None when absent
    dns_domain: str | None = None  # from kube-system/coredns, None when not discoverable

    @property
    def kubernetes_ips(self) -> tuple[IPAddress, ...]:
        return self.cluster_ips.get("default/kubernetes", ())

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes": {n: [str(a) for a in ips] for n, ips in self.node_ips.items()},
            "nodePodCIDRs": {n: [str(c) for c in cidrs] for n, cidrs in self.node_pod_cidrs.items() if cidrs},
            "kubernetesServiceIPs": [str(a) for a in self.kubernetes_ips],
            "services": len(self.cluster_ips),
            "ciliumConfig": ({k: self.cilium_config[k] for k in ("cluster-id", "cluster-name", "mtu")
                              if k in self.cilium_config} if self.cilium_config is not None else None),
            "dnsDomain": self.dns_domain,
        }


@dataclass(frozen=True)
class PreflightReport:
    """Every finding, and the facts of each cluster that answered (by name)."""

    fleet: str
    findings: tuple[PreflightFinding, ...]
    facts: Mapping[str, ClusterFacts]
    clusters: tuple[str, ...]

    @property
    def blockers(self) -> tuple[PreflightFinding, ...]:
        return tuple(f for f in self.findings if f.severity is PreflightSeverity.BLOCKER)

    @property
    def warnings(self) -> tuple[PreflightFinding, ...]:
        return tuple(f for f in self.findings if f.severity is PreflightSeverity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.blockers

    def to_dict(self) -> dict[str, object]:
        return {
            "fleet": self.fleet, "ok": self.ok,
            "blockers": [f.to_dict() for f in self.blockers],
            "warnings": [f.to_dict() for f in self.warnings],
            "clusters": {name: ({"reachable": True, **self.facts[name].to_dict()} if name in self.facts
                                else {"reachable": False}) for name in self.clusters},
        }


# ---------------------------------------------------------------------------------------------- reading


def _addresses(values: Sequence[str | None]) -> tuple[IPAddress, ...]:
    out: list[IPAddress] = []
    for value in values:
        if not value or value == "None":  # a headless Service's clusterIP is the string "None"
            continue
        try:
            out.append(ipaddress.ip_address(value))
        except ValueError:
            continue  # not an address (a hostname-type entry); nothing to judge
    return tuple(dict.fromkeys(out))  # clusterIPs repeats clusterIP: each address once, in order


def _networks(values: Sequence[str | None]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for value in values:
        if value:
            try:
                out.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                continue
    return tuple(dict.fromkeys(out))


def dns_domain_of(corefile: str) -> str | None:
    """The zone of CoreDNS's ``kubernetes`` plugin (``kubernetes cluster.local in-addr.arpa ...``)."""
    found = _COREDNS_ZONE.search(corefile)
    return found.group(1).rstrip(".") if found else None


async def _config_map(conn: ClusterConnection, name: str) -> dict[str, str] | None:
    found = await get_object(conn, ConfigMap, name, _SYSTEM)
    return dict(found.data or {}) if found is not None else None


async def gather_facts(conn: ClusterConnection) -> ClusterFacts:
    """Read one cluster's nodes, Services, ``cilium-config`` and CoreDNS domain (reads only)."""

    async def nodes(client: AsyncClient) -> list[Node]:
        return [n async for n in client.list(Node)]

    async def services(client: AsyncClient) -> list[Service]:
        return [s async for s in client.list(Service, namespace="*")]

    node_ips: dict[str, tuple[IPAddress, ...]] = {}
    node_pods: dict[str, tuple[IPNetwork, ...]] = {}
    for node in await conn.call("list", "Nodes", nodes):
        name = node.metadata.name if node.metadata and node.metadata.name else "?"
        addresses = (node.status.addresses or []) if node.status else []
        node_ips[name] = _addresses([a.address for a in addresses if a.type == "InternalIP"])
        node_spec = node.spec
        node_pods[name] = _networks([*(node_spec.podCIDRs or []), node_spec.podCIDR] if node_spec else [])
    cluster_ips: dict[str, tuple[IPAddress, ...]] = {}
    for svc in await conn.call("list", "Services", services):
        meta, spec = svc.metadata, svc.spec
        if meta is None or spec is None:
            continue
        cluster_ips[f"{meta.namespace}/{meta.name}"] = _addresses([*(spec.clusterIPs or []), spec.clusterIP])
    coredns = await _config_map(conn, "coredns")
    corefile = (coredns or {}).get("Corefile")
    return ClusterFacts(
        name=conn.name, node_ips=node_ips, node_pod_cidrs=node_pods, cluster_ips=cluster_ips,
        cilium_config=await _config_map(conn, "cilium-config"),
        dns_domain=dns_domain_of(corefile) if corefile else None,
    )


# --------------------------------------------------------------------------------------------- judging


def _planned(cluster: ClusterPlan, kind: str) -> tuple[IPNetwork, ...]:
    nets = (cluster.pod_cidr, cluster.pod_cidr_v6) if kind == "pod" else (cluster.service_cidr,
                                                                          cluster.service_cidr_v6)
    return tuple(n for n in nets if n is not None)


def _inside(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _subnet(inner: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(inner, IPv4Network) and isinstance(outer, IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, IPv6Network) and isinstance(outer, IPv6Network):
        return inner.subnet_of(outer)
    return False


def _few(items: Sequence[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _judge_services(planned: ClusterPlan, facts: ClusterFacts) -> list[PreflightFinding]:
    out: list[PreflightFinding] = []
    services = _planned(planned, "service")
    planned_text = " / ".join(map(str, services)) or "none"
    families = {n.version for n in services}
    api_ips = [a for a in facts.kubernetes_ips if a.version in families]
    wrong_api = [a for a in api_ips if not _inside(a, services)]
    if wrong_api:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.SERVICE_CIDR, PreflightSeverity.BLOCKER,
            f"the kubernetes Service has ClusterIP {wrong_api[0]}, outside the planned service CIDR {planned_text}: "
            "the API server's --service-cluster-ip-range differs from the plan; set spec.clusters[].serviceCIDR "
            "to the cluster's real range and re-plan"))
    stray = [f"{name} ({a})" for name, ips in sorted(facts.cluster_ips.items()) if name != "default/kubernetes"
             for a in ips if a.version in families and not _inside(a, services)]
    if stray:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.SERVICE_CIDR, PreflightSeverity.BLOCKER,
            f"{len(stray)} Service ClusterIP(s) outside the planned service CIDR {planned_text}: {_few(stray)}; "
            "the plan's serviceCIDR is not the cluster's"))
    unplanned = sorted({a.version for ips in facts.cluster_ips.values() for a in ips} - families)
    if unplanned:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.SERVICE_CIDR, PreflightSeverity.WARNING,
            f"the cluster has IPv{unplanned[0]} ClusterIPs but the plan gives it no IPv{unplanned[0]} service CIDR; "
            "check ipFamily"))
    return out


def _judge_pods(planned: ClusterPlan, facts: ClusterFacts, everyone: Mapping[str, ClusterFacts]
                ) -> list[PreflightFinding]:
    out: list[PreflightFinding] = []
    pods = _planned(planned, "pod")
    planned_text = " / ".join(map(str, pods)) or "none"
    clashes = [f"node {node} ({a}) of {other.name}" for other in everyone.values()
               for node, ips in sorted(other.node_ips.items()) for a in ips if _inside(a, pods)]
    if clashes:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.POD_CIDR, PreflightSeverity.BLOCKER,
            f"the planned pod CIDR {planned_text} holds node addresses: {_few(clashes)}; pods and nodes would share "
            "addresses and routes; choose a pod CIDR (or podSupernet/avoid) away from the node networks"))
    in_services = [f"{name} ({a})" for name, ips in sorted(facts.cluster_ips.items()) for a in ips
                   if _inside(a, pods)]
    if in_services:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.POD_CIDR, PreflightSeverity.BLOCKER,
            f"the planned pod CIDR {planned_text} holds Service ClusterIPs: {_few(in_services)}"))
    outside = [f"{node} ({cidr})" for node, cidrs in sorted(facts.node_pod_cidrs.items()) for cidr in cidrs
               if not any(_subnet(cidr, p) for p in pods)]
    if outside:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.POD_CIDR, PreflightSeverity.BLOCKER,
            f"nodes already have pod CIDRs outside the planned {planned_text}: {_few(outside)}; the cluster's "
            "--cluster-cidr is not the plan's podCIDR: set spec.clusters[].podCIDR to it and re-plan"))
    return out


def _judge_cilium(plan: NetworkPlan, planned: ClusterPlan, facts: ClusterFacts) -> list[PreflightFinding]:
    config = facts.cilium_config
    if config is None:
        return []
    out: list[PreflightFinding] = []
    live_id = config.get("cluster-id", "").strip()
    live_name = config.get("cluster-name", "").strip()
    if live_id not in ("", "0") and planned.cluster_id is not None and live_id != str(planned.cluster_id):
        out.append(PreflightFinding(
            facts.name, PreflightCheck.CLUSTER_ID, PreflightSeverity.BLOCKER,
            f"Cilium runs with cluster-id {live_id} but the plan gives {planned.cluster_id}; changing a live cluster "
            f"ID re-identifies every endpoint: set clusterID: {live_id} for {planned.name} in the spec"))
    elif live_id in ("", "0") and planned.cluster_id is not None:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.CLUSTER_ID, PreflightSeverity.WARNING,
            f"Cilium runs without a cluster ID; joining the mesh as ID {planned.cluster_id} restarts its agents"))
    if live_name and live_name != "default" and live_name != planned.name:
        out.append(PreflightFinding(
            facts.name, PreflightCheck.CLUSTER_ID, PreflightSeverity.BLOCKER,
            f"Cilium runs with cluster-name {live_name!r} but the Fleet calls this cluster {planned.name!r}; rename "
            "the Fleet's cluster or reinstall Cilium"))
    live_mtu = config.get("mtu", "").strip()
    want = plan.mesh_mtu.underlay_mtu
    if live_mtu not in ("", "0") and live_mtu != str(want):
        out.append(PreflightFinding(
            facts.name, PreflightCheck.MTU, PreflightSeverity.BLOCKER,
            f"Cilium runs with MTU {live_mtu} but the mesh is planned at underlay MTU {want} (route MTU "
            f"{plan.mesh_mtu.route_mtu}); set underlayMTU to match, or the clusters disagree on packet sizes"))
    return out


def _judge_dns(facts: ClusterFacts) -> list[PreflightFinding]:
    if facts.dns_domain is None:
        return [PreflightFinding(facts.name, PreflightCheck.DNS_DOMAIN, PreflightSeverity.WARNING,
                                 f"the DNS domain is unknown (no kube-system/coredns ConfigMap with a kubernetes "
                                 f"zone); assuming {DEFAULT_DNS_DOMAIN}")]
    if facts.dns_domain != DEFAULT_DNS_DOMAIN:
        return [PreflightFinding(facts.name, PreflightCheck.DNS_DOMAIN, PreflightSeverity.WARNING,
                                 f"the DNS domain is {facts.dns_domain}, not {DEFAULT_DNS_DOMAIN}: rendered client "
                                 "names and Istio hosts assume cluster.local")]
    return []


def judge(plan: NetworkPlan, facts: Mapping[str, ClusterFacts]) -> tuple[PreflightFinding, ...]:
    """Every finding of the clusters in ``facts`` against ``plan`` (pure)."""
    out: list[PreflightFinding] = []
    for planned in plan.clusters:
        found = facts.get(planned.name)
        if found is None:
            continue
        out += _judge_services(planned, found)
        out += _judge_pods(planned, found, facts)
        if plan.network.mesh in (Mesh.CILIUM, Mesh.BOTH):
            out += _judge_cilium(plan, planned, found)
        out += _judge_dns(found)
    owners: dict[str, str] = {}
    for name in sorted(facts):
        config = facts[name].cilium_config or {}
        live_id = config.get("cluster-id", "").strip()
        if live_id in ("", "0"):
            continue
        if live_id in owners:
            out.append(PreflightFinding(
                name, PreflightCheck.CLUSTER_ID, PreflightSeverity.BLOCKER,
                f"Cilium cluster-id {live_id} is live in both {owners[live_id]} and {name}: identities would "
                "collide across the mesh; give one of them another ID (reinstalling its Cilium)"))
        owners.setdefault(live_id, name)
    return tuple(out)


async def preflight(plan: NetworkPlan, connections: Mapping[str, ClusterConnection]) -> PreflightReport:
    """Read every cluster concurrently and judge it; an unanswered or refusing cluster is a blocker."""
    outcomes = await across(connections, gather_facts)
    findings: list[PreflightFinding] = []
    facts: dict[str, ClusterFacts] = {}
    for name, outcome in outcomes.items():
        if outcome.reach is Reach.REACHED and outcome.value is not None:
            facts[name] = outcome.value
            continue
        timeout = connections[name].settings.timeout
        why = (f"the API server did not answer ({outcome.error}; timeout {timeout:g}s)"
               if outcome.reach is Reach.UNREACHABLE
               else f"the API server refused the preflight reads: {outcome.error}")
        findings.append(PreflightFinding(name, PreflightCheck.REACHABLE, PreflightSeverity.BLOCKER, why))
    missing = [c.name for c in plan.clusters if c.name not in connections]
    findings += [PreflightFinding(n, PreflightCheck.REACHABLE, PreflightSeverity.BLOCKER,
                                  "no connection to this cluster") for n in missing]
    findings += judge(plan, facts)
    order = {c.name: i for i, c in enumerate(plan.clusters)}
    findings.sort(key=lambda f: (order.get(f.cluster, len(order)), f.severity is not PreflightSeverity.BLOCKER))
    return PreflightReport(fleet=plan.fleet, findings=tuple(findings), facts=facts,
                           clusters=tuple(c.name for c in plan.clusters))
