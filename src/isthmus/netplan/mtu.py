"""Path MTU arithmetic, after Cilium's ``pkg/mtu/mtu.go``: named overheads and one pure ``calculate``.

Owns: the bytes each encapsulation and encryption layer costs, and the route MTU / TCP MSS that
follow from an underlay MTU. Must not: detect MTUs, read configuration or touch devices — callers
gather the inputs and call ``calculate`` (the planner, the renderer and the operator share it).

Which overheads stack follows Cilium's ``getRouteMTU``:

* WireGuard: underlay − 80, and − the tunnel overhead too when tunnelling;
* IPsec: underlay − (77 + key-size adjustment), and − the tunnel overhead too when tunnelling;
* neither: underlay − the tunnel overhead when tunnelling, else the underlay MTU itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec.fleet import Encryption, RoutingMode, TunnelProtocol

__all__ = [
    "ENCRYPTION_DEFAULT_AUTH_KEY_LENGTH",
    "ENCRYPTION_IPSEC_OVERHEAD",
    "ETHERNET_MTU",
    "IPV6_MIN_MTU",
    "TCP_IPV4_HEADERS",
    "TCP_IPV6_HEADERS",
    "TUNNEL_OVERHEAD_IPV4",
    "TUNNEL_OVERHEAD_IPV6",
    "WIREGUARD_OVERHEAD",
    "MTUResult",
    "Overhead",
    "calculate",
    "ipsec_overhead",
]

# The standard MTU of an Ethernet device (Cilium EthernetMTU).
ETHERNET_MTU = 1500

# The smallest MTU an IPv6 link may have (RFC 8200 §5).
IPV6_MIN_MTU = 1280

# TunnelOverheadIPv4: what VXLAN or Geneve (no options) adds on an IPv4 underlay.
#   (the outer Ethernet header is not counted against the MTU)
#   outer IPv4 header        20 B
#   outer UDP header          8 B
#   VXLAN / Geneve header     8 B
#   inner Ethernet header    14 B
#                           ----
#                            50 B
TUNNEL_OVERHEAD_IPV4 = 20 + 8 + 8 + 14

# TunnelOverheadIPv6: the same on an IPv6 underlay; only the outer IP header grows.
#   outer IPv6 header        40 B
#   outer UDP header          8 B
#   VXLAN / Geneve header     8 B
#   inner Ethernet header    14 B
#                           ----
#                            70 B
TUNNEL_OVERHEAD_IPV6 = 40 + 8 + 8 + 14

# EncryptionIPsecOverhead: ESP in tunnel mode, computed by Cilium for a 128-bit (16 B) ICV/auth key.
#   outer IP header          20 B
#   SPI                       4 B
#   sequence number           4 B
#   next header               1 B
#   ICV                      16 B
#   padding                  16 B
#   128-bit auth             16 B
#                           ----
#                            77 B
ENCRYPTION_IPSEC_OVERHEAD = 20 + 4 + 4 + 1 + 16 + 16 + 16

# EncryptionDefaultAuthKeyLength: the key length (bytes) the 77 B above assume (RFC 4106 GCM(AES)).
# Cilium adds (actual − default) to the overhead: for AEAD keys the "auth key size" is the ICV length
# in bytes (ipsec.go: keyLen = icvLen / 8), so 256 bits -> 32 B -> +16 B, 96 bits -> 12 B -> −4 B.
ENCRYPTION_DEFAULT_AUTH_KEY_LENGTH = 16

# WireguardOverhead (linux drivers/net/wireguard/device.c, MESSAGE_MINIMUM_LENGTH etc.):
#   WireGuard message header + auth tag   32 B
#   outer IPv4 or IPv6 header             40 B  (Cilium assumes IPv6 for both families)
#   outer UDP header                       8 B
#                                        ----
#                                         80 B
WIREGUARD_OVERHEAD = 32 + 40 + 8

# Headers between the route MTU and a TCP segment's payload (no options): IP + TCP.
TCP_IPV4_HEADERS = 20 + 20
TCP_IPV6_HEADERS = 40 + 20


@dataclass(frozen=True)
class Overhead:
    """One layer's cost in bytes, named for display (``"VXLAN over IPv4"``, ``"IPsec ESP"``)."""

    layer: str
    bytes: int


@dataclass(frozen=True)
class MTUResult:
    """The MTU consequences of one underlay MTU under one routing/encryption configuration.

    ``efficiency`` is the TCP payload per full-size IPv4 packet relative to native routing without
    encryption on the same underlay: ``tcp_mss_v4 / (underlay_mtu - 40)``.
    """

    underlay_mtu: int
    route_mtu: int
    overheads: tuple[Overhead, ...]
    tcp_mss_v4: int
    tcp_mss_v6: int
    efficiency: float

    @property
    def total_overhead(self) -> int:
        return sum(o.bytes for o in self.overheads)

    def to_dict(self) -> dict[str, object]:
        return {
            "underlayMTU": self.underlay_mtu,
            "routeMTU": self.route_mtu,
            "overheads": [{"layer": o.layer, "bytes": o.bytes} for o in self.overheads],
            "totalOverhead": self.total_overhead,
            "tcpMSSv4": self.tcp_mss_v4,
            "tcpMSSv6": self.tcp_mss_v6,
            "efficiency": round(self.efficiency, 4),
        }


def ipsec_overhead(key_size_bits: int) -> int:
    """ESP overhead for an ICV/auth key of ``key_size_bits`` (Cilium: 77 + (bytes − 16))."""
    if key_size_bits <= 0 or key_size_bits % 8:
        raise ValueError(f"IPsec key size must be a positive multiple of 8 bits, not {key_size_bits}")
    return ENCRYPTION_IPSEC_OVERHEAD + (key_size_bits // 8 - ENCRYPTION_DEFAULT_AUTH_KEY_LENGTH)


def calculate(
    underlay_mtu: int,
    *,
    routing: RoutingMode = RoutingMode.TUNNEL,
    tunnel_protocol: TunnelProtocol = TunnelProtocol.VXLAN,
    encryption: Encryption = Encryption.NONE,
    ipv6_underlay: bool = False,
    ipsec_key_size: int = 128,
) -> MTUResult:
    """Route MTU, overhead breakdown and TCP MSS for pods on an ``underlay_mtu`` network.

    Pure: same inputs, same result. VXLAN and Geneve cost the same (Geneve without options; the
    12 B DSR option only applies to Geneve DSR load balancing, which the planner does not configure).
    """
    overheads: list[Overhead] = []
    if routing is RoutingMode.TUNNEL:
        family = "IPv6" if ipv6_underlay else "IPv4"
        size = TUNNEL_OVERHEAD_IPV6 if ipv6_underlay else TUNNEL_OVERHEAD_IPV4
        overheads.append(Overhead(f"{tunnel_protocol.value.upper()} over {family}", size))
    if encryption is Encryption.WIREGUARD:
        overheads.append(Overhead("WireGuard", WIREGUARD_OVERHEAD))
    elif encryption is Encryption.IPSEC:
        overheads.append(Overhead(f"IPsec ESP ({ipsec_key_size}-bit key)", ipsec_overhead(ipsec_key_size)))
    total = sum(o.bytes for o in overheads)
    route_mtu = underlay_mtu - total
    if route_mtu <= TCP_IPV6_HEADERS:
        raise ValueError(f"underlay MTU {underlay_mtu} leaves no room for the {total} B of overhead")
    native_mss = underlay_mtu - TCP_IPV4_HEADERS
    mss_v4 = route_mtu - TCP_IPV4_HEADERS
    return MTUResult(
        underlay_mtu=underlay_mtu,
        route_mtu=route_mtu,
        overheads=tuple(overheads),
        tcp_mss_v4=mss_v4,
        tcp_mss_v6=route_mtu - TCP_IPV6_HEADERS,
        efficiency=mss_v4 / native_mss,
    )
