"""Rendered mesh objects pass server-side dry-run on a real API server (lab cluster c3).

The upstream Istio CRDs (``../shared/crds/istio/crd-all.gen.yaml`` beside the repo) are installed
into c3 only, so Gateway, PeerAuthentication, AuthorizationPolicy and DestinationRule are checked
against Istio's own OpenAPI schemas and CEL rules. Plain NetworkPolicies, Services, Namespaces and
Secrets are checked by the API server's built-in validation. Not checked here, because their CRDs
are not available offline: ``CiliumNetworkPolicy`` (validated against the CRD schema from
``@kubernetes-models/cilium`` in ``tests/mesh/test_cnp_schema.py``) and the MCS ``ServiceExport``.
Everything lives in namespaces of its own (``meshlab``, ``istio-system``), deleted afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.lab import Lab
from isthmus.lab.errors import LabError
from isthmus.netplan import NetworkPlan, plan
from isthmus.render.discovery import render_discovery
from isthmus.render.istio import render_istio
from isthmus.render.netpolicy import PolicyFlavor, render_policies
from isthmus.spec import CassandraCluster, Fleet, Mesh
from mesh._mesh import istio_cas, kubeconfigs

pytestmark = pytest.mark.lab

CLUSTER = "c3"
APP = "meshlab"
ISTIO_CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "crds" / "istio" / "crd-all.gen.yaml"
NOT_OFFLINE = {"CiliumNetworkPolicy", "ServiceExport"}
Obj = dict[str, Any]


def _specs(mesh: Mesh) -> tuple[Fleet, CassandraCluster, NetworkPlan]:
    doc: dict[str, Any] = copy.deepcopy(fleet_doc())
    doc["spec"]["network"]["mesh"] = mesh.value
    fleet, app = load(doc, app_doc(APP))
    return fleet, app, plan(fleet)


def _write(folder: Path, name: str, objects: list[Obj]) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def istio_lab(lab3: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """c3 with Istio's CRDs Established and this module's namespaces created (deleted afterwards)."""
    if not ISTIO_CRDS.exists():
        pytest.skip(f"the upstream Istio CRDs are not at {ISTIO_CRDS}")
    lab3.kubectl(CLUSTER, "apply", "--server-side", "--force-conflicts", "-f", str(ISTIO_CRDS), timeout=120)
    lab3.kubectl(CLUSTER, "wait", "--for=condition=Established", "--timeout=90s", "-f", str(ISTIO_CRDS),
                 timeout=120)
    folder = tmp_path_factory.mktemp("mesh-lab")
    namespaces = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in (APP, "istio-system")]
    created = _write(folder, "namespaces.yaml", namespaces)
    lab3.kubectl(CLUSTER, "apply", "-f", str(created))
    try:
        yield lab3
    finally:
        lab3.kubectl(CLUSTER, "delete", "-f", str(created), "--wait=false", "--ignore-not-found", check=False)


def _dry_run(lab: Lab, folder: Path, name: str, objects: list[Obj]) -> str:
    path = _write(folder, name, objects)
    return lab.kubectl(CLUSTER, "apply", "--dry-run=server", "-f", str(path), timeout=60)


def _for_c3(objects: tuple[Obj, ...]) -> list[Obj]:
    return [o for o in objects if o["kind"] not in NOT_OFFLINE]


def test_the_dry_run_rejects_a_bad_istio_object(istio_lab: Lab, tmp_path: Path) -> None:
    bad = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": "bad", "namespace": "istio-system"},
           "spec": {"servers": [{"port": {"number": "not-a-port", "protocol": "TLS"}, "hosts": ["*.local"]}]}}
    with pytest.raises(LabError, match=r"(?i)invalid|number"):
        _dry_run(istio_lab, tmp_path, "bad.yaml", [bad])


def test_istio_mesh_objects_pass_dry_run(istio_lab: Lab, tmp_path: Path) -> None:
    _, _, p = _specs(Mesh.ISTIO)
    objects = list(render_istio(p, cas=istio_cas(p), kubeconfigs=kubeconfigs(p)).for_cluster(CLUSTER))
    assert {"Namespace", "Gateway", "Secret"} == {o["kind"] for o in objects}  # one network per region: a gateway
    out = _dry_run(istio_lab, tmp_path, "istio.yaml", objects)
    assert "gateway.networking.istio.io/cross-network-gateway" in out and "server dry run" in out


def test_app_discovery_and_istio_policies_pass_dry_run(istio_lab: Lab, tmp_path: Path) -> None:
    fleet, app, p = _specs(Mesh.BOTH)
    rendered = render_discovery(app, fleet).merge(render_policies(app, fleet, p)).for_cluster(CLUSTER)
    objects = _for_c3(rendered)
    kinds = {o["kind"] for o in objects}
    assert {"Service", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy"} <= kinds
    assert {o["kind"] for o in rendered} - kinds == NOT_OFFLINE  # only these are left to other tests
    out = _dry_run(istio_lab, tmp_path, "app.yaml", objects)
    for line in (f"destinationrule.networking.istio.io/{APP}-client", f"peerauthentication.security.istio.io/{APP}",
                 f"authorizationpolicy.security.istio.io/{APP}-internode", f"service/{APP}-client"):
        assert line in out


def test_plain_kubernetes_network_policies_pass_dry_run(istio_lab: Lab, tmp_path: Path) -> None:
    fleet, app, p = _specs(Mesh.CILIUM)
    objects = list(render_policies(app, fleet, p, flavor=PolicyFlavor.KUBERNETES).for_cluster(CLUSTER))
    assert {o["kind"] for o in objects} == {"NetworkPolicy"}
    out = _dry_run(istio_lab, tmp_path, "netpol.yaml", objects)
    for suffix in ("default-deny", "internode", "clients"):
        assert f"networkpolicy.networking.k8s.io/{APP}-{suffix}" in out


def test_cli_rendered_istio_files_pass_dry_run(istio_lab: Lab, tmp_path: Path) -> None:
    """What `isthmus mesh render` writes (Istio-only mesh: gateway, real CA) is what the API server accepts."""
    import subprocess
    import sys

    doc: dict[str, Any] = copy.deepcopy(fleet_doc())
    doc["spec"]["network"]["mesh"] = "istio"
    spec = tmp_path / "fleet.yaml"
    spec.write_text(yaml.safe_dump(doc))
    done = subprocess.run([str(Path(sys.executable).with_name("isthmus")), "mesh", "render", "-f", str(spec), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("istio.yaml", "istio-secrets.yaml"):
        out = istio_lab.kubectl(CLUSTER, "apply", "--dry-run=server", "-f", str(tmp_path / "out" / CLUSTER / name))
        assert "server dry run" in out
