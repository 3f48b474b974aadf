from __future__ import annotations

import pytest

from isthmus.netplan import calculate_mtu
from isthmus.netplan.mtu import (
    ENCRYPTION_IPSEC_OVERHEAD,
    TUNNEL_OVERHEAD_IPV4,
    TUNNEL_OVERHEAD_IPV6,
    WIREGUARD_OVERHEAD,
    ipsec_overhead,
)
from isthmus.spec.fleet import Encryption, RoutingMode, TunnelProtocol

TUNNEL, NATIVE = RoutingMode.TUNNEL, RoutingMode.NATIVE


def test_constants_match_cilium() -> None:
    assert (TUNNEL_OVERHEAD_IPV4, TUNNEL_OVERHEAD_IPV6) == (50, 70)
    assert (ENCRYPTION_IPSEC_OVERHEAD, WIREGUARD_OVERHEAD) == (77, 80)


@pytest.mark.parametrize(
    ("kwargs", "route_mtu"),
    [
        ({"routing": TUNNEL}, 1450),
        ({"routing": TUNNEL, "tunnel_protocol": TunnelProtocol.GENEVE}, 1450),
        ({"routing": TUNNEL, "ipv6_underlay": True}, 1430),
        ({"routing": TUNNEL, "encryption": Encryption.IPSEC}, 1373),
        ({"routing": TUNNEL, "encryption": Encryption.IPSEC, "ipsec_key_size": 256}, 1357),
        ({"routing": TUNNEL, "encryption": Encryption.WIREGUARD}, 1370),
        ({"routing": NATIVE, "encryption": Encryption.WIREGUARD}, 1420),
        ({"routing": NATIVE, "encryption": Encryption.IPSEC}, 1423),
        ({"routing": NATIVE}, 1500),
        ({"routing": TUNNEL, "ipv6_underlay": True, "encryption": Encryption.WIREGUARD}, 1350),
    ],
)
def test_route_mtu_at_1500(kwargs: dict[str, object], route_mtu: int) -> None:
    result = calculate_mtu(1500, **kwargs)  # type: ignore[arg-type]
    assert result.route_mtu == route_mtu
    assert result.total_overhead == 1500 - route_mtu
    assert result.tcp_mss_v4 == route_mtu - 40
    assert result.tcp_mss_v6 == route_mtu - 60


def test_ipsec_key_size_follows_cilium_auth_key_length() -> None:
    # Cilium: 77 + (key bytes - 16); a 256-bit ICV is 32 bytes, so +16
    assert ipsec_overhead(128) == 77
    assert ipsec_overhead(256) == 93
    assert ipsec_overhead(96) == 73
    with pytest.raises(ValueError):
        ipsec_overhead(100)


def test_breakdown_and_efficiency() -> None:
    result = calculate_mtu(9000, encryption=Encryption.WIREGUARD)
    assert [o.layer for o in result.overheads] == ["VXLAN over IPv4", "WireGuard"]
    assert result.route_mtu == 9000 - 130
    assert result.efficiency == pytest.approx((8870 - 40) / (9000 - 40))
    assert calculate_mtu(1500, routing=NATIVE).efficiency == 1.0
    assert calculate_mtu(1500).to_dict()["routeMTU"] == 1450


def test_too_small_underlay_is_rejected() -> None:
    with pytest.raises(ValueError, match="no room"):
        calculate_mtu(150, encryption=Encryption.WIREGUARD)
