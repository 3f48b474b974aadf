"""A pod whose volume was lost comes back as a replacement of its old identity (issue 13, item 9).

The rendered init container's script is run here with ``sh``, its absolute paths moved under a temporary
folder: what it stages is what the node would start with.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from isthmus.render import render_cassandra
from isthmus.render.cassandra import REPLACING_MARKER
from isthmus.spec import CassandraCluster, Fleet, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POD = "orders-dc-eu-rack-b-0"  # a seed of dc-eu (ordinal 0 of its first rack)
SELF = f"{POD}.orders-dc-eu-all.cassandra.svc.cluster.local"
FLAG = "-Dcassandra.replace_address_first_boot="


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], dict[str, Any]]:
    """dc-eu's rack-b StatefulSet and its ConfigMap, as render makes them for the example spec."""
    specs = load_files([EXAMPLES / "fleet.yaml", EXAMPLES / "cassandra.yaml"])
    app = specs.apps[0]
    assert isinstance(app, CassandraCluster) and isinstance(specs.fleet, Fleet)
    objs = render_cassandra(app, specs.fleet).for_cluster("eu-west")
    sts = next(o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "orders-dc-eu-rack-b")
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "orders-dc-eu-config")
    return sts, config


def _seeds(yaml_text: str) -> list[str]:
    return str(yaml.safe_load(yaml_text)["seed_provider"][0]["parameters"][0]["seeds"]).split(",")


def test_the_init_container_reads_the_identities_and_the_data_volume(
        rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    sts, _ = rendered
    pod = sts["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert mounts["data"]["mountPath"] == "/var/lib/cassandra"  # the claim the main container mounts there too
    assert mounts["identity"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["identity"] == {"name": "identity",
                                   "configMap": {"name": "orders-dc-eu-identities", "optional": True}}
    assert "data" not in volumes  # it is the volumeClaimTemplate's
    env = {e["name"]: e for e in init["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SEED_SUFFIX"]["value"] == ".orders-dc-eu-all.cassandra.svc.cluster.local"
    (main,) = [c for c in pod["containers"] if c["name"] == "cassandra"]
    assert main["readinessProbe"]["exec"]["command"][-1].endswith(f"&& rm -f {REPLACING_MARKER}")
    # The identities are not configuration: a new address recorded must not roll the pods.
    assert "orders-dc-eu-identities" not in str(sts["spec"]["template"]["metadata"])


@dataclass
class Staged:
    exit_code: int
    stderr: str
    jvm_options: str
    seeds: list[str]
    marker: Path


def _run(tmp: Path, rendered: tuple[dict[str, Any], dict[str, Any]], *, recorded: str | None,
         data: bool = False, marker: bool = False, pod: str = POD) -> Staged:
    """Run the rendered init script for ``pod`` with ``recorded`` as its identity entry (None: no entry)."""
    sts, config = rendered
    (init,) = sts["spec"]["template"]["spec"]["initContainers"]
    script = init["command"][-1]
    image_conf, mount, identity, data_dir, staging = (tmp / n for n in ("image", "isthmus", "identity", "data",
                                                                         "conf"))
    for folder in (image_conf, mount, identity, data_dir, staging):
        folder.mkdir(parents=True, exist_ok=True)
    (image_conf / "jvm-server.options").write_text("-ea\n")
    (mount / "cassandra.yaml").write_text(config["data"]["cassandra.yaml"])
    (mount / "cassandra-rackdc.properties").write_text(config["data"]["cassandra-rackdc.rack-b.properties"])
    if recorded is not None:
        (identity / pod).write_text(recorded)
    if data:
        (data_dir / "data" / "system").mkdir(parents=True)
    if marker:
        (data_dir / ".isthmus-replacing").write_text("10.0.0.9\n")
    for mounted, moved in (("/isthmus-identity", identity), ("/var/lib/cassandra", data_dir),
                           ("/etc/cassandra", image_conf), ("/isthmus/", f"{mount}/"), ("/conf/", f"{staging}/")):
        script = script.replace(mounted, str(moved))
    env = {"PATH": "/usr/bin:/bin", "POD_IP": "10.0.0.7", "POD_NAME": pod,
           **{e["name"]: e["value"] for e in init["env"] if "value" in e}}
    proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    staged_yaml = (staging / "cassandra.yaml").read_text() if (staging / "cassandra.yaml").exists() else ""
    jvm = (staging / "jvm-server.options").read_text() if (staging / "jvm-server.options").exists() else ""
    return Staged(proc.returncode, proc.stderr, jvm, _seeds(staged_yaml) if staged_yaml else [],
                  data_dir / ".isthmus-replacing")


def test_a_pod_with_no_recorded_identity_bootstraps_as_a_new_node(
        tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    staged = _run(tmp_path, rendered, recorded=None)
    assert staged.exit_code == 0, staged.stderr
    assert FLAG not in staged.jvm_options
    assert SELF in staged.seeds  # a seed stays its own seed
    assert not staged.marker.exists()


def test_an_empty_volume_with_a_recorded_identity_replaces_it_and_leaves_itself_out_of_the_seeds(
        tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, config = rendered
    staged = _run(tmp_path, rendered, recorded="10.0.0.4")
    assert staged.exit_code == 0, staged.stderr
    assert staged.jvm_options.splitlines() == ["-ea", f"{FLAG}10.0.0.4"]
    assert staged.seeds == [s for s in _seeds(config["data"]["cassandra.yaml"]) if s != SELF]
    assert len(staged.seeds) >= 2  # the other local seed and the remote datacenters' seed names
    assert staged.marker.read_text().strip() == "10.0.0.4"
    assert "replaces 10.0.0.4" in staged.stderr


def test_a_node_that_kept_its_data_keeps_its_identity(
        tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    staged = _run(tmp_path, rendered, recorded="10.0.0.4", data=True)
    assert staged.exit_code == 0, staged.stderr
    assert FLAG not in staged.jvm_options
    assert SELF in staged.seeds
    assert not staged.marker.exists()


def test_an_interrupted_replacement_is_still_a_replacement_on_the_next_start(
        tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    staged = _run(tmp_path, rendered, recorded="10.0.0.4", data=True, marker=True)
    assert staged.exit_code == 0, staged.stderr
    assert f"{FLAG}10.0.0.4" in staged.jvm_options.splitlines()
    assert SELF not in staged.seeds


def test_a_recorded_identity_that_is_not_an_address_stops_the_pod(
        tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    staged = _run(tmp_path, rendered, recorded="10.0.0.4\n-Dcassandra.join_ring=false")
    assert staged.exit_code == 1
    assert "is not an address" in staged.stderr
    assert FLAG not in staged.jvm_options


def test_an_ipv6_identity_is_an_address(tmp_path: Path, rendered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    staged = _run(tmp_path, rendered, recorded="fd00:10::4")
    assert staged.exit_code == 0, staged.stderr
    assert f"{FLAG}fd00:10::4" in staged.jvm_options.splitlines()
