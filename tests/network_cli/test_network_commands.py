"""`isthmus explain firewall|network` and `isthmus mesh render` through the real console script."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ISTHMUS = str(Path(sys.executable).with_name("isthmus"))


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ISTHMUS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1", "HOME": str(Path.home()), "COLUMNS": "200"})


def _fleet(folder: Path, **network: Any) -> Path:
    doc = yaml.safe_load((EXAMPLES / "fleet.yaml").read_text())
    doc["spec"]["network"].update(network)
    target = folder / "fleet.yaml"
    target.write_text(yaml.safe_dump(doc))
    return target


@pytest.fixture
def app(tmp_path: Path) -> Path:
    target = tmp_path / "cassandra.yaml"
    shutil.copy(EXAMPLES / "cassandra.yaml", target)
    return target


def _ports(doc: dict[str, Any], pair: tuple[str, str]) -> set[tuple[str, int | None]]:
    (rules,) = [p["rules"] for p in doc["pairs"] if (p["from"], p["to"]) == pair]
    return {(r["protocol"], r["port"]) for r in rules}


# ----------------------------------------------------------------------------------- explain firewall


def test_firewall_json_tunnel_with_wireguard(tmp_path: Path) -> None:
    result = run("explain", "firewall", "-f", _fleet(tmp_path), "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["mode"]["routing"] == "tunnel" and doc["mode"]["encryption"] == "wireguard"
    assert len(doc["pairs"]) == 6  # 3 clusters: every ordered pair
    ports = _ports(doc, ("eu-west", "us-east"))
    assert {("udp", 8472), ("udp", 51871), ("tcp", 4240), ("icmp", 8), ("tcp", 2379)} <= ports
    assert ("tcp", 7000) not in ports and ("tcp", 9042) not in ports  # inside the tunnel, unseen


def test_firewall_json_native_routing_opens_cassandra_between_pod_cidrs(tmp_path: Path) -> None:
    result = run("explain", "firewall", "-f", _fleet(tmp_path, routing="native", encryption="none"), "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    ports = _ports(doc, ("us-east", "ap-south"))
    assert ("udp", 8472) not in ports and ("udp", 51871) not in ports
    assert {("tcp", 7000), ("tcp", 7001), ("tcp", 9042)} <= ports
    (rules,) = [p["rules"] for p in doc["pairs"] if (p["from"], p["to"]) == ("us-east", "ap-south")]
    cassandra = [r for r in rules if r["port"] == 7000]
    assert cassandra[0]["source"].startswith("10.0.") and cassandra[0]["direction"] == "us-east -> ap-south"


def test_firewall_table_names_each_pair_mode_port_and_purpose(tmp_path: Path) -> None:
    result = run("explain", "firewall", "-f", _fleet(tmp_path, tunnelProtocol="geneve"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tunnelProtocol geneve" in out and "encryption wireguard" in out
    for text in ("eu-west -> us-east", "ap-south -> eu-west", "6081", "51871", "GENEVE tunnel", "direction",
                 "purpose"):
        assert text in out
    assert "8472" not in out


def test_firewall_yaml_matches_json(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    assert yaml.safe_load(run("explain", "firewall", "-f", fleet, "-o", "yaml").stdout) == \
        json.loads(run("explain", "firewall", "-f", fleet, "-o", "json").stdout)


def test_firewall_rules_are_one_line_each(tmp_path: Path) -> None:
    result = run("explain", "firewall", "-f", _fleet(tmp_path), "--rules")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# fleet global:")
    assert "[eu-west -> us-east]" in lines
    allow = [line for line in lines if line.startswith("allow ")]
    assert len(allow) == 6 * 5 and all("#" in line for line in allow)


def test_firewall_does_not_write_the_lock(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    assert run("explain", "firewall", "-f", fleet).returncode == 0
    assert not fleet.with_name("fleet.lock.yaml").exists()


def test_firewall_uses_the_lock_beside_the_spec(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, routing="native", encryption="none")
    assert run("plan", "-f", fleet).returncode == 0  # writes fleet.lock.yaml
    lock = yaml.safe_load(fleet.with_name("fleet.lock.yaml").read_text())
    lock_pods = {name: c["podCIDR"] for name, c in lock["clusters"].items()}
    doc = json.loads(run("explain", "firewall", "-f", fleet, "-o", "json").stdout)
    sources = {r["source"] for p in doc["pairs"] for r in p["rules"] if r["port"] == 7000}
    assert sources == set(lock_pods.values())


# ------------------------------------------------------------------------------------ explain network


def test_explain_network_writes_a_png_and_names_client_addresses(tmp_path: Path, app: Path) -> None:
    picture = tmp_path / "pics" / "net.png"
    result = run("explain", "network", "-f", _fleet(tmp_path), "-f", app, "--picture", picture)
    assert result.returncode == 0, result.stderr
    png = picture.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "VXLAN + WireGuard, MTU 1330" in result.stdout
    assert "orders-client.cassandra.svc.clusterset.local:9042" in result.stdout
    assert "orders-client.cassandra.svc.cluster.local:9042" in result.stdout


def test_explain_network_draws_with_picture_and_keeps_o_for_formats() -> None:
    result = run("explain", "network", "--help")
    assert "--picture" in result.stdout and " -o " not in result.stdout


def test_explain_network_refuses_an_unknown_picture_format(tmp_path: Path) -> None:
    result = run("explain", "network", "-f", _fleet(tmp_path), "--picture", tmp_path / "net.docx")
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------- mesh render


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_mesh_render_cilium_writes_values_per_cluster_and_a_private_ca(tmp_path: Path, app: Path) -> None:
    fleet = _fleet(tmp_path)
    out = tmp_path / "out"
    result = run("mesh", "render", "-f", fleet, "-f", app, "--out", out)
    assert result.returncode == 0, result.stderr
    ca = tmp_path / "fleet.ca"
    key = (ca / "cilium-ca.key").read_text()
    assert "PRIVATE KEY" in key and _mode(ca / "cilium-ca.key") == 0o600 and _mode(ca) == 0o700
    body = key.splitlines()[1]
    assert body not in result.stdout and body not in result.stderr  # the CA key is never printed
    ids = set()
    for cluster in ("eu-west", "us-east", "ap-south"):
        values = yaml.safe_load((out / cluster / "cilium-values.yaml").read_text())
        assert values["cluster"]["name"] == cluster and "tls" not in values
        ids.add(values["cluster"]["id"])
        assert values["clustermesh"]["config"]["clusters"][0]["address"].endswith(".mesh.isthmus.local")
        secret = yaml.safe_load((out / cluster / "cilium-ca.yaml").read_text())
        assert secret["metadata"]["name"] == "cilium-ca" and _mode(out / cluster / "cilium-ca.yaml") == 0o600
        kinds = {d["kind"] for d in yaml.safe_load_all((out / cluster / "orders-network.yaml").read_text()) if d}
        # Policies only: the app's discovery objects are part of its manifests (`isthmus apply` deploys them).
        assert kinds == {"CiliumNetworkPolicy"}
        assert not (out / cluster / "istio.yaml").exists()
    assert ids == {1, 2, 3}
    assert not fleet.with_name("fleet.lock.yaml").exists()


def test_mesh_render_reuses_the_ca(tmp_path: Path) -> None:
    fleet, out = _fleet(tmp_path), tmp_path / "out"
    ca_dir = tmp_path / "secret" / "ca"
    assert run("mesh", "render", "-f", fleet, "--out", out, "--ca-dir", ca_dir).returncode == 0
    first = (out / "eu-west" / "cilium-ca.yaml").read_text()
    second = run("mesh", "render", "-f", fleet, "--out", out, "--ca-dir", ca_dir)
    assert second.returncode == 0 and "created the mesh CA" not in second.stderr
    assert (out / "eu-west" / "cilium-ca.yaml").read_text() == first
    assert not (tmp_path / "fleet.ca").exists()


def test_mesh_render_both_writes_istio_on_one_flat_network(tmp_path: Path, app: Path) -> None:
    out = tmp_path / "out"
    result = run("mesh", "render", "-f", _fleet(tmp_path, mesh="both"), "-f", app, "--out", out)
    assert result.returncode == 0, result.stderr
    for cluster in ("eu-west", "us-east", "ap-south"):
        folder = out / cluster
        assert (folder / "cilium-values.yaml").exists()
        values = yaml.safe_load((folder / "istio-values.yaml").read_text())
        assert values["global"]["network"] == "net-flat" and values["global"]["multiCluster"]["clusterName"] == cluster
        kinds = [d["kind"] for d in yaml.safe_load_all((folder / "istio.yaml").read_text()) if d]
        assert kinds == ["Namespace"]  # one network: no east-west gateway
        secrets = [d for d in yaml.safe_load_all((folder / "istio-secrets.yaml").read_text()) if d]
        assert [s["metadata"]["name"] for s in secrets] == ["cacerts"] and _mode(folder / "istio-secrets.yaml") == 0o600
        network = (folder / "orders-network.yaml").read_text()
        assert "PeerAuthentication" in network and "DestinationRule" not in network  # that one is the app's
    assert _mode(tmp_path / "fleet.ca" / "istio-root-ca.key") == 0o600


def test_mesh_render_istio_only_without_an_app_renders_gateways(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("mesh", "render", "-f", _fleet(tmp_path, mesh="istio"), "--out", out)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all((out / "us-east" / "istio.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"Namespace", "Gateway"}
    assert not (out / "us-east" / "cilium-values.yaml").exists()
    assert "istioctl create-remote-secret" in result.stderr


def test_mesh_render_refuses_cassandra_on_an_istio_only_mesh(tmp_path: Path, app: Path) -> None:
    out = tmp_path / "out"
    result = run("mesh", "render", "-f", _fleet(tmp_path, mesh="istio"), "-f", app, "--out", out)
    assert result.returncode == 2
    assert "[flat-network]" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "fleet.ca").exists()  # refused before anything is written


def test_mesh_render_refuses_a_cluster_id_beyond_max_connected_clusters(tmp_path: Path) -> None:
    doc = yaml.safe_load(_fleet(tmp_path, maxConnectedClusters=255).read_text())
    doc["spec"]["clusters"][0]["clusterID"] = 300
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(doc))
    result = run("mesh", "render", "-f", tmp_path / "fleet.yaml", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert "clusterID 300" in result.stderr and "outside 1..255" in result.stderr
    assert "maxConnectedClusters" in result.stderr and "Traceback" not in result.stderr


def test_mesh_render_refuses_two_clusters_with_one_id(tmp_path: Path) -> None:
    doc = yaml.safe_load(_fleet(tmp_path).read_text())
    doc["spec"]["clusters"][0]["clusterID"] = 7
    doc["spec"]["clusters"][1]["clusterID"] = 7
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(doc))
    result = run("mesh", "render", "-f", tmp_path / "fleet.yaml", "--out", tmp_path / "out")
    assert result.returncode == 2 and "already holds it" in result.stderr


def test_mesh_render_refuses_a_lone_ca_file(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "cilium-ca.crt").write_text("stale")
    result = run("mesh", "render", "-f", _fleet(tmp_path), "--out", tmp_path / "out", "--ca-dir", ca_dir)
    assert result.returncode == 2 and "without its pair" in result.stderr
