"""The ``Fleet`` kind: which clusters exist, where, how big, and how their network is meant to look."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ._base import API_VERSION, SpecModel

__all__ = [
    "CLUSTER_NAME_PATTERN",
    "ClusterSpec",
    "Encryption",
    "Fleet",
    "FleetSpec",
    "IPFamily",
    "Mesh",
    "Metadata",
    "NetworkSpec",
    "RoutingMode",
    "TunnelProtocol",
    "Zone",
]

# Cilium's rule for cluster names (pkg/clustermesh/types): at most 32 characters, a DNS-label-like shape.
CLUSTER_NAME_PATTERN = re.compile(r"^([a-z0-9][-a-z0-9]*)?[a-z0-9]$")
CLUSTER_NAME_MAX = 32


class RoutingMode(StrEnum):
    TUNNEL = "tunnel"
    NATIVE = "native"


class TunnelProtocol(StrEnum):
    VXLAN = "vxlan"
    GENEVE = "geneve"


class Encryption(StrEnum):
    NONE = "none"
    WIREGUARD = "wireguard"
    IPSEC = "ipsec"


class Mesh(StrEnum):
    CILIUM = "cilium"
    ISTIO = "istio"
    BOTH = "both"


class IPFamily(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DUAL = "dual"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(value: str) -> Network:
    """A CIDR in canonical form; host bits set is a mistake the user should hear about."""
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid CIDR ({exc}); write it like 10.0.0.0/16") from exc


class Metadata(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Zone(SpecModel):
    name: Annotated[str, Field(min_length=1)]
    nodes: Annotated[int, Field(ge=0, le=5000, description="Nodes in this zone today")]


class ClusterSpec(SpecModel):
    name: str = Field(description="Cilium cluster name: <= 32 chars, lower-case letters, digits and '-'")
    region: Annotated[str, Field(min_length=1)]
    zones: Annotated[list[Zone], Field(min_length=1)]
    max_pods_per_node: Annotated[int, Field(ge=1, le=1024)] = 110
    context: str | None = Field(default=None, description="kubeconfig context; defaults to the cluster name")
    cluster_id: Annotated[int, Field(ge=1, le=511)] | None = Field(
        default=None, alias="clusterID", description="Cilium cluster ID if already assigned"
    )
    pod_cidr: str | None = Field(default=None, alias="podCIDR", description="Already-assigned pod CIDR")
    service_cidr: str | None = Field(default=None, alias="serviceCIDR")
    node_cidr: str | None = Field(default=None, alias="nodeCIDR", description="The nodes' own subnet")
    underlay_mtu: Annotated[int, Field(ge=1280, le=9216)] = Field(default=1500, alias="underlayMTU")
    ip_family: IPFamily = IPFamily.IPV4
    labels: dict[str, str] = Field(default_factory=dict, description="Labels a ChartRelease's clusterSelector "
                                                                     "matches")

    @field_validator("name")
    @classmethod
    def _cilium_name(cls, value: str) -> str:
        if len(value) > CLUSTER_NAME_MAX or not CLUSTER_NAME_PATTERN.match(value):
            raise ValueError(
                f"cluster name {value!r} breaks Cilium's rule: at most {CLUSTER_NAME_MAX} characters of "
                "a-z, 0-9 and '-', starting and ending with a letter or digit"
            )
        return value

    @field_validator("pod_cidr", "service_cidr", "node_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_network(value))

    @property
    def kube_context(self) -> str:
        return self.context or self.name

    @property
    def node_count(self) -> int:
        return sum(zone.nodes for zone in self.zones)

    @property
    def zone_names(self) -> list[str]:
        return [zone.name for zone in self.zones]

    @model_validator(mode="after")
    def _unique_zones(self) -> ClusterSpec:
        names = self.zone_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"zone {dupes[0]!r} is listed twice in cluster {self.name!r}")
        return self


class NetworkSpec(SpecModel):
    pod_supernet: str = Field(default="10.0.0.0/8", description="Every cluster's pod CIDR is carved from here")
    service_supernet: str = Field(default="172.16.0.0/12")
    pod_supernet_v6: str | None = Field(default=None, alias="podSupernetV6")
    service_supernet_v6: str | None = Field(default=None, alias="serviceSupernetV6")
    avoid: list[str] = Field(default_factory=list, description="Ranges in use elsewhere: VPCs, on-prem, peers")
    pod_mask_size: Annotated[int, Field(ge=16, le=28)] = Field(
        default=24, description="Per-node pod block (Cilium clusterPoolIPv4MaskSize)"
    )
    pod_mask_size_v6: Annotated[int, Field(ge=64, le=124)] = Field(default=112, alias="podMaskSizeV6")
    service_prefix: Annotated[int, Field(ge=12, le=28)] = Field(
        default=20, description="Prefix length of each cluster's service CIDR"
    )
    service_prefix_v6: Annotated[int, Field(ge=100, le=124)] = Field(default=112, alias="servicePrefixV6")
    routing: RoutingMode = RoutingMode.TUNNEL
    tunnel_protocol: TunnelProtocol = TunnelProtocol.VXLAN
    encryption: Encryption = Encryption.NONE
    ipsec_key_size: Literal[128, 256] = Field(
        default=128, description="IPsec ICV/auth key bits; Cilium adds (bits/8 - 16) bytes of overhead (+16 for 256)"
    )
    ipv6_underlay: bool = Field(default=False, alias="ipv6Underlay")
    mesh: Mesh = Mesh.CILIUM
    max_connected_clusters: Literal[255, 511] = 255
    headroom: Annotated[float, Field(ge=1.0, le=64.0)] = Field(
        default=1.5, description="Growth factor: plan pod space for this many times today's nodes"
    )
    warn_below_free: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=0.2, description="Warn when a cluster's free pod space falls below this fraction"
    )

    @field_validator("pod_supernet", "service_supernet", "pod_supernet_v6", "service_supernet_v6")
    @classmethod
    def _supernet(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_network(value))

    @field_validator("avoid")
    @classmethod
    def _avoid(cls, values: list[str]) -> list[str]:
        return [str(parse_network(v)) for v in values]


class FleetSpec(SpecModel):
    control_plane: str = Field(description="Name of the cluster that hosts the control plane")
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    clusters: Annotated[list[ClusterSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> FleetSpec:
        for attr, what in (("name", "name"), ("kube_context", "kube context")):
            seen: set[str] = set()
            for cluster in self.clusters:
                value = getattr(cluster, attr)
                if value in seen:
                    raise ValueError(f"two clusters share the {what} {value!r}; each must be unique")
                seen.add(value)
        if self.control_plane not in {c.name for c in self.clusters}:
            names = ", ".join(c.name for c in self.clusters)
            raise ValueError(f"controlPlane {self.control_plane!r} is not one of the clusters ({names})")
        return self

    def cluster(self, name: str) -> ClusterSpec:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)


class Fleet(SpecModel):
    """A set of Kubernetes clusters run as one system."""

    api_version: Literal["isthmus.dev/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["Fleet"] = "Fleet"
    metadata: Metadata
    spec: FleetSpec
