"""Pure parts of the lab: cluster specs, PKI contents, component command lines, state round-trip."""

from __future__ import annotations

import ipaddress
import json
import random
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from isthmus.lab import Component, LabClusterSpec, default_specs
from isthmus.lab.binaries import LabBinaries
from isthmus.lab.components import ClusterPaths, ClusterPorts, argv, kwok_config_yaml, scheduler_config_yaml
from isthmus.lab.pki import make_cluster_pki
from isthmus.lab.processes import ProcessRef, free_ports, listen_port_range, log_tail
from isthmus.lab.specs import check_lab_specs
from isthmus.lab.state import ClusterState, LabPhase, LabState, StateDir


def test_default_specs_are_distinct_and_zoned() -> None:
    specs = default_specs(3)
    assert [s.name for s in specs] == ["c1", "c2", "c3"]
    for s in specs:
        assert len(s.zones) == 2 and all(n == 2 for n in s.zones.values())
        assert len(s.nodes) == 4
        assert {n.zone for n in s.nodes} == set(s.zones)
        assert s.context == f"lab-{s.name}"
    check_lab_specs(specs)  # no overlaps
    nets = [n for s in specs for n in (s.pod_network, s.service_network)]
    assert len(set(nets)) == 6
    supernets = ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("172.16.0.0/12")
    assert all(s.pod_network.subnet_of(supernets[0]) for s in default_specs(50))
    assert all(s.service_network.subnet_of(supernets[1]) for s in default_specs(50))
    check_lab_specs(default_specs(50))


def test_spec_is_frozen_validated_and_round_trips() -> None:
    spec = default_specs(1)[0]
    with pytest.raises(AttributeError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.zones["z"] = 1  # type: ignore[index]
    assert LabClusterSpec.from_json(spec.to_json()) == spec
    assert hash(LabClusterSpec.from_json(spec.to_json())) == hash(spec)
    assert spec.kubernetes_service_ip == ipaddress.IPv4Address("172.16.16.1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad_Name"}, "DNS label"),
        ({"zones": {}}, "at least one zone"),
        ({"zones": {"a": 0}}, "node count"),
        ({"pod_cidr": "10.0.0.1/16"}, "not a CIDR"),
        ({"pod_cidr": "fd00::/64"}, "IPv4"),
        ({"service_cidr": "10.1.0.0/24"}, "overlaps"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "c1", "region": "r1", "zones": {"a": 1}, "pod_cidr": "10.1.0.0/16",
                               "service_cidr": "10.101.0.0/16"}
    with pytest.raises(ValueError, match=message):
        LabClusterSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_lab_rejects_overlapping_clusters() -> None:
    a, b = default_specs(2)
    clash = LabClusterSpec(name="c9", region="r9", zones={"z": 1}, pod_cidr="10.1.128.0/17",
                           service_cidr="10.199.0.0/16")
    with pytest.raises(ValueError, match="overlaps"):
        check_lab_specs([a, b, clash])
    with pytest.raises(ValueError, match="twice"):
        check_lab_specs([a, a])


def test_pki_apiserver_sans_and_client_identities(tmp_path: Path) -> None:
    pki = make_cluster_pki(tmp_path, cluster="c1", service_ip=ipaddress.IPv4Address("10.101.0.1"))
    assert pki.complete()
    cert = x509.load_pem_x509_certificate(pki.apiserver.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.101.0.1")} <= ips
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    admin = x509.load_pem_x509_certificate(pki.clients["admin"].cert.read_bytes())
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    kcm = x509.load_pem_x509_certificate(pki.clients["controller-manager"].cert.read_bytes())
    assert kcm.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-controller-manager"
    assert (pki.ca.key.stat().st_mode & 0o077) == 0


def test_component_command_lines_use_the_spec(tmp_path: Path) -> None:
    spec = default_specs(2)[1]
    ports = ClusterPorts.from_list([2001, 2002, 2003, 2004, 2005, 2006])
    paths = ClusterPaths(tmp_path)
    bins = LabBinaries(tmp_path / "bin")
    api = argv(Component.APISERVER, spec=spec, ports=ports, paths=paths, bins=bins)
    assert "--service-cluster-ip-range=172.16.32.0/20" in api
    assert "--etcd-servers=http://127.0.0.1:2001" in api
    assert "--secure-port=2003" in api and "--bind-address=127.0.0.1" in api
    assert any(a.startswith("--service-account-issuer=") for a in api)
    kcm = argv(Component.CONTROLLER_MANAGER, spec=spec, ports=ports, paths=paths, bins=bins)
    assert "--leader-elect=false" in kcm and "--allocate-node-cidrs=false" in kcm
    sched = argv(Component.SCHEDULER, spec=spec, ports=ports, paths=paths, bins=bins)
    assert f"--config={paths.scheduler_config}" in sched
    sched_config = json.loads(scheduler_config_yaml(paths.kubeconfig("scheduler")))
    assert sched_config["leaderElection"] == {"leaderElect": False}
    etcd = argv(Component.ETCD, spec=spec, ports=ports, paths=paths, bins=bins)
    assert f"--data-dir={paths.etcd_data}" in etcd
    for cmd in (api, kcm, sched, etcd):
        assert not any("0.0.0.0" in a for a in cmd)
    # the kubelet API is kwok's server, verified against the cluster CA
    assert f"--kubelet-certificate-authority={paths.pki.ca.cert}" in api
    assert "--kubelet-preferred-address-types=InternalIP" in api
    kwok = kwok_config_yaml(spec, ports=ports, pki=paths.pki)
    assert "cidr: 10.2.0.0/17" in kwok  # the first half: kwok's fake pods
    assert "serverAddress: 127.0.0.1:2006" in kwok and "nodePort: 2006" in kwok
    assert f"tlsCertFile: {paths.pki.kubelet.cert}" in kwok and "enableCRDs: [Exec, Logs, PortForward]" in kwok
    # real pods: every Pod stage leaves Cassandra pods to the runtime; simulated: kwok fakes them all
    assert kwok.count("select(.image | test(") == 5  # lab-pod-ready, -not-ready, -recover, -complete, -delete
    assert "select(.image | test(" not in kwok_config_yaml(spec, ports=ports, pki=paths.pki, real_pods=False)


def test_state_round_trips(tmp_path: Path) -> None:
    specs = default_specs(2)
    d = StateDir(tmp_path)
    st = LabState(name="x", phase=LabPhase.RUNNING, owner_pid=1, clusters=tuple(
        ClusterState(spec=s, ports=ClusterPorts.from_list(free_ports(6)),
                     processes={Component.ETCD: ProcessRef(pid=10, start_time=20, pgid=10)}) for s in specs))
    d.save(st)
    assert d.load() == st
    d.state_file.write_text("{not json")
    assert d.load() is None


def test_process_ref_notices_recycled_pids(tmp_path: Path) -> None:
    import os

    from isthmus.lab.processes import _stat

    me = _stat(os.getpid())
    assert me is not None
    assert ProcessRef(pid=os.getpid(), start_time=me[2], pgid=os.getpgid(0)).alive()
    assert not ProcessRef(pid=os.getpid(), start_time=me[2] + 1, pgid=0).alive()
    log = tmp_path / "x.log"
    log.write_text("\n".join(str(i) for i in range(100)))
    assert log_tail(log, 3) == "97\n98\n99"


def test_listen_ports_come_from_below_the_ephemeral_range(tmp_path: Path) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    assert listen_port_range(ranges) == (16384, 32768)
    ranges.write_text("garbage")
    assert listen_port_range(ranges) == (16384, 32768)
    low, high = listen_port_range()
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(low <= p < high for p in ports)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_free_ports_skip_a_busy_port_and_fall_back_to_the_kernel() -> None:
    low, high = listen_port_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        taken, other = next((p, p + 1) for p in range(low, high - 1) if _bindable(p) and _bindable(p + 1))
        busy.bind(("127.0.0.1", taken))
        busy.listen()
        # a range of two ports, one of them listening: only the other is offered
        for seed in range(5):
            chosen = free_ports(1, rng=random.Random(seed), port_range=(min(taken, other), max(taken, other) + 1))
            assert chosen == [other]
        # a range holding only the busy port: the kernel's choice, never the busy one
        fallback = free_ports(2, port_range=(taken, taken + 1))
        assert taken not in fallback and len(set(fallback)) == 2


def test_public_names_exist() -> None:
    import isthmus.lab as lab

    assert sorted(lab.__all__) == sorted(set(lab.__all__))
    for name in lab.__all__:
        assert hasattr(lab, name), name


def test_missing_go_is_a_clear_toolchain_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.lab import Lab, ToolchainError

    monkeypatch.setenv("ISTHMUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolchainError, match="Go is not installed"):
        Lab(name="x", specs=default_specs(1), state_dir=tmp_path / "state").up()
