"""The command lines and config files of one lab cluster's components.

Owns: the per-cluster file layout (:class:`ClusterPaths`), the ports a cluster uses
(:class:`ClusterPorts`), the argv of etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok and the lab DNS (:mod:`.dnsserver`), the component kubeconfigs and the kwok
configuration (pod IP pool plus the lab's Stages). Must not: start processes; everything here is a pure function of the
spec, the ports and the paths, apart from writing files in :func:`write_cluster_files`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

import yaml

from .binaries import LabBinaries
from .images import REAL_IMAGE_PATTERN
from .netlayout import kwok_range
from .pki import ClusterPKI, Credential
from .specs import LabClusterSpec

__all__ = [
    "PORT_NAMES",
    "ClusterPaths",
    "ClusterPorts",
    "Component",
    "argv",
    "kubeconfig_yaml",
    "kwok_config_yaml",
    "scheduler_config_yaml",
    "write_cluster_files",
]

NOT_READY_KEY = "lab.isthmus.dev/not-ready"
KWOK_NODE_LABEL = ("type", "kwok")


class Component(StrEnum):
    """Start order is declaration order; stop order is the reverse."""

    ETCD = "etcd"
    APISERVER = "kube-apiserver"
    CONTROLLER_MANAGER = "kube-controller-manager"
    SCHEDULER = "kube-scheduler"
    KWOK = "kwok"
    #: the lab's pod runtime: real processes for the pods it can run (isthmus.lab.pods)
    RUNTIME = "runtime"
    #: the cluster's DNS (:mod:`.dnsserver`), at the service CIDR's tenth address in the cluster netns
    DNS = "dns"

    @classmethod
    def parse(cls, value: str) -> Component:
        aliases = {"apiserver": cls.APISERVER, "controller-manager": cls.CONTROLLER_MANAGER,
                   "kcm": cls.CONTROLLER_MANAGER, "scheduler": cls.SCHEDULER}
        if value in aliases:
            return aliases[value]
        return cls(value)


PORT_NAMES = ("etcd_client", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kubelet")


@dataclass(frozen=True)
class ClusterPorts:
    """The loopback TCP ports one cluster listens on (kept across stop/start)."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    #: kwok's kubelet API (exec, logs, port-forward), the port every node of the cluster advertises
    kubelet: int

    def to_json(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in PORT_NAMES}

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> ClusterPorts:
        return cls(**{n: int(str(raw[n])) for n in PORT_NAMES})

    @classmethod
    def from_list(cls, ports: list[int]) -> ClusterPorts:
        return cls(**dict(zip(PORT_NAMES, ports, strict=True)))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver}"


@dataclass(frozen=True)
class ClusterPaths:
    """Where one cluster keeps its files under ``<state>/clusters/<name>``."""

    root: Path

    @property
    def pki(self) -> ClusterPKI:
        return ClusterPKI.at(self.root / "pki")

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, component: Component) -> Path:
        return self.logs / f"{component.value}.log"

    def kubeconfig(self, client: str) -> Path:
        return self.root / f"{client}.kubeconfig"

    @property
    def exec_dispatch(self) -> Path:
        """The folder kwok's PATH points at: ``kubectl exec`` commands enter the pod (isthmus.lab.pods.dispatch)."""
        return self.root / "exec-dispatch"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def scheduler_config(self) -> Path:
        return self.root / "scheduler.yaml"


_CLIENT_OF = {Component.CONTROLLER_MANAGER: "controller-manager", Component.SCHEDULER: "scheduler",
              Component.KWOK: "kwok"}


def argv(component: Component, *, spec: LabClusterSpec, ports: ClusterPorts, paths: ClusterPaths,
         bins: LabBinaries) -> list[str]:
    """The command line of ``component`` for this cluster."""
    pki = paths.pki
    if component is Component.DNS:
        # <state>/clusters/<name> -> <state>
        return [sys.executable, "-m", "isthmus.lab.dnsserver", f"--state-dir={paths.root.parent.parent}",
                f"--cluster={spec.name}"]
    exe = str(bins.path(component.value))
    if component is Component.ETCD:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            exe, f"--name={spec.name}", f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={spec.name}={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync", "--quota-backend-bytes=1073741824", "--snapshot-count=5000",
            "--log-level=warn",
        ]
    if component is Component.APISERVER:
        return [
            exe, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            f"--service-cluster-ip-range={spec.service_cidr}",
            f"--tls-cert-file={pki.apiserver.cert}", f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--authorization-mode=Node,RBAC",
            # The kubelet API (kwok's server) for exec, logs and port-forward, verified against the cluster CA.
            f"--kubelet-client-certificate={pki.clients['apiserver-kubelet'].cert}",
            f"--kubelet-client-key={pki.clients['apiserver-kubelet'].key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer=https://{spec.name}.lab.isthmus.invalid",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            "--api-audiences=https://kubernetes.default.svc",
            "--endpoint-reconciler-type=none",  # 127.0.0.1 may not be an Endpoints address
            "--allow-privileged=true",
            "--profiling=false",
            "--shutdown-delay-duration=0s",
            "--v=1",
        ]
    if component is Component.RUNTIME:
        return [sys.executable, "-m", "isthmus.lab.pods", f"--state-dir={paths.root.parent.parent}",
                f"--cluster={spec.name}"]
    kubeconfig = paths.kubeconfig(_CLIENT_OF[component])
    if component is Component.CONTROLLER_MANAGER:
        return [
            exe, f"--kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}", "--leader-elect=false",
            "--controllers=*,-node-ipam-controller,-cloud-node-lifecycle-controller,-node-route-controller,"
            "-service-lb-controller", "--allocate-node-cidrs=false",
            f"--cluster-name=lab-{spec.name}",
            f"--service-cluster-ip-range={spec.service_cidr}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}", f"--cluster-signing-key-file={pki.ca.key}",
            "--profiling=false", "--v=1",
        ]
    if component is Component.SCHEDULER:
        return [
            exe, f"--config={paths.scheduler_config}", "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}", "--v=1",
        ]
    return [
        exe, f"--kubeconfig={kubeconfig}", f"--config={paths.kwok_config}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
        "--node-lease-duration-seconds=40",
    ]


def kubeconfig_yaml(entries: list[tuple[str, str, Path, Credential]], *, current: str) -> str:
    """A kubeconfig (JSON is valid YAML) with one context per ``(context, server, ca, cred)``."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "preferences": {},
        "clusters": [
            {"name": ctx, "cluster": {"server": server, "certificate-authority": str(ca)}}
            for ctx, server, ca, _ in entries
        ],
        "users": [
            {"name": f"{ctx}-user", "user": {"client-certificate": str(c.cert), "client-key": str(c.key)}}
            for ctx, _, _, c in entries
        ],
        "contexts": [
            {"name": ctx, "context": {"cluster": ctx, "user": f"{ctx}-user"}} for ctx, _, _, _ in entries
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


_VOLUME_PLUGINS = ("VolumeBinding", "VolumeZone", "NodeVolumeLimits", "VolumeRestrictions")


def scheduler_config_yaml(kubeconfig: Path) -> str:
    """The scheduler's configuration: the default profile without the volume plugins.

    The lab has no storage: kwok runs no kubelet and there is no provisioner, so a pod with a
    PersistentVolumeClaim (every StatefulSet with volumeClaimTemplates) would wait forever for a
    volume. Its claims still exist, Pending, and can be listed and deleted like real ones.
    """
    doc = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
        "enableProfiling": False,
        "profiles": [{
            "schedulerName": "default-scheduler",
            "plugins": {"multiPoint": {"disabled": [{"name": p} for p in _VOLUME_PLUGINS]}},
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


#: kwok's own objects that the lab's pod runtime writes per pod (and kwok watches): exec, logs, port-forward.
KWOK_CRDS = ("Exec", "Logs", "PortForward")


def kwok_config_yaml(spec: LabClusterSpec, *, ports: ClusterPorts, pki: ClusterPKI, real_pods: bool = True) -> str:
    """kwok's ``--config``: the pod IP pool is the first half of the cluster's pod CIDR (real pods of the lab's
    runtime get the second half, see :func:`~.netlayout.pod_range`); the Stages are ours; its server is the
    kubelet API of every node (``127.0.0.1:<kubelet port>``, TLS from the cluster CA)."""
    template = resources.files("isthmus.lab").joinpath("templates/kwok-stages.yaml").read_text()
    stages = _stages_without_real_pods(template) if real_pods else template
    head = (
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\n"
        "kind: KwokConfiguration\n"
        "options:\n"
        f"  cidr: {kwok_range(spec.pod_network)}\n"
        "  nodeLeaseDurationSeconds: 40\n"
        # With an explicit --config kwok applies no defaults: spell out every parallelism.
        "  nodeLeaseParallelism: 4\n"
        "  nodePlayStageParallelism: 4\n"
        "  podPlayStageParallelism: 4\n"
        "  podsOnNodeSyncParallelism: 2\n"
        "  enablePodsOnNodeSyncListPager: true\n"
        "  enablePodsOnNodeSyncStreamWatch: false\n"
        "  enableDebuggingHandlers: true\n"
        "  enableProfilingHandler: false\n"
        "  enableContentionProfiling: false\n"
        f"  serverAddress: 127.0.0.1:{ports.kubelet}\n"
        "  nodeIP: 127.0.0.1\n"
        f"  nodePort: {ports.kubelet}\n"
        f"  tlsCertFile: {pki.kubelet.cert}\n"
        f"  tlsPrivateKeyFile: {pki.kubelet.key}\n"
        f"  enableCRDs: [{', '.join(KWOK_CRDS)}]\n"
    )
    return head + "---\n" + stages


def _stages_without_real_pods(stages_yaml: str) -> str:
    """The lab's Stages, each Pod stage told to leave alone the pods that the lab's runtime runs for real.

    Those pods' status (IP, readiness, restarts) and their deletion are the runtime's, as a kubelet's are;
    kwok keeps simulating every other pod. The rule is one regular expression (:data:`REAL_IMAGE_PATTERN`).
    """
    docs = [d for d in yaml.safe_load_all(stages_yaml) if d]
    exclusion = {"key": f'.spec.containers.[] | select(.image | test("{REAL_IMAGE_PATTERN}")) | .name',
                 "operator": "DoesNotExist"}
    for doc in docs:
        if doc["spec"]["resourceRef"]["kind"] == "Pod":
            doc["spec"]["selector"]["matchExpressions"].append(exclusion)
    return yaml.safe_dump_all(docs, sort_keys=False)


def write_cluster_files(spec: LabClusterSpec, ports: ClusterPorts, paths: ClusterPaths, *,
                        real_pods: bool = True) -> None:
    """(Re)write the component kubeconfigs and the kwok config; PKI must already exist."""
    pki = paths.pki
    for client in ("controller-manager", "scheduler", "kwok", "admin"):
        paths.kubeconfig(client).write_text(
            kubeconfig_yaml([(spec.context, ports.server, pki.ca.cert, pki.clients[client])],
                            current=spec.context)
        )
    paths.kwok_config.write_text(kwok_config_yaml(spec, ports=ports, pki=pki, real_pods=real_pods))
    scheduler_kubeconfig = paths.kubeconfig(_CLIENT_OF[Component.SCHEDULER])
    paths.scheduler_config.write_text(scheduler_config_yaml(scheduler_kubeconfig))
