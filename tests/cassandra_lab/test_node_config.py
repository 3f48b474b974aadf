"""What a lab node is given: rendered files, its JVM command line, and clear provisioning errors.

Pure or filesystem-only: no JVM is started here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from isthmus.lab import cassandra_install
from isthmus.lab.cassandra import (
    JVM17_SERVER_OPTIONS,
    Authenticator,
    CassandraLabError,
    Credentials,
    LabCassandraYaml,
    jvm_argv,
    prepare_node,
    render_cassandra_yaml,
    render_rackdc_properties,
)
from isthmus.lab.cassandra_install import MARKER, ensure_cassandra


def test_yaml_has_the_addresses_seeds_and_small_pools(tmp_path: Path) -> None:
    cfg = LabCassandraYaml(
        cluster_name="c", listen_address="127.0.1.2", seeds=("127.0.1.1",), storage_dir=tmp_path,
        authenticator=Authenticator.PASSWORD,
    )
    doc = yaml.safe_load(render_cassandra_yaml(cfg))
    assert doc["listen_address"] == doc["rpc_address"] == "127.0.1.2"
    assert doc["seed_provider"][0]["parameters"] == [{"seeds": "127.0.1.1:7000"}]
    assert doc["endpoint_snitch"] == "GossipingPropertyFileSnitch"
    assert doc["authenticator"] == "PasswordAuthenticator"
    assert (doc["num_tokens"], doc["concurrent_compactors"], doc["auto_bootstrap"]) == (16, 1, False)
    assert doc["data_file_directories"] == [str(tmp_path / "data")]


def test_nodes_listen_on_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        LabCassandraYaml(
            cluster_name="c", listen_address="10.0.0.1", seeds=("10.0.0.1",), storage_dir=tmp_path
        )


def test_rackdc_names_the_datacenter_and_refuses_odd_names() -> None:
    assert render_rackdc_properties("dc2", "r1") == "dc=dc2\nrack=r1\n"
    with pytest.raises(ValueError, match="datacenter"):
        render_rackdc_properties("dc 2")


def test_prepare_node_writes_both_files_and_defaults_password_credentials(tmp_path: Path) -> None:
    spec = prepare_node(
        name="n", address="127.0.1.5", node_dir=tmp_path / "n", cluster_name="c", seeds=("127.0.1.5",),
        datacenter="east", authenticator=Authenticator.PASSWORD,
    )
    assert spec.cassandra_yaml.is_file()
    assert spec.rackdc_properties.read_text().startswith("dc=east\n")
    assert spec.credentials == Credentials("cassandra", "cassandra")
    assert "cassandra'" not in repr(spec.credentials).split("password=")[1]


def test_jvm_argv_carries_java17_options_jamm_and_the_callers_files(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "jamm-0.4.0.jar").touch()
    spec = prepare_node(name="n", address="127.0.1.5", node_dir=tmp_path / "n", cluster_name="c",
                        seeds=("127.0.1.5",))
    argv = jvm_argv(spec, java=Path("/usr/bin/java"), lib=lib)
    assert argv[-1] == "org.apache.cassandra.service.CassandraDaemon"
    assert argv[1:3] == ["-Xms1G", "-Xmx1G"]
    assert f"-javaagent:{lib / 'jamm-0.4.0.jar'}" in argv
    assert f"-Dcassandra.config={spec.cassandra_yaml.resolve().as_uri()}" in argv
    assert "-Dcassandra-foreground=yes" in argv
    assert "-XX:TieredStopAtLevel=1" in argv  # JitMode.QUICK_START is the lab default
    assert "-Djdk.attach.allowAttachSelf=true" in argv
    joined = " ".join(argv)
    assert " ".join(JVM17_SERVER_OPTIONS) in joined
    assert argv[argv.index("-cp") + 1].startswith(f"{spec.node_dir / 'conf'}:")


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CassandraLabError, match="Maven"):
        ensure_cassandra("5.0.9", cache_root=tmp_path / "cache")


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(cassandra_install, "_java_major", lambda java: 11)
    with pytest.raises(CassandraLabError, match="Java 17"):
        cassandra_install.find_java()


def test_a_complete_lib_folder_skips_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "cache" / "5.0.9" / "lib"
    lib.mkdir(parents=True)
    (lib / "cassandra-all-5.0.9.jar").touch()
    (lib / MARKER).write_text("cassandra-all-5.0.9.jar\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: would raise if Maven were needed
    assert ensure_cassandra("5.0.9", cache_root=tmp_path / "cache") == lib
    (lib / "cassandra-all-5.0.9.jar").unlink()  # incomplete now: Maven would be needed
    with pytest.raises(CassandraLabError, match="Maven"):
        ensure_cassandra("5.0.9", cache_root=tmp_path / "cache")
