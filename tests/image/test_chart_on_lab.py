"""deploy/chart on the lab's real API servers: every template passes a server-side dry run, and `helm install`
gives an operator that reconciles a CassandraCluster applied afterwards into the member cluster.

The lab's pods are kwok fakes (no kubelet runs containers), so the Deployment's replicas cannot run
the image. The operator therefore runs here as a local process, started with exactly the command and
arguments of the Deployment that helm installed, and authenticated as the chart's ServiceAccount (a
token from ``kubectl create token``): what it may do is what the chart's RBAC grants, no more. The
image itself is shown to run in tests/image/test_image_runs.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.labspecs import app_doc, fleet_doc
from fixtures.opharness import ISTHMUS, OperatorProcess, apply_doc, converged, member_kubeconfig, statefulsets, wait_for
from isthmus.lab import Lab
from isthmus.lab.processes import free_ports

from ._helm import CHART, helm

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]

CLUSTER = "c3"  # the control plane here; other lab tests use c1 (operator) and c2 (isthmus operator install)
NAMESPACE = "isthmus-helm"
APP = "helmshop"


def _helm_lab(lab: Lab, *args: str) -> str:
    return helm(*args, "--kubeconfig", str(lab.kubeconfig), "--kube-context", lab.context(CLUSTER)).stdout


def test_every_template_passes_a_server_side_dry_run(lab3: Lab, tmp_path: Path) -> None:
    rendered = tmp_path / "chart.yaml"
    rendered.write_text(helm("template", "isthmus", str(CHART), "--namespace", NAMESPACE, "--include-crds").stdout)
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                     "RoleBinding", "Deployment", "Service"}
    apply_doc(lab3, CLUSTER, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    out = lab3.kubectl(CLUSTER, "apply", "--server-side", "--dry-run=server", "-f", str(rendered))
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(docs) == 10 and {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"} == {
        "fleets.isthmus.dev", "cassandraclusters.isthmus.dev", "chartreleases.isthmus.dev"}
    assert len(lines) == len(docs) and all(line.endswith("(server dry run)") for line in lines), out


def _service_account_kubeconfig(lab: Lab, directory: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount on the control plane: its token, the cluster's server and CA."""
    token = lab.kubectl(CLUSTER, "create", "token", "isthmus-operator", "-n", NAMESPACE, "--duration=1h").strip()
    doc = yaml.safe_load(member_kubeconfig(lab, CLUSTER))
    doc["users"] = [{"name": "isthmus-operator", "user": {"token": token}}]
    doc["contexts"][0]["context"]["user"] = "isthmus-operator"
    path = directory / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def _get(lab: Lab, *args: str) -> dict[str, Any]:
    out = lab.kubectl(CLUSTER, "get", *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


@pytest.fixture
def installed(lab3: Lab) -> Iterator[Lab]:
    out = _helm_lab(lab3, "install", "isthmus", str(CHART), "--namespace", NAMESPACE, "--create-namespace",
                    "--set", "intervals.statusInterval=2", "--set", "intervals.probeInterval=2",
                    "--set", "intervals.leaseDuration=6")
    assert "STATUS: deployed" in out
    try:
        yield lab3
    finally:
        _helm_lab(lab3, "uninstall", "isthmus", "--namespace", NAMESPACE)


def test_helm_install_gives_an_operator_that_reconciles_a_cassandracluster(installed: Lab, tmp_path: Path) -> None:
    lab = installed
    deployment = _get(lab, "deployment", "isthmus-operator", "-n", NAMESPACE)
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "@sha256:" in container["image"]
    assert lab.kubectl(CLUSTER, "get", "crd", "cassandraclusters.isthmus.dev", "-o", "name").strip()
    sa = f"--as=system:serviceaccount:{NAMESPACE}:isthmus-operator"
    assert lab.kubectl(CLUSTER, "auth", "can-i", "list", "secrets", "-n", NAMESPACE, sa, check=False).strip() == "yes"
    assert lab.kubectl(CLUSTER, "auth", "can-i", "list", "secrets", "-n", "default", sa, check=False).strip() == "no"

    # The member cluster (here the control plane itself) registered as the chart's namespace expects it; the
    # operator reaches members, the control plane's rollout lock and revisions included, with these credentials.
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": f"member-{CLUSTER}", "namespace": NAMESPACE,
                           "labels": {"isthmus.dev/cluster": CLUSTER}},
              "stringData": {"kubeconfig": member_kubeconfig(lab, CLUSTER)}}
    apply_doc(lab, CLUSTER, secret)
    fleet = fleet_doc()
    fleet["spec"]["controlPlane"] = CLUSTER  # the Fleet's control plane is where this operator runs
    apply_doc(lab, CLUSTER, fleet)
    apply_doc(lab, CLUSTER, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP}})

    # The Deployment's own command line, pointed at the control plane with the ServiceAccount's token.
    op = OperatorProcess(lab, "helm-op", tmp_path)
    op.port = free_ports(1)[0]
    args = list(container["args"])
    args[args.index("--metrics-port") + 1] = str(op.port)
    assert container["command"] == ["isthmus"]
    op.argv = [ISTHMUS, *args, "--kubeconfig", str(_service_account_kubeconfig(lab, tmp_path)),
               "--context", lab.context(CLUSTER), "--id", "helm-op", "--request-timeout", "3"]
    op.start()
    try:
        wait_for(lambda: op.leading, 30, "the chart's operator leads", op)
        doc = app_doc(APP, size=2)  # one node in each of the two racks
        doc["spec"]["datacenters"] = [d for d in doc["spec"]["datacenters"] if d["cluster"] == CLUSTER]
        apply_doc(lab, CLUSTER, doc)
        obj = wait_for(lambda: (o := _get(lab, "cassandracluster", APP, "-n", APP)) and converged(o) and o,
                       180, f"{APP} Ready", op)
        assert obj["status"]["readyDCs"] == "1/1"
        assert len(statefulsets(lab, CLUSTER, APP, APP)) >= 1
        lease = _get(lab, "lease", "isthmus-operator", "-n", NAMESPACE)
        assert lease["spec"]["holderIdentity"] == "helm-op"
        forbidden = [line for line in op.tail(400).splitlines() if "403" in line or "forbidden" in line.lower()]
        assert forbidden == [], forbidden[:5]

        lab.kubectl(CLUSTER, "delete", "cassandracluster", APP, "-n", APP, "--wait=false")
        wait_for(lambda: not _get(lab, "cassandracluster", APP, "-n", APP), 120, f"{APP} deleted", op)
        assert statefulsets(lab, CLUSTER, APP, APP) == {}
    finally:
        assert op.stop() == 0, op.tail()
