from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from isthmus.netplan import Lock, LockError
from isthmus.netplan.lock import LockedCluster

GOOD: dict[str, Any] = {
    "version": 1,
    "clusters": {
        "us-1": {"clusterID": 2, "podCIDR": "10.0.64.0/18", "serviceCIDR": "172.16.16.0/20"},
        "eu-1": {
            "clusterID": 1,
            "podCIDR": "10.0.0.0/18",
            "serviceCIDR": "172.16.0.0/20",
            "podCIDRV6": "fd00:10::/96",
            "serviceCIDRV6": "fd00:20::/112",
        },
    },
}


def test_round_trip_sorted_by_name() -> None:
    lock = Lock.from_dict(GOOD)
    assert [c.name for c in lock.clusters] == ["eu-1", "us-1"]
    eu = lock.get("eu-1")
    assert eu is not None and eu.pod_cidr_v6 == ip_network("fd00:10::/96")
    assert "us-1" in lock and lock.get("nope") is None
    assert Lock.from_dict(lock.to_dict()) == lock
    assert list(lock.to_dict()["clusters"]) == ["eu-1", "us-1"]  # type: ignore[call-overload]


def test_empty() -> None:
    assert Lock.from_dict(None) == Lock()
    assert Lock.from_dict({"version": 1}) == Lock()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "expected a mapping"),
        ({"version": 2, "clusters": {}}, "version: expected 1, got 2"),
        ({"version": True}, "version: expected 1"),
        ({"version": 1, "extra": 1}, "unknown key 'extra'"),
        ({"version": 1, "clusters": []}, "clusters: expected a mapping"),
        ({"version": 1, "clusters": {"a": "x"}}, r"clusters\.a: expected a mapping"),
        ({"version": 1, "clusters": {"a": {"podCidr": "10.0.0.0/8"}}}, r"clusters\.a: unknown key 'podCidr'"),
        ({"version": 1, "clusters": {"a": {"clusterID": "1"}}}, r"clusters\.a\.clusterID: expected an integer"),
        ({"version": 1, "clusters": {"a": {"clusterID": True}}}, r"clusters\.a\.clusterID: expected an integer"),
        ({"version": 1, "clusters": {"a": {"clusterID": 0}}}, r"clusters\.a\.clusterID: 0 is outside"),
        ({"version": 1, "clusters": {"a": {"podCIDR": 10}}}, r"clusters\.a\.podCIDR: expected a CIDR string"),
        ({"version": 1, "clusters": {"a": {"podCIDR": "10.0.0.1/8"}}}, r"clusters\.a\.podCIDR: .* not a valid"),
        ({"version": 1, "clusters": {"a": {"podCIDR": "nope"}}}, r"clusters\.a\.podCIDR: 'nope' is not a valid"),
        ({"version": 1, "clusters": {"a": {"podCIDR": "fd00::/64"}}}, r"podCIDR: fd00::/64 is IPv6; expected an IPv4"),
        ({"version": 1, "clusters": {"a": {"podCIDRV6": "10.0.0.0/8"}}}, r"podCIDRV6: 10.0.0.0/8 is IPv4"),
        (
            {"version": 1, "clusters": {"a": {"clusterID": 1}, "b": {"clusterID": 1}}},
            r"clusters\.b\.clusterID: 1 is also recorded for a",
        ),
    ],
)
def test_bad_locks_name_the_key(data: object, match: str) -> None:
    with pytest.raises(LockError, match=match):
        Lock.from_dict(data)


def test_duplicate_names_refused() -> None:
    with pytest.raises(LockError, match="listed twice"):
        Lock(clusters=(LockedCluster("a"), LockedCluster("a")))
