"""The Isthmus image: `make image`'s archive, unpacked with umoci, runs its own entrypoint as a container would.

The archive comes from ``scripts/image/build.sh`` (what ``make image`` runs), which reuses
``~/.cache/isthmus/image`` when its inputs (the wheel, the package and requirement lists) are unchanged.
Each command runs in the unpacked root the way a runtime runs the image's config: its entrypoint,
environment, user and working directory, in new PID and mount namespaces (``unshare``) with
``chroot``; the host's ``/dev`` is bound in, as a runtime provides one. The host network is shared, so
the guard in the image fronts the lab's real Cassandra on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.charts import ETCD
from guard.conftest import driver_cluster
from isthmus import __version__
from isthmus.lab.binaries import HELM_VERSION
from isthmus.lab.cassandra import CassandraNode
from isthmus.lab.processes import free_ports

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "image" / "build.sh"
# The host side of the sandbox: bind /dev into the root, then chroot as the image's user.
_ENTER = 'mount --bind /dev "$0/dev" && exec /usr/sbin/chroot --userspec="$1" "$0" "${@:2}"'


@dataclass(frozen=True)
class Image:
    archive: Path
    digest: str
    config: dict[str, Any]
    rootfs: Path
    revision: str

    def argv(self, *args: str, entrypoint: tuple[str, ...] = ()) -> list[str]:
        """The host command that runs the image's entrypoint (or ``entrypoint``) with ``args`` (the image's CMD
        when none)."""
        cfg = self.config["config"]
        user = cfg["User"]
        command = [*(entrypoint or cfg["Entrypoint"]), *(args or cfg.get("Cmd", []))]
        return ["unshare", "--pid", "--fork", "--kill-child=SIGTERM", "--mount",
                f"--mount-proc={self.rootfs / 'proc'}", "bash", "-c", _ENTER, str(self.rootfs), user, *command]

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config["config"]["Env"])

    def run(self, *args: str, timeout: float = 60, entrypoint: tuple[str, ...] = ()) -> \
            subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, entrypoint=entrypoint), env=self.env, cwd=self.rootfs,
                              capture_output=True, text=True, timeout=timeout)


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algorithm, hexdigest = digest.split(":")
    data: dict[str, Any] = json.loads((layout / "blobs" / algorithm / hexdigest).read_bytes())
    return data


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    work = tmp_path_factory.mktemp("image")
    archive = work / "isthmus.oci.tar"
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    build = subprocess.run(["bash", str(BUILD), str(archive)], capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stderr[-4000:]
    layout, bundle = work / "layout", work / "bundle"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"oci:{layout}:isthmus"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:isthmus", str(bundle)], check=True,
                   capture_output=True)
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = _blob(layout, entry["digest"])
    yield Image(archive, entry["digest"], _blob(layout, manifest["config"]["digest"]), bundle / "rootfs", revision)
    shutil.rmtree(bundle, ignore_errors=True)


def test_a_second_build_comes_from_the_cache_and_prints_the_digest_and_how_to_push(image: Image) -> None:
    result = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "cached:" in result.stderr
    out = result.stdout
    digest = next(line.split()[1] for line in out.splitlines() if line.startswith("digest:"))
    assert digest == image.digest
    archive = REPO / "out" / "image" / f"isthmus-{__version__}.oci.tar"
    assert (archive.parent / (archive.name + ".digest")).read_text().strip() == digest
    assert f"skopeo copy oci-archive:{archive} docker://ghcr.io/isthmus-dev/isthmus:{__version__}" in out
    assert f"ghcr.io/isthmus-dev/isthmus@{digest}" in out


def test_the_same_inputs_build_the_same_digest(image: Image, tmp_path: Path) -> None:
    # Layers 3 and 4 (helm; the wheel, its .pyc files, the SBOM) and the archive built again; 1 and 2 from the cache.
    again = tmp_path / "again.oci.tar"
    result = subprocess.run(["bash", str(BUILD), str(again)], capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "ISTHMUS_IMAGE_FRESH": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "cached:" not in result.stderr and "layer 4" in result.stderr
    assert (tmp_path / "again.oci.tar.digest").read_text().strip() == image.digest


def test_the_archive_is_named_by_its_manifest_digest(image: Image) -> None:
    layout_digest = image.digest
    out = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{image.archive}"], capture_output=True,
                         check=True).stdout
    assert f"sha256:{hashlib.sha256(out).hexdigest()}" == layout_digest


def test_labels_user_and_entrypoint(image: Image) -> None:
    cfg = image.config["config"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.source"] == "https://github.com/isthmus-dev/isthmus"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"] in (image.revision, f"{image.revision}-dirty")
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/usr/local/bin/isthmus"]
    assert (image.config["os"], image.config["architecture"]) == ("linux", "amd64")


def test_no_shell_and_small(image: Image) -> None:
    for shell in ("bin/sh", "bin/bash", "bin/dash", "usr/bin/sh", "usr/bin/bash", "usr/bin/dash"):
        assert not (image.rootfs / shell).exists(), shell
    assert (image.rootfs / "usr/local/bin/isthmus").read_text().startswith("#!/usr/bin/python3 -I\n")
    size = sum(p.lstat().st_size for p in image.rootfs.rglob("*") if p.is_file() and not p.is_symlink())
    # Python, its libraries and Isthmus are about 177 MiB; helm (stripped) is about 59 MiB.
    assert size < 256 * 1024 * 1024, f"{size / 2**20:.0f} MiB unpacked"


def test_helm_in_the_image_is_the_pinned_build_and_renders_a_chart(image: Image, tmp_path: Path) -> None:
    version = image.run("version", "--template", "{{.Version}}", entrypoint=("/usr/local/bin/helm",))
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == HELM_VERSION
    sbom = json.loads((image.rootfs / "usr/share/isthmus/sbom.json").read_text())
    [helm] = sbom["binaries"]
    digest = hashlib.sha256((image.rootfs / "usr/local/bin/helm").read_bytes()).hexdigest()
    assert (helm["name"], helm["version"], helm["sha256"]) == ("helm", HELM_VERSION, digest)
    # The operator finds it on the image's PATH, as it would in a pod, and it renders a real chart there.
    chart = image.rootfs / "tmp" / "chart"
    shutil.copytree(ETCD, chart)
    try:
        rendered = image.run("template", "e", "/tmp/chart", "--namespace", "e",
                             entrypoint=("/usr/local/bin/helm",), timeout=120)
        assert rendered.returncode == 0, rendered.stderr
        assert "kind: StatefulSet" in rendered.stdout
    finally:
        shutil.rmtree(chart)


def test_the_sbom_lists_debian_packages_and_python_distributions(image: Image) -> None:
    sbom = json.loads((image.rootfs / "usr/share/isthmus/sbom.json").read_text())
    debs = {p["name"]: p["version"] for p in sbom["debian"]}
    pys = {p["name"].lower(): p["version"] for p in sbom["python"]}
    assert {"python3.11", "libpython3.11-stdlib", "libc6", "libssl3"} <= set(debs)
    assert pys["isthmus"] == __version__
    assert {"kopf", "pydantic", "lightkube", "uvloop", "cryptography"} <= set(pys)
    status = (image.rootfs / "var/lib/dpkg/status").read_text()
    assert "Package: python3.11\nStatus: install ok installed\n" in status


def test_the_entrypoint_prints_the_version_as_a_non_root_user(image: Image) -> None:
    result = image.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"isthmus {__version__}"
    who = image.run("operator", "run", "--help")
    assert who.returncode == 0, who.stderr
    assert "Run the operator" in who.stdout and "--lease-duration" in who.stdout


POLICY = """
rules:
  - name: image-test
    identities: {cidrs: ["127.0.0.0/8"]}
    allow:
      - actions: [select]
        tables: ["imageks.kv"]
"""


@pytest.mark.cassandra
def test_the_guard_in_the_image_fronts_a_real_cassandra(image: Image, cassandra_node: CassandraNode) -> None:
    from cassandra import Unauthorized

    setup = cassandra_node.session()
    setup.execute("CREATE KEYSPACE IF NOT EXISTS imageks WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    setup.execute("CREATE TABLE IF NOT EXISTS imageks.kv (k int PRIMARY KEY, v text)")
    setup.execute("INSERT INTO imageks.kv (k, v) VALUES (1, 'from-the-image')")
    (image.rootfs / "etc/cqlguard/policy.yaml").write_text(POLICY)
    port, metrics_port = free_ports(2)
    proc = subprocess.Popen(
        image.argv("guard", "run", "--listen", f"127.0.0.1:{port}",
                   "--upstream", f"{cassandra_node.host}:{cassandra_node.port}",
                   "--policy", "/etc/cqlguard/policy.yaml", "--flows", "/tmp/flows.jsonl",
                   "--metrics", f"127.0.0.1:{metrics_port}"),
        env=image.env, cwd=image.rootfs, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        banner = proc.stderr.readline()
        assert "listening" in banner and "uvloop" in banner, banner
        cluster = driver_cluster("127.0.0.1", port)
        session = cluster.connect()
        try:
            assert session.execute("SELECT v FROM imageks.kv WHERE k = 1").one().v == "from-the-image"
            with pytest.raises(Unauthorized, match="cqlguard"):
                session.execute("INSERT INTO imageks.kv (k, v) VALUES (2, 'denied')")
        finally:
            cluster.shutdown()
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "isthmus_cqlguard_connections_total" in metrics
    finally:
        # SIGTERM to the guard itself (unshare's child, PID 1 of its namespace), as a runtime stops a
        # container; unshare then exits with the guard's status.
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        os.kill(int(children[0]) if children else proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout=10)
    assert code == 0
    # Written by the image's user, and flushed on SIGTERM: the denied INSERT is there.
    flows = image.rootfs / "tmp/flows.jsonl"
    assert flows.stat().st_uid == 65532
    verdicts = [json.loads(line)["verdict"] for line in flows.read_text().splitlines()]
    assert "DENIED" in verdicts, verdicts
