"""The :class:`Lab`: several real Kubernetes control planes on this machine, as one object.

Owns: bringing a lab up (PKI, ports, the pod network of :mod:`.podnet`, the processes per
cluster in order with readiness waits, fake zoned nodes, the cluster DNS), tearing it down,
noticing and cleaning a stale lab (its network too), the shared kubeconfig, status, and the
faults (freeze/thaw an API server, stop/start a cluster, a node NotReady and back).
Must not: know about Cassandra or the operator.

Each cluster starts in its own thread (the work is mostly waiting on child processes); a
failure anywhere stops everything that was started and raises a :class:`ComponentError`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import yaml

from .apiclient import LabApi
from .binaries import BuildError, LabBinaries, ensure_binaries, ensure_toxiproxy, kwok_crds
from .components import (
    KWOK_NODE_LABEL,
    NOT_READY_KEY,
    PORT_NAMES,
    ClusterPorts,
    Component,
    argv,
    kubeconfig_yaml,
    write_cluster_files,
)
from .dnsclient import resolve_a
from .dnsrecords import CLUSTER_DOMAIN
from .errors import (
    ComponentError,
    LabAlreadyRunningError,
    LabError,
    LabNotRunningError,
    ToolchainError,
    UnknownTargetError,
)
from .latency import Link, ProxyState, Toxiproxy, require_proxy, rtt_profile, start_proxy, stop_proxy
from .mcs import ensure_mcs_crds
from .pki import make_cluster_pki
from .podnet import LabNetwork, remove_lab_network
from .pods.dispatch import write_dispatch_dir
from .pods.volumes import storage_class
from .processes import ProcessRef, free_ports, is_frozen, log_tail, spawn, stop_all
from .specs import LabClusterSpec, LabNode, check_lab_specs, complete_network, default_specs
from .state import ClusterState, LabPhase, LabState, PodMode, StateDir, default_state_dir

__all__ = ["ClusterStatus", "ComponentState", "ComponentStatus", "Lab", "LabSettings", "LabStatus"]


@dataclass(frozen=True)
class LabSettings:
    """How the lab runs; every field is one CLI option at most."""

    #: seconds for one cluster to go from nothing to all nodes Ready
    ready_timeout: float = 120.0
    #: first port of a fixed port block (cluster i uses base + 10*i ...); None picks free ports
    base_port: int | None = None
    #: seconds between SIGTERM and SIGKILL on teardown
    stop_grace: float = 5.0
    #: seconds a fault waits for its effect (node NotReady, pods not ready) to show
    fault_timeout: float = 60.0
    #: run Cassandra pods for real (the pod runtime), or let kwok simulate every pod
    pods: PodMode = PodMode.REAL
    #: put Toxiproxy between the kubeconfig's contexts and the API servers (for `lab fault latency`)
    proxy: bool = False
    #: a profile of real inter-region round trips applied at `up` (implies ``proxy``); see latency.RTT_PROFILES
    rtt_profile: str | None = None
    #: clusters of only etcd and kube-apiserver (no controllers, scheduler or kwok: an API that holds objects)
    minimal: bool = False


#: what a ``minimal`` lab runs per cluster
MINIMAL_COMPONENTS = (Component.ETCD, Component.APISERVER)


class ComponentState(StrEnum):
    RUNNING = "running"
    FROZEN = "frozen"
    STOPPED = "stopped"
    DEAD = "dead"


@dataclass(frozen=True)
class ComponentStatus:
    component: Component
    state: ComponentState
    pid: int | None
    log: Path


@dataclass(frozen=True)
class ClusterStatus:
    spec: LabClusterSpec
    context: str
    server: str
    components: tuple[ComponentStatus, ...]
    #: what the latency proxy holds for this cluster (``direct``, ``rtt 80ms``...); None without a proxy
    link: str | None = None

    @property
    def healthy(self) -> bool:
        return all(c.state is ComponentState.RUNNING for c in self.components)


@dataclass(frozen=True)
class LabStatus:
    name: str
    state_dir: Path
    kubeconfig: Path
    phase: str
    clusters: tuple[ClusterStatus, ...]
    #: :meth:`LabNetwork.describe`: routing, tunnel, encryption, fallbacks, MTUs, namespaces
    network: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig),
            "phase": self.phase,
            "network": self.network,
            "clusters": [
                {
                    "name": c.spec.name,
                    "context": c.context,
                    "server": c.server,
                    "region": c.spec.region,
                    "zones": dict(c.spec.zones),
                    "pod_cidr": c.spec.pod_cidr,
                    "service_cidr": c.spec.service_cidr,
                    "healthy": c.healthy,
                    "link": c.link,
                    "components": {
                        s.component.value: {"state": s.state.value, "pid": s.pid, "log": str(s.log)}
                        for s in c.components
                    },
                }
                for c in self.clusters
            ],
        }


class _Aborted(Exception):
    """Another cluster failed; this one stops waiting."""


class Lab:
    """Several Kubernetes control planes (etcd, apiserver, controller-manager, scheduler, kwok).

    ``Lab(name=..., specs=..., state_dir=...)`` is cheap and does nothing; ``up()`` starts the
    lab, ``down()`` removes it. A ``Lab`` made with only a name (or state dir) acts on the lab
    recorded there, so separate CLI invocations can share one lab.
    """

    def __init__(
        self,
        *,
        name: str = "default",
        specs: Sequence[LabClusterSpec] | None = None,
        state_dir: Path | None = None,
        settings: LabSettings | None = None,
        binaries: LabBinaries | None = None,
    ) -> None:
        if specs is not None:
            specs = complete_network(specs)
            check_lab_specs(specs)
        self.name = name
        self._specs = tuple(specs) if specs is not None else None
        self._dir = StateDir(Path(state_dir) if state_dir is not None else default_state_dir(name))
        self.settings = settings or LabSettings()
        self._bins = binaries
        self._kwok_crds: list[Path] | None = None
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._mutex = threading.Lock()
        self._state: LabState | None = None

    # ------------------------------------------------------------------ public facts

    @property
    def state_dir(self) -> Path:
        return self._dir.root

    @property
    def kubeconfig(self) -> Path:
        return self._dir.kubeconfig

    @property
    def specs(self) -> tuple[LabClusterSpec, ...]:
        state = self._dir.load()
        if state is not None:
            return tuple(c.spec for c in state.clusters)
        return self._specs if self._specs is not None else default_specs(3)

    def spec(self, cluster: str) -> LabClusterSpec:
        for s in self.specs:
            if s.name == cluster:
                return s
        known = ", ".join(s.name for s in self.specs)
        raise UnknownTargetError(f"lab {self.name!r} has no cluster {cluster!r} (clusters: {known})")

    def context(self, cluster: str) -> str:
        return self.spec(cluster).context

    def env(self) -> str:
        """A shell line that points kubectl at this lab."""
        return f"export KUBECONFIG={self.kubeconfig}"

    def log_path(self, cluster: str, component: Component | str) -> Path:
        comp = _component(component)
        return self._dir.cluster(self.spec(cluster).name).log(comp)

    def pids(self) -> dict[str, dict[str, int]]:
        """``{cluster: {component: pid}}`` of the recorded processes (alive or not)."""
        state = self._dir.load()
        if state is None:
            return {}
        return {c.spec.name: {k.value: r.pid for k, r in c.processes.items()} for c in state.clusters}

    def kubectl(self, cluster: str, *args: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run ``kubectl --context lab-<cluster> ARGS`` and return its stdout."""
        bins = self._binaries()
        cmd = [str(bins.path("kubectl")), f"--kubeconfig={self.kubeconfig}",
               f"--context={self.context(cluster)}", *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"`kubectl {' '.join(args)}` on lab cluster {cluster!r} timed out after"
                           f" {timeout:.0f}s: is its API server frozen or stopped? (`isthmus lab status`)"
                           ) from exc
        if check and proc.returncode != 0:
            raise LabError(f"`kubectl {' '.join(args)}` on lab cluster {cluster!r} failed:"
                           f" {proc.stderr.strip()}")
        return proc.stdout

    def api(self, cluster: str, *, timeout: float = 5.0) -> LabApi:
        """An admin REST client for one cluster (close it, or use it as a context manager)."""
        state = self._require_state()
        cs = self._cluster_state(state, cluster)
        paths = self._dir.cluster(cluster)
        return LabApi(cs.ports.server, paths.pki.ca.cert, paths.pki.clients["admin"], timeout=timeout)

    # ------------------------------------------------------------------ up / down

    def up(self) -> Lab:
        """Start every cluster and wait until all its nodes are Ready; returns ``self``."""
        bins = self._binaries()
        specs = self._specs if self._specs is not None else default_specs(3)
        with self._dir.locked():
            old = self._dir.load()
            if old is not None:
                if old.phase is LabPhase.RUNNING and old.all_processes() and all(
                        r.alive() for r in old.all_processes()):
                    raise LabAlreadyRunningError(
                        f"lab {self.name!r} is already running ({self._dir.root}): use it, or run"
                        f" `isthmus lab down --state-dir {self._dir.root}` first"
                    )
                self._clean(old)
            else:
                self._clean(None)
            port_list = self._allocate_ports(len(specs))
            state = LabState(
                name=self.name, phase=LabPhase.STARTING, owner_pid=os.getpid(),
                clusters=tuple(ClusterState(spec=s, ports=ClusterPorts.from_list(p))
                               for s, p in zip(specs, port_list, strict=True)),
                pods=self.settings.pods,
                minimal=self.settings.minimal,
            )
            self._state = state
            self._dir.save(state)
            for cs in state.clusters:
                paths = self._dir.cluster(cs.spec.name)
                make_cluster_pki(paths.pki.dir, cluster=cs.spec.name,
                                 service_ip=cs.spec.kubernetes_service_ip)
                write_cluster_files(cs.spec, cs.ports, paths, real_pods=state.pods is PodMode.REAL)
            profile = rtt_profile(self.settings.rtt_profile) if self.settings.rtt_profile else None
            if self.settings.proxy or profile is not None:
                self._start_proxy(state)
            self._write_kubeconfig(state)
            if not state.minimal:  # an API that only holds objects needs no pod network
                LabNetwork.for_specs(self._dir.root, specs).up()
            try:
                self._start_clusters([c.spec.name for c in state.clusters], bins, fresh=True)
            except BaseException:
                stop_proxy(self._dir.root)
                raise
            if profile is not None:
                for i, cs in enumerate(state.clusters):
                    self.set_link(cs.spec.name, Link(rtt_ms=profile.rtt_ms(i)))
            with self._mutex:
                self._state = replace(self._require_mem(), phase=LabPhase.RUNNING)
                self._dir.save(self._state)
        return self

    def down(self) -> None:
        """Stop every process of the lab and remove its state folder. Idempotent."""
        with self._dir.locked():
            state = self._dir.load()
            self._clean(state)
        shutil.rmtree(self._dir.root, ignore_errors=True)
        self._state = None

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def status(self) -> LabStatus:
        state = self._require_state()
        links = self._links()
        proxy = ProxyState.load(self._dir.root)
        clusters = []
        for cs in state.clusters:
            paths = self._dir.cluster(cs.spec.name)
            comps = []
            for comp in _components(state):
                ref = cs.processes.get(comp)
                if ref is None:
                    st = ComponentState.STOPPED
                elif is_frozen(ref):
                    st = ComponentState.FROZEN
                elif ref.alive():
                    st = ComponentState.RUNNING
                else:
                    st = ComponentState.DEAD
                comps.append(ComponentStatus(comp, st, ref.pid if ref else None, paths.log(comp)))
            server = proxy.server(cs.spec.name) if proxy is not None else cs.ports.server
            clusters.append(ClusterStatus(cs.spec, cs.spec.context, server, tuple(comps),
                                          link=links.get(cs.spec.name)))
        network = LabNetwork.for_specs(self._dir.root, [c.spec for c in state.clusters])
        return LabStatus(self.name, self._dir.root, self.kubeconfig, state.phase.value, tuple(clusters),
                         network={**network.describe(), "up": bool(network.leftovers())})

    # ------------------------------------------------------------------ faults

    def freeze(self, cluster: str) -> None:
        """SIGSTOP the cluster's API server: its clients' calls hang until :meth:`thaw`."""
        self._signal_apiserver(cluster, signal.SIGSTOP)

    def thaw(self, cluster: str) -> None:
        """SIGCONT the cluster's API server."""
        self._signal_apiserver(cluster, signal.SIGCONT)

    def link(self, cluster: str) -> Link:
        """What the latency proxy holds between clients and the cluster's API server."""
        self.spec(cluster)
        with Toxiproxy(require_proxy(self._dir.root, self.name).api_port) as api:
            return api.link(cluster)

    def set_link(self, cluster: str, link: Link) -> None:
        """Make the link to the cluster's API server ``link`` (a round trip, bandwidth, a partition)."""
        self.spec(cluster)
        with Toxiproxy(require_proxy(self._dir.root, self.name).api_port) as api:
            api.set_link(cluster, link)

    def stop_cluster(self, cluster: str) -> None:
        """Stop all of one cluster's processes (data and ports are kept for :meth:`start_cluster`)."""
        with self._dir.locked():
            state = self._require_state()
            cs = self._cluster_state(state, cluster)
            self._stop([cs])
            state = state.with_cluster(replace(cs, processes={}))
            self._state = state
            self._dir.save(state)

    def start_cluster(self, cluster: str) -> None:
        """Start a stopped cluster again on its old ports and data; waits until it is Ready."""
        bins = self._binaries()
        with self._dir.locked():
            state = self._require_state()
            cs = self._cluster_state(state, cluster)
            self._stop([cs])
            self._state = state.with_cluster(replace(cs, processes={}))
            self._dir.save(self._state)
            network = LabNetwork.for_specs(self._dir.root, [c.spec for c in state.clusters])
            if not network.leftovers():  # gone (a reboot empties /run/netns): build it again
                network.up()
            self._start_clusters([cluster], bins, fresh=False)

    def node_not_ready(self, cluster: str, node: str, *, wait: bool = True) -> None:
        """Make ``node`` NotReady (kwok stops heartbeating it) and its pods not Ready."""
        self._node(cluster, node)
        with self.api(cluster) as api:
            api.merge_patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {NOT_READY_KEY: "true"}}})
            pods = self._pods_on(api, node)
            for ns, name in pods:
                api.merge_patch(f"/api/v1/namespaces/{ns}/pods/{name}",
                                {"metadata": {"annotations": {NOT_READY_KEY: "true"}}})
            if wait:
                self._wait_for(f"node {node} of {cluster} to be NotReady and its pods not Ready",
                               lambda: not _node_ready(api, node) and not any(
                                   _pod_ready(api, ns, n) for ns, n in self._pods_on(api, node)))

    def node_recover(self, cluster: str, node: str, *, wait: bool = True) -> None:
        """Undo :meth:`node_not_ready`: the node and its pods become Ready again."""
        self._node(cluster, node)
        with self.api(cluster) as api:
            api.merge_patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {NOT_READY_KEY: None}}})
            for ns, name in self._pods_on(api, node):
                api.merge_patch(f"/api/v1/namespaces/{ns}/pods/{name}",
                                {"metadata": {"annotations": {NOT_READY_KEY: None}}})
            if wait:
                self._wait_for(f"node {node} of {cluster} and its pods to be Ready",
                               lambda: _node_ready(api, node) and all(
                                   _pod_ready(api, ns, n) for ns, n in self._pods_on(api, node)))

    # ------------------------------------------------------------------ internals

    def _binaries(self) -> LabBinaries:
        if self._bins is None:
            try:
                self._bins = ensure_binaries()
            except BuildError as exc:
                raise ToolchainError(str(exc)) from exc
        if self._kwok_crds is None:
            try:
                self._kwok_crds = kwok_crds()
            except BuildError as exc:
                raise ToolchainError(str(exc)) from exc
        return self._bins

    def _require_state(self) -> LabState:
        state = self._dir.load()
        if state is None:
            raise LabNotRunningError(
                f"no lab {self.name!r} in {self._dir.root}: start it with `isthmus lab up --name {self.name}`"
            )
        return state

    def _require_mem(self) -> LabState:
        assert self._state is not None
        return self._state

    def _cluster_state(self, state: LabState, cluster: str) -> ClusterState:
        cs = state.cluster(cluster)
        if cs is None:
            known = ", ".join(c.spec.name for c in state.clusters)
            raise UnknownTargetError(f"lab {self.name!r} has no cluster {cluster!r} (clusters: {known})")
        return cs

    def _node(self, cluster: str, node: str) -> LabNode:
        spec = self.spec(cluster)
        for n in spec.nodes:
            if n.name == node:
                return n
        raise UnknownTargetError(
            f"lab cluster {cluster!r} has no node {node!r} (nodes: {', '.join(n.name for n in spec.nodes)})")

    def _signal_apiserver(self, cluster: str, sig: signal.Signals) -> None:
        state = self._require_state()
        ref = self._cluster_state(state, cluster).processes.get(Component.APISERVER)
        if ref is None or not ref.alive():
            raise LabNotRunningError(f"the API server of lab cluster {cluster!r} is not running:"
                                     f" `isthmus lab fault start {cluster}` first")
        os.kill(ref.pid, sig)
        # Signals to a many-threaded Go process land asynchronously: wait until /proc agrees.
        deadline = time.monotonic() + 5.0
        while is_frozen(ref) != (sig is signal.SIGSTOP) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _allocate_ports(self, n: int) -> list[list[int]]:
        k = len(PORT_NAMES)
        if self.settings.base_port is not None:
            base = self.settings.base_port
            return [[base + 10 * i + j for j in range(k)] for i in range(n)]
        flat = free_ports(n * k)
        return [flat[i * k:(i + 1) * k] for i in range(n)]

    def _stop(self, clusters: Sequence[ClusterState]) -> None:
        """Stop in tiers across clusters: clients, then API servers, then etcd.

        Order matters for speed: an API server with live clients, or etcd with a live API
        server, drains connections for many seconds; stopped in this order each tier exits
        in about a second, and etcd still shuts down cleanly (its data is kept).
        """
        tiers = [
            (Component.RUNTIME, Component.DNS, Component.KWOK, Component.SCHEDULER, Component.CONTROLLER_MANAGER),
            (Component.APISERVER,),
            (Component.ETCD,),
        ]
        known = {c for tier in tiers for c in tier}
        for tier in tiers:
            refs = [cs.processes[c] for cs in clusters for c in tier if c in cs.processes]
            stop_all(refs, grace=self.settings.stop_grace, popens=self._popens.values())
        strays = [r for cs in clusters for c, r in cs.processes.items() if c not in known]
        stop_all(strays, grace=self.settings.stop_grace, popens=self._popens.values())

    def _start_proxy(self, state: LabState) -> None:
        try:
            exe = ensure_toxiproxy()
        except BuildError as exc:
            raise ToolchainError(str(exc)) from exc
        start_proxy(self._dir.root, {cs.spec.name: cs.ports.apiserver for cs in state.clusters}, exe)

    def _links(self) -> dict[str, str]:
        proxy = ProxyState.load(self._dir.root)
        if proxy is None or not proxy.process.alive():
            return {}
        try:
            with Toxiproxy(proxy.api_port, timeout=2.0) as api:
                return {name: str(api.link(name)) for name in proxy.listen}
        except httpx.HTTPError:
            return {}

    def _clean(self, state: LabState | None) -> None:
        """Stop whatever a previous (possibly killed) run left, remove its network, forget its files."""
        stop_proxy(self._dir.root)
        if state is not None:
            self._stop(state.clusters)
        remove_lab_network(self._dir.root)
        shutil.rmtree(self._dir.root / "clusters", ignore_errors=True)
        self._dir.state_file.unlink(missing_ok=True)
        self._dir.kubeconfig.unlink(missing_ok=True)

    def _write_kubeconfig(self, state: LabState) -> None:
        """One context per cluster, through the latency proxy when the lab has one (the lab's own
        components keep talking to their API server directly)."""
        proxy = ProxyState.load(self._dir.root)
        entries = []
        for cs in state.clusters:
            pki = self._dir.cluster(cs.spec.name).pki
            server = proxy.server(cs.spec.name) if proxy is not None else cs.ports.server
            entries.append((cs.spec.context, server, pki.ca.cert, pki.clients["admin"]))
        tmp = self._dir.kubeconfig.with_suffix(".tmp")
        tmp.write_text(kubeconfig_yaml(entries, current=state.clusters[0].spec.context))
        tmp.chmod(0o600)
        tmp.replace(self._dir.kubeconfig)

    def _record(self, cluster: str, component: Component, ref: ProcessRef) -> None:
        with self._mutex:
            state = self._require_mem()
            cs = self._cluster_state(state, cluster)
            self._state = state.with_cluster(cs.with_process(component, ref))
            self._dir.save(self._state)

    def _start_clusters(self, names: list[str], bins: LabBinaries, *, fresh: bool) -> None:
        abort = threading.Event()
        errors: list[BaseException] = []

        def run(name: str) -> None:
            try:
                self._start_one(name, bins, abort, fresh=fresh)
            except _Aborted:
                pass
            except BaseException as exc:
                errors.append(exc)
                abort.set()

        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="lab-start") as pool:
            list(pool.map(run, names))
        if errors:
            state = self._require_mem()
            self._stop([c for c in state.clusters if c.spec.name in names])
            with self._mutex:
                if fresh:
                    remove_lab_network(self._dir.root)
                    self._dir.state_file.unlink(missing_ok=True)
                    self._dir.kubeconfig.unlink(missing_ok=True)
                    self._state = None
                else:
                    for n in names:
                        cs = self._cluster_state(self._require_mem(), n)
                        self._state = self._require_mem().with_cluster(replace(cs, processes={}))
                    self._dir.save(self._require_mem())
            err = errors[0]
            if isinstance(err, LabError):
                raise err
            raise LabError(f"starting lab {self.name!r} failed: {err!r}") from err

    def _start_one(self, name: str, bins: LabBinaries, abort: threading.Event, *, fresh: bool) -> None:
        cs = self._cluster_state(self._require_mem(), name)
        spec, ports, paths = cs.spec, cs.ports, self._dir.cluster(name)
        deadline = time.monotonic() + self.settings.ready_timeout
        procs: dict[Component, subprocess.Popen[bytes]] = {}

        def start(comp: Component) -> None:
            env = None
            if comp is Component.KWOK:  # kubectl exec: commands by name enter the pod (isthmus.lab.pods.dispatch)
                env = {**os.environ, "PATH": str(write_dispatch_dir(paths.exec_dispatch))}
            proc, ref = spawn(argv(comp, spec=spec, ports=ports, paths=paths, bins=bins),
                              log=paths.log(comp), cwd=paths.root, env=env)
            self._popens[proc.pid] = proc
            procs[comp] = proc
            self._record(name, comp, ref)

        def wait(comp: Component | None, what: str, check: Callable[[], bool]) -> None:
            while True:
                if abort.is_set():
                    raise _Aborted
                for c, p in procs.items():
                    rc = p.poll()
                    if rc is not None:
                        raise ComponentError(cluster=name, component=c.value, reason=f"exited with code {rc}",
                                             log=str(paths.log(c)), log_tail=log_tail(paths.log(c)))
                try:
                    if check():
                        return
                except (httpx.HTTPError, OSError, KeyError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    c = comp or Component.KWOK
                    raise ComponentError(
                        cluster=name, component=c.value,
                        reason=f"not ready after {self.settings.ready_timeout:.0f}s (waiting for {what})",
                        log=str(paths.log(c)), log_tail=log_tail(paths.log(c)))
                time.sleep(0.25)

        paths.etcd_data.mkdir(parents=True, exist_ok=True)
        paths.etcd_data.chmod(0o700)
        start(Component.ETCD)
        with httpx.Client(timeout=2.0) as plain:
            health = f"http://127.0.0.1:{ports.etcd_client}/health"
            wait(Component.ETCD, "/health", lambda: plain.get(health).json().get("health") == "true")
        start(Component.APISERVER)
        with LabApi(ports.server, paths.pki.ca.cert, paths.pki.clients["admin"], timeout=3.0) as api:
            wait(Component.APISERVER, "/readyz", lambda: api.status("/readyz") == 200)
            if self._require_mem().minimal:
                # The nodes carry the zones. Nothing heartbeats them and no controller judges them,
                # so the Ready condition written once stays (gates that check nodes pass). The MCS CRDs
                # too: what Isthmus renders for a fleet (ServiceExports) must have an API to hold it.
                for node in spec.nodes if fresh else ():
                    api.create("/api/v1/nodes", _node_manifest(node))
                    api.merge_patch(f"/api/v1/nodes/{node.name}/status", _ready_status())
                wait(Component.APISERVER, "the MCS CRDs Established", lambda: ensure_mcs_crds(api))
                return
            # kwok serves the kubelet API (exec, logs, port-forward) from its own objects: their CRDs first.
            crds = [yaml.safe_load(p.read_text()) for p in self._kwok_crds or ()]
            for crd in crds:
                api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            wait(Component.APISERVER, "kwok's CRDs Established", lambda: all(_conditions_true(api.get(
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c['metadata']['name']}"), "Established")
                for c in crds))
            wait(Component.APISERVER, "the MCS CRDs Established", lambda: ensure_mcs_crds(api))
            for comp in (Component.CONTROLLER_MANAGER, Component.SCHEDULER, Component.KWOK, Component.DNS):
                start(comp)
            if fresh:
                for node in spec.nodes:
                    api.create("/api/v1/nodes", _node_manifest(node))
                api.create("/apis/storage.k8s.io/v1/storageclasses", storage_class())
            if self._require_mem().pods is PodMode.REAL:
                start(Component.RUNTIME)
            with httpx.Client(verify=False, timeout=2.0) as insecure:  # self-signed /healthz
                wait(Component.CONTROLLER_MANAGER, "/healthz", lambda: insecure.get(
                    f"https://127.0.0.1:{ports.controller_manager}/healthz").status_code == 200)
                wait(Component.SCHEDULER, "/healthz", lambda: insecure.get(
                    f"https://127.0.0.1:{ports.scheduler}/healthz").status_code == 200)
            wait(Component.CONTROLLER_MANAGER, "the default ServiceAccount",
                 lambda: bool(api.get("/api/v1/namespaces/default/serviceaccounts/default")))
            names = {n.name for n in spec.nodes}
            wait(Component.KWOK, "all nodes Ready", lambda: _ready_nodes(api) >= names)
            network = LabNetwork.for_specs(self._dir.root, [c.spec for c in self._require_mem().clusters])
            wait(Component.DNS, f"kubernetes.default.svc.cluster.local at {spec.dns_service_ip}",
                 lambda: _dns_answers(network.cluster_netns(name), str(spec.dns_service_ip),
                                      f"kubernetes.default.svc.{CLUSTER_DOMAIN}", str(spec.kubernetes_service_ip)))

    def _pods_on(self, api: LabApi, node: str) -> list[tuple[str, str]]:
        pods = api.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node}"})
        return [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods.get("items", [])
                if not p["metadata"].get("deletionTimestamp")]

    def _wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.fault_timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.25)
        raise LabError(f"timed out after {self.settings.fault_timeout:.0f}s waiting for {what}:"
                       f" see `isthmus lab logs` for kwok and kube-controller-manager")


def _components(state: LabState) -> tuple[Component, ...]:
    """What the lab runs per cluster: all of it, without the pod runtime when kwok fakes every pod, or only
    etcd and kube-apiserver when minimal."""
    if state.minimal:
        return MINIMAL_COMPONENTS
    return tuple(c for c in Component if c is not Component.RUNTIME or state.pods is PodMode.REAL)


def _component(value: Component | str) -> Component:
    if isinstance(value, Component):
        return value
    try:
        return Component.parse(value)
    except ValueError:
        known = ", ".join(c.value for c in Component)
        raise UnknownTargetError(f"no lab component {value!r} (components: {known})") from None


def _node_manifest(node: LabNode) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1],
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kwok",
                "topology.kubernetes.io/region": node.region,
                "topology.kubernetes.io/zone": node.zone,
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
    }


def _dns_answers(netns: str, server: str, name: str, expected: str) -> bool:
    return expected in resolve_a(netns, server, name, timeout=0.5)


def _ready_status() -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "LabMinimal",
                                       "message": "minimal lab: no kubelet, Ready by fiat",
                                       "lastHeartbeatTime": now, "lastTransitionTime": now}]}}


def _conditions_true(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions", []) or [])


def _ready_nodes(api: LabApi) -> set[str]:
    nodes = api.get("/api/v1/nodes", params={"labelSelector": "=".join(KWOK_NODE_LABEL)})
    return {n["metadata"]["name"] for n in nodes.get("items", []) if _conditions_true(n, "Ready")}


def _node_ready(api: LabApi, node: str) -> bool:
    return _conditions_true(api.get(f"/api/v1/nodes/{node}"), "Ready")


def _pod_ready(api: LabApi, ns: str, name: str) -> bool:
    return _conditions_true(api.get(f"/api/v1/namespaces/{ns}/pods/{name}"), "Ready")

