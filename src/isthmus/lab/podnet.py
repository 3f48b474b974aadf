"""The lab's pod network, for real: network namespaces, veths, a bridge and VXLAN per cluster.

Owns: creating and deleting the namespaces and interfaces that :mod:`.netlayout` names (the
underlay, one namespace per cluster standing for its nodes, one per real pod), joining the
clusters as the Fleet's ``network.routing`` says (``native``: routes through the underlay;
``tunnel``: kernel VXLAN between the cluster namespaces, on UDP 8472), per-pod namespaces with
``/etc/netns/<netns>/resolv.conf`` for ``ip netns exec``, and cleaning up whatever a killed lab
left (by prefix). Must not: touch the host namespace: every interface is created *inside* a lab
namespace (``ip -n NS link add ... peer ... netns OTHER``), so the host never gets a route or an
interface into these networks.

Why iproute2 through ``subprocess`` rather than pyroute2: ``ip`` is on every Linux machine
(Debian's ``iproute2``), adds no dependency, and ``ip netns`` is the convention the runtime and
``ip netns exec`` rely on (``/run/netns/<name>`` pins, ``/etc/netns/<name>/`` bind mounts);
commands for one namespace go in one ``ip -batch`` call, so setting up a pod is four ``ip`` runs.

Errors: :class:`NetworkError` (a :class:`~.errors.LabError`), one line naming the namespace, the
command and the kernel's answer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from ..spec.fleet import RoutingMode
from .errors import LabError, LabNotRunningError
from .netlayout import VXLAN_PORT, VXLAN_VNI, ClusterLayout, NetworkLayout, check_pod_key, lab_prefix, layout
from .netlayout import resolv_conf as _resolv_conf
from .netns import NETNS_RUN_DIR, netns_path
from .specs import LabClusterSpec, complete_network
from .state import StateDir

__all__ = ["ETC_NETNS", "LabNetwork", "NetworkError", "PodNetwork", "lab_netns", "list_netns", "remove_lab_network"]

#: ``ip netns exec NS`` bind-mounts ``/etc/netns/NS/<file>`` over ``/etc/<file>``.
ETC_NETNS = Path("/etc/netns")


class NetworkError(LabError):
    """Setting up or tearing down a piece of the lab's pod network failed."""


@dataclass(frozen=True)
class PodNetwork:
    """One real pod's network: its namespace, address, MTU and gateway."""

    cluster: str
    key: str
    netns: str
    ip: IPv4Address
    mtu: int
    gateway: IPv4Address

    @property
    def netns_path(self) -> Path:
        return netns_path(self.netns)


def _run(cmd: Sequence[str], *, what: str, stdin: str | None = None, check: bool = True) -> str:
    try:
        proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as exc:
        raise NetworkError(f"{what}: `{cmd[0]}` is not installed: install iproute2 (scripts/install-prereqs.sh)"
                           ) from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkError(f"{what}: `{' '.join(cmd)}` hung for 30 s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().replace("\n", "; ")
        raise NetworkError(f"{what}: `{' '.join(cmd)}` failed: {detail} (the lab must run as root)")
    return proc.stdout


def _ip_batch(netns: str, lines: Sequence[str], *, what: str) -> None:
    if lines:
        _run(["ip", "-n", netns, "-batch", "-"], what=what, stdin="\n".join(lines) + "\n")


def _bridge_batch(netns: str, lines: Sequence[str], *, what: str) -> None:
    if lines:
        _run(["bridge", "-n", netns, "-batch", "-"], what=what, stdin="\n".join(lines) + "\n")


def _sysctl(netns: str, setting: str) -> None:
    _run(["ip", "netns", "exec", netns, "sysctl", "-qw", setting], what=f"setting {setting} in netns {netns}")


def list_netns() -> list[str]:
    """The names of all named network namespaces (``/run/netns``)."""
    try:
        return sorted(p.name for p in NETNS_RUN_DIR.iterdir())
    except FileNotFoundError:
        return []


def _netns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = netns_path(name).stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _pids_in(name: str) -> list[int]:
    """Processes any of whose threads sit in namespace ``name`` (``ip netns pids`` looks at leaders only)."""
    target = _netns_inode(name)
    if target is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            tasks = list((entry / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                st = (task / "ns" / "net").stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == target:
                found.append(int(entry.name))
                break
    return found


def _kill_inside(name: str) -> None:
    """SIGKILL every process still inside namespace ``name`` and wait (briefly) for them to go."""
    deadline = time.monotonic() + 5.0
    while (pids := _pids_in(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_netns(name: str) -> None:
    _kill_inside(name)
    if _netns_inode(name) is not None:
        _run(["ip", "netns", "delete", name], what=f"deleting netns {name}")
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def _prefix_of(state_dir: Path) -> str:
    return lab_prefix(str(Path(state_dir).resolve()))


def lab_netns(state_dir: Path) -> list[str]:
    """The network namespaces that exist now for the lab of ``state_dir``."""
    prefix = _prefix_of(state_dir) + "-"
    return [n for n in list_netns() if n.startswith(prefix)]


def remove_lab_network(state_dir: Path) -> None:
    """Delete every namespace (and ``/etc/netns`` folder) of the lab of ``state_dir``; needs no state.

    Pods first, then clusters, then the underlay; processes still inside are killed first
    (they would keep a namespace alive). This is how a SIGKILLed lab's network is cleaned.
    """
    prefix = _prefix_of(state_dir) + "-"
    names = lab_netns(state_dir)
    for name in sorted(names, key=lambda n: (0 if "-pod-" in n else 1 if "-node-" in n else 2, n)):
        _delete_netns(name)
    with contextlib.suppress(FileNotFoundError):
        for stale in ETC_NETNS.iterdir():
            if stale.name.startswith(prefix):
                shutil.rmtree(stale, ignore_errors=True)


class LabNetwork:
    """The pod network of one lab. ``LabNetwork.load(state_dir)`` in any process of that lab."""

    def __init__(self, state_dir: Path, net: NetworkLayout) -> None:
        self.state_dir = Path(state_dir)
        self.layout = net

    @classmethod
    def for_specs(cls, state_dir: Path, specs: Sequence[LabClusterSpec]) -> LabNetwork:
        return cls(state_dir, layout(_prefix_of(state_dir), complete_network(specs)))

    @classmethod
    def load(cls, state_dir: Path) -> LabNetwork:
        """The network of the lab whose state folder is ``state_dir`` (read from its ``state.json``)."""
        state = StateDir(Path(state_dir)).load()
        if state is None:
            raise LabNotRunningError(f"no lab state in {state_dir}: start the lab (`isthmus lab up --state-dir"
                                     f" {state_dir}`) before using its pod network")
        return cls.for_specs(state_dir, [c.spec for c in state.clusters])

    # ------------------------------------------------------------------ facts

    def cluster(self, cluster: str) -> ClusterLayout:
        try:
            return self.layout.cluster(cluster)
        except KeyError as exc:
            raise NetworkError(str(exc.args[0])) from None

    def cluster_netns(self, cluster: str) -> str:
        return self.cluster(cluster).netns

    def dns_ip(self, cluster: str) -> IPv4Address:
        return self.cluster(cluster).dns_ip

    def pod_range(self, cluster: str) -> IPv4Network:
        """The second half of the cluster's pod CIDR: where the runtime allocates real pods' IPs."""
        return self.cluster(cluster).pod_range

    def resolv_conf(self, cluster: str, namespace: str) -> str:
        return _resolv_conf(self.cluster(cluster).dns_ip, namespace)

    def leftovers(self) -> list[str]:
        """This lab's namespaces that exist now (empty after :meth:`down`)."""
        return lab_netns(self.state_dir)

    def describe(self) -> dict[str, Any]:
        net = self.layout
        return {
            "prefix": net.prefix,
            "routing": net.routing.value,
            "tunnel": None if net.tunnel is None else net.tunnel.value,
            "tunnelPort": VXLAN_PORT if net.tunnel is not None else None,
            "encryption": net.encryption.value,
            "mesh": net.mesh.value,
            "routeMTU": net.route_mtu,
            "fallbacks": list(net.fallbacks),
            "underlayNetns": net.underlay_netns,
            "clusters": {
                c.name: {"netns": c.netns, "nodeCIDR": str(c.node_net), "nodeIP": str(c.node_ip),
                         "underlayMTU": c.underlay_mtu, "podRange": str(c.pod_range), "gateway": str(c.gateway),
                         "dnsIP": str(c.dns_ip)}
                for c in net.clusters
            },
        }

    # ------------------------------------------------------------------ lifecycle

    def up(self) -> None:
        """Create the underlay, the cluster namespaces and their links (after removing leftovers)."""
        self.down()
        net = self.layout
        try:
            self._up(net)
        except BaseException:
            self.down()
            raise

    def _up(self, net: NetworkLayout) -> None:
        under = net.underlay_netns
        _run(["ip", "netns", "add", under], what="creating the underlay netns")
        for c in net.clusters:
            _run(["ip", "netns", "add", c.netns], what=f"creating the netns of cluster {c.name}")
        lines = ["link set lo up"]
        for c in net.clusters:
            plen = c.node_net.prefixlen
            lines += [
                f"link add {c.underlay_if} mtu {c.underlay_mtu} type veth peer name {c.node_if}"
                f" mtu {c.underlay_mtu} netns {c.netns}",
                f"addr add {c.underlay_ip}/{plen} dev {c.underlay_if}",
                f"link set {c.underlay_if} up",
            ]
            if net.routing is RoutingMode.NATIVE:
                lines.append(f"route add {c.pod_net} via {c.node_ip} dev {c.underlay_if}")
        _ip_batch(under, lines, what="wiring the underlay")
        _sysctl(under, "net.ipv4.ip_forward=1")
        for c in net.clusters:
            self._cluster_up(net, c)

    def _cluster_up(self, net: NetworkLayout, c: ClusterLayout) -> None:
        others = [o for o in net.clusters if o.name != c.name]
        lines = [
            "link set lo up",
            f"addr add {c.dns_ip}/32 dev lo",
            f"addr add {c.node_ip}/{c.node_net.prefixlen} dev {c.node_if}",
            f"link set {c.node_if} up",
            f"link add {c.bridge} mtu {net.route_mtu} type bridge",
            f"addr add {c.gateway}/{c.pod_range.prefixlen} dev {c.bridge}",
            f"link set {c.bridge} up",
        ]
        fdb = []
        if net.routing is RoutingMode.NATIVE:
            lines += [f"route add {o.pod_net} via {c.underlay_ip} dev {c.node_if}" for o in others]
        else:
            lines += [f"route add {o.node_net} via {c.underlay_ip} dev {c.node_if}" for o in others]
            # No mtu here: the kernel derives the VXLAN device's MTU from its underlay device
            # (underlay MTU - 50), so a plan that forgot the tunnel overhead would show.
            lines += [
                f"link add {c.vxlan} address {c.vxlan_mac} type vxlan id {VXLAN_VNI} dstport {VXLAN_PORT}"
                f" local {c.node_ip} dev {c.node_if} nolearning",
                f"link set {c.vxlan} up",
            ]
            for o in others:  # flannel's static L3 VXLAN: remote gateway -> its VTEP's MAC -> its node IP
                lines += [
                    f"neigh replace {o.gateway} lladdr {o.vxlan_mac} dev {c.vxlan} nud permanent",
                    f"route add {o.pod_net} via {o.gateway} dev {c.vxlan} onlink",
                ]
                fdb.append(f"fdb append {o.vxlan_mac} dev {c.vxlan} dst {o.node_ip} self permanent")
        _ip_batch(c.netns, lines, what=f"wiring the netns of cluster {c.name}")
        _bridge_batch(c.netns, fdb, what=f"VXLAN forwarding entries of cluster {c.name}")
        _sysctl(c.netns, "net.ipv4.ip_forward=1")

    def down(self) -> None:
        """Delete every namespace of this lab; see :func:`remove_lab_network`."""
        remove_lab_network(self.state_dir)

    # ------------------------------------------------------------------ pods

    def add_pod(self, cluster: str, key: str, ip: IPv4Address, *, namespace: str = "default") -> PodNetwork:
        """Give pod ``key`` of ``cluster`` a namespace with ``eth0`` at ``ip``. Idempotent.

        ``ip`` must lie in :meth:`pod_range` (not its network, gateway or broadcast address).
        ``namespace`` is the pod's Kubernetes namespace, for the resolver's search path.
        """
        c = self.cluster(cluster)
        check_pod_key(key)
        ip = IPv4Address(ip)
        where = f"pod {key} of cluster {cluster}"
        if ip not in c.pod_range or ip in (c.pod_range.network_address, c.gateway, c.pod_range.broadcast_address):
            raise NetworkError(f"{where}: IP {ip} is not a usable address of the real pods' range {c.pod_range}"
                               f" (gateway {c.gateway}); allocate it from LabNetwork.pod_range()")
        pod = PodNetwork(cluster=cluster, key=key, netns=self.layout.pod_netns(cluster, key), ip=ip,
                         mtu=self.layout.route_mtu, gateway=c.gateway)
        if self._pod_is(pod):
            self._write_resolv(pod, namespace)
            return pod
        self.remove_pod(cluster, key)
        host_if = self.layout.pod_host_if(cluster, key)
        try:
            _run(["ip", "netns", "add", pod.netns], what=f"creating the netns of {where}")
            _ip_batch(c.netns, [
                f"link add {host_if} mtu {pod.mtu} type veth peer name eth0 mtu {pod.mtu} netns {pod.netns}",
                f"link set {host_if} master {c.bridge}",
                f"link set {host_if} up",
            ], what=f"plugging {where} into its cluster")
            _ip_batch(pod.netns, [
                "link set lo up",
                f"addr add {ip}/{c.pod_range.prefixlen} dev eth0",
                "link set eth0 up",
                f"route add default via {c.gateway} dev eth0",
            ], what=f"addressing {where}")
            self._write_resolv(pod, namespace)
        except BaseException:
            self.remove_pod(cluster, key)
            raise
        return pod

    def remove_pod(self, cluster: str, key: str) -> None:
        """Delete the pod's namespace and veth (killing what still runs inside). Idempotent."""
        c = self.cluster(cluster)
        name = self.layout.pod_netns(cluster, key)
        host_if = self.layout.pod_host_if(cluster, key)
        if _netns_inode(c.netns) is not None:
            _run(["ip", "-n", c.netns, "link", "del", host_if], what=f"removing pod {key}", check=False)
        _delete_netns(name)

    def _pod_is(self, pod: PodNetwork) -> bool:
        """True if the pod's namespace exists with ``eth0`` up at the pod's address."""
        if _netns_inode(pod.netns) is None:
            return False
        addrs = _run(["ip", "-n", pod.netns, "-o", "-4", "addr", "show", "dev", "eth0"],
                     what=f"inspecting pod {pod.key}", check=False)
        link = _run(["ip", "-n", pod.netns, "-o", "link", "show", "dev", "eth0"],
                    what=f"inspecting pod {pod.key}", check=False)
        return f" {pod.ip}/" in addrs and ",UP" in link and f"mtu {pod.mtu} " in link

    def _write_resolv(self, pod: PodNetwork, namespace: str) -> None:
        folder = ETC_NETNS / pod.netns
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "resolv.conf.tmp"
        tmp.write_text(self.resolv_conf(pod.cluster, namespace))
        tmp.replace(folder / "resolv.conf")
