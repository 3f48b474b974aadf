from __future__ import annotations

from isthmus.netplan import Severity, check

from ._fleets import cluster, make_fleet


def test_clean_fleet_is_ok() -> None:
    fleet = make_fleet(
        [
            cluster("a", clusterID=1, podCIDR="10.0.0.0/20", serviceCIDR="172.16.0.0/20", nodeCIDR="192.168.0.0/24"),
            cluster("b", clusterID=2, podCIDR="10.0.16.0/20", serviceCIDR="172.16.16.0/20"),
        ],
        avoid=["192.168.0.0/16"],
    )
    report = check(fleet)
    assert report.ok and report.findings == ()


def test_every_problem_is_listed() -> None:
    fleet = make_fleet(
        [
            cluster("a", clusterID=1, podCIDR="10.0.0.0/20", serviceCIDR="10.0.8.0/24", underlayMTU=9000),
            cluster("b", clusterID=2, podCIDR="10.0.0.0/22", nodes=10),
            cluster("c", podCIDR="192.168.0.0/20", serviceCIDR="172.16.0.0/20"),
            cluster("d", clusterID=4, maxPodsPerNode=300, podCIDR="10.5.0.0/16", serviceCIDR="172.17.0.0/20"),
        ],
        avoid=["192.168.4.0/24"],
    )
    report = check(fleet)
    assert not report.ok
    assert report.codes() == {
        "missing-cluster-id",
        "missing-service-cidr",
        "cidr-overlap",
        "avoid-overlap",
        "outside-supernet",
        "pod-cidr-too-small",
        "pods-per-node",
        "mtu-mismatch",
    }
    overlaps = [f for f in report.findings if f.code == "cidr-overlap"]
    assert len(overlaps) == 2  # a.pod contains both a.service and b.pod
    mtu = next(f for f in report.findings if f.code == "mtu-mismatch")
    assert mtu.severity is Severity.WARNING and "runs at 1500" in mtu.message and "1450" in mtu.message
    missing = next(f for f in report.findings if f.code == "missing-cluster-id")
    assert missing.clusters == ("c",)
    assert report.to_dict()["ok"] is False


def test_duplicate_and_out_of_range_ids_via_construct() -> None:
    fleet = make_fleet([cluster("a", clusterID=1), cluster("b", clusterID=2)])
    clusters = [fleet.spec.clusters[0], fleet.spec.clusters[1].model_copy(update={"cluster_id": 1})]
    clusters.append(fleet.spec.clusters[0].model_copy(update={"name": "c", "cluster_id": 400}))
    broken = fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"clusters": clusters})})
    codes = [f.code for f in check(broken).findings]
    assert "duplicate-cluster-id" in codes and "cluster-id-out-of-range" in codes


def test_istio_fleet_needs_no_ids() -> None:
    fleet = make_fleet([cluster("a", podCIDR="10.0.0.0/20", serviceCIDR="172.16.0.0/20")], mesh="istio")
    assert check(fleet).ok
