"""Shared inputs for the mesh tests: the example fleet and app, variants of them, and fake PEM text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isthmus.netplan import NetworkPlan, plan
from isthmus.render.cilium import CiliumCA
from isthmus.render.istio import IstioIntermediateCA
from isthmus.spec import CassandraCluster, Fleet, load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOCS = Path(__file__).resolve().parents[2] / "docs"

CERT = "-----BEGIN CERTIFICATE-----\nMIIBfakecert{}\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIEfakekey-{}-SECRET\n-----END PRIVATE KEY-----\n"
CA = CiliumCA(cert_pem=CERT.format("ca"), key_pem=KEY.format("ca"))


def example() -> tuple[Fleet, CassandraCluster]:
    specs = load_files([EXAMPLES / "fleet.yaml", EXAMPLES / "cassandra.yaml"])
    app = specs.apps[0]
    assert isinstance(app, CassandraCluster) and specs.fleet is not None
    return specs.fleet, app


def with_network(fleet: Fleet, **changes: Any) -> Fleet:
    network = fleet.spec.network.model_copy(update=changes)
    return fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"network": network})})


def planned(fleet: Fleet) -> NetworkPlan:
    return plan(fleet)


def istio_cas(p: NetworkPlan, root: str = CERT.format("root")) -> dict[str, IstioIntermediateCA]:
    return {c.name: IstioIntermediateCA(root_cert_pem=root, ca_cert_pem=CERT.format(c.name),
                                        ca_key_pem=KEY.format(c.name),
                                        cert_chain_pem=CERT.format(c.name) + root)
            for c in p.clusters}


def kubeconfigs(p: NetworkPlan) -> dict[str, str]:
    return {c.name: f"apiVersion: v1\nkind: Config\nclusters:\n- name: {c.name}\n  cluster:\n"
                    f"    server: https://{c.name}.example:6443\nusers:\n- name: istio-reader\n"
                    f"  user: {{token: TOKEN-{c.name}}}\n" for c in p.clusters}
