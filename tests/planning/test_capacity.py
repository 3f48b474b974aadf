from __future__ import annotations

from ipaddress import ip_network

from isthmus.netplan.capacity import capacity


def test_capacity_numbers() -> None:
    cap = capacity(
        "a",
        ip_network("10.0.0.0/18"),
        mask_size=24,
        nodes=40,
        max_pods_per_node=110,
        headroom=1.5,
        warn_below_free=0.2,
    )
    assert cap.node_blocks_total == 64 and cap.node_blocks_used == 40 and cap.nodes_addable == 24
    assert cap.pod_addresses_total == 64 * 110
    assert cap.pod_addresses_used == 40 * 110
    assert cap.pod_addresses_free == 24 * 110
    assert cap.free_fraction == 24 / 64
    assert cap.warnings == ()
    assert cap.to_dict()["nodesAddable"] == 24


def test_warnings_below_free_and_headroom() -> None:
    cap = capacity(
        "a",
        ip_network("10.0.0.0/18"),
        mask_size=24,
        nodes=60,
        max_pods_per_node=110,
        headroom=1.5,
        warn_below_free=0.2,
    )
    assert len(cap.warnings) == 2
    assert "only 6% of pod space is free" in cap.warnings[0] and "4 of 64" in cap.warnings[0]
    assert "holds 64 nodes, fewer than 60 nodes x headroom 1.5 = 90" in cap.warnings[1]


def test_full_cluster() -> None:
    cap = capacity(
        "a",
        ip_network("10.0.0.0/24"),
        mask_size=24,
        nodes=3,
        max_pods_per_node=110,
        headroom=1.0,
        warn_below_free=0.0,
    )
    assert cap.nodes_addable == 0 and cap.pod_addresses_free < 0
    assert any("holds 1 nodes" in w for w in cap.warnings)
