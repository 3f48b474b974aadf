"""deploy/ applies cleanly to a real API server, and `isthmus operator install` puts the operator in a cluster."""

from __future__ import annotations

import json
import subprocess

import pytest

from fixtures.opharness import DEPLOY, ISTHMUS, NAMESPACE, apply_doc
from isthmus.lab import Lab

pytestmark = pytest.mark.lab


def test_deploy_folder_applies_server_side(lab3: Lab) -> None:
    apply_doc(lab3, "c3", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    out = lab3.kubectl("c3", "apply", "--server-side", "--dry-run=server", "-f", str(DEPLOY))
    assert "customresourcedefinition.apiextensions.k8s.io/cassandraclusters.isthmus.dev serverside-applied" in out
    assert "deployment.apps/isthmus-operator serverside-applied (server dry run)" in out
    assert "role.rbac.authorization.k8s.io/isthmus-operator serverside-applied (server dry run)" in out


def test_install_applies_crds_rbac_and_two_replicas(lab3: Lab) -> None:
    cmd = [ISTHMUS, "operator", "install", "--context", lab3.context("c2"), "--kubeconfig", str(lab3.kubeconfig)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "installed in lab-c2" in result.stderr
    crds = lab3.kubectl("c2", "get", "crd", "-o", "name").split()
    assert {"customresourcedefinition.apiextensions.k8s.io/fleets.isthmus.dev",
            "customresourcedefinition.apiextensions.k8s.io/cassandraclusters.isthmus.dev"} <= set(crds)
    deployment = json.loads(lab3.kubectl("c2", "get", "deployment", "isthmus-operator", "-n", NAMESPACE, "-o", "json"))
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "isthmus-operator"
    can = lab3.kubectl("c2", "auth", "can-i", "list", "secrets", "-n", NAMESPACE,
                       f"--as=system:serviceaccount:{NAMESPACE}:isthmus-operator", check=False).strip()
    cannot = lab3.kubectl("c2", "auth", "can-i", "list", "secrets", "-n", "default",
                          f"--as=system:serviceaccount:{NAMESPACE}:isthmus-operator", check=False).strip()
    assert (can, cannot) == ("yes", "no")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
