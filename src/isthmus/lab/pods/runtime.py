"""The lab's pod runtime: a kubelet for the pods of one cluster whose images the lab can run for real.

Owns: watching the cluster's pods; for each pod of a real image (see :mod:`isthmus.lab.images`) its
sandbox (an IP from the cluster's pod range, a network namespace from :mod:`isthmus.lab.podnet`, volumes,
``/etc/hosts``/``resolv.conf``), its init containers in order, its containers with restarts and
CrashLoopBackOff, startup/readiness/liveness probes run against the real processes, status patches, the
kwok objects that make ``kubectl exec``, ``logs`` and ``port-forward`` reach it, events, and deletion as a
kubelet does it: preStop hooks within the grace period, SIGTERM, SIGKILL when the period ends, then the
final delete. Must not: touch pods of other images (kwok simulates those) or any other cluster.

One :class:`PodWorker` task per pod; it alone changes that pod's state and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..cassandra_install import CassandraLabError
from ..images import ImageKind, cassandra_version, image_kind, runs_for_real
from .api import JSON, RuntimeApi
from .containers import ContainerProcess, ProbeResult, exec_argv, exec_in, run_probe, start_container
from .imagefs import ImageLayer, cassandra_image, isthmus_image
from .status import ContainerState, PodView, backoff_delay, expand, pod_status, rfc3339
from .volumes import VolumeNotReady, prepare_volumes, run_provisioner

__all__ = ["PodNet", "PodNetworkProvider", "PodWorker", "Runtime", "RuntimeSettings"]

log = logging.getLogger("isthmus.lab.pods")

NOT_READY_KEY = "lab.isthmus.dev/not-ready"
DEFAULT_CASSANDRA_VERSION = "5.0.9"
KWOK_API = "/apis/kwok.x-k8s.io/v1alpha1"
#: Commands of the images, when a container names none (the images' ENTRYPOINT and CMD).
_ENTRYPOINTS: dict[ImageKind, tuple[list[str], list[str]]] = {
    ImageKind.CASSANDRA: ([], ["cassandra", "-f"]),
    ImageKind.ISTHMUS: (["isthmus"], []),
}
#: Ports a port-forward may reach in every real pod, besides the declared ones (JMX, CQL, gossip).
_EXTRA_FORWARD_PORTS = (7000, 7199, 9042)


class PodNet(Protocol):
    @property
    def netns_path(self) -> Path: ...


class PodNetworkProvider(Protocol):
    """What the runtime needs of the lab's pod network (:class:`isthmus.lab.podnet.LabNetwork`)."""

    def add_pod(self, cluster: str, key: str, ip: ipaddress.IPv4Address, *, namespace: str = ...) -> PodNet: ...
    def remove_pod(self, cluster: str, key: str) -> None: ...
    def pod_range(self, cluster: str) -> ipaddress.IPv4Network: ...
    def resolv_conf(self, cluster: str, namespace: str) -> str: ...


@dataclass(frozen=True)
class RuntimeSettings:
    cluster: str
    #: <state>/clusters/<cluster>/pods: one folder per pod
    pods_dir: Path
    images_dir: Path
    volumes_dir: Path
    host_ip: str = "127.0.0.1"
    heap_cap_mib: int = 1024
    #: how long a container killed by a failed liveness probe (not a deletion) gets after SIGTERM
    liveness_kill_grace_s: float = 30.0
    cluster_domain: str = "cluster.local"


@dataclass
class _Container:
    spec: JSON
    state: ContainerState
    init: bool
    proc: ContainerProcess | None = None
    killed_by: str | None = None
    #: the warm nodetool beside a Cassandra node (its image's nodetool-server), stopped with the container
    helper: asyncio.subprocess.Process | None = None
    tail: list[bytes] = field(default_factory=list)
    dir: Path = Path()


class PodWorker:
    """One pod: set up, run, report, and tear down when it is deleted."""

    def __init__(self, rt: Runtime, pod: JSON) -> None:
        self.rt = rt
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = self.uid.replace("-", "")[:10]
        self.dir = rt.settings.pods_dir / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.ip: ipaddress.IPv4Address | None = None
        self.net: PodNet | None = None
        self.volumes: dict[str, Path] = {}
        now = rt.clock()
        self.start_time = now
        self.since: dict[str, float] = {}
        self._last_conditions: dict[str, bool] = {}
        self.init = [self._container(c, init=True) for c in pod["spec"].get("initContainers", [])]
        self.main = [self._container(c, init=False) for c in pod["spec"]["containers"]]
        self.deleting = asyncio.Event()
        self.changed = asyncio.Event()
        self.gone = False

    def _container(self, spec: JSON, *, init: bool) -> _Container:
        state = ContainerState(name=spec["name"], image=spec["image"], init=init,
                               reason="PodInitializing" if not init else "ContainerCreating")
        for st in self.pod.get("status", {}).get("initContainerStatuses" if init else "containerStatuses", []) or []:
            if st.get("name") == spec["name"]:  # a runtime restart: keep counting
                state = replace(state, restart_count=int(st.get("restartCount", 0)))
        return _Container(spec, state, init, dir=self.dir / "containers" / spec["name"])

    # ---------------------------------------------------------------- lifecycle

    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
        self.changed.set()

    async def run(self) -> None:
        publisher = asyncio.create_task(self._publisher())
        try:
            if not await self._setup():
                return
            if await self._run_init():
                runners = [asyncio.create_task(self._run_main(c)) for c in self.main]
                await self.deleting.wait()
                await self._terminate()
                for r in runners:
                    r.cancel()
                await asyncio.gather(*runners, return_exceptions=True)
            else:
                await self.deleting.wait()
                await self._terminate()
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)
            await self._teardown()

    async def _setup(self) -> bool:
        """Volumes, IP, network, kwok objects. False if the pod was deleted before it could start."""
        while True:
            try:
                self.volumes = await prepare_volumes(self.rt.api, self.pod, self.dir)
                break
            except VolumeNotReady as exc:
                for c in self.init or self.main:
                    c.state = c.state.waiting("ContainerCreating", f"waiting for volumes: {exc}")
                self.changed.set()
                if await self._wait_deleting(2.0):
                    return False
        self.ip = self.rt.allocate_ip(self)
        self.net = await asyncio.to_thread(self.rt.network.add_pod, self.rt.settings.cluster, self.key, self.ip,
                                           namespace=self.ns)
        self.since["sandbox"] = self.rt.clock()
        (self.dir / "etc").mkdir(parents=True, exist_ok=True)
        await self.rt.write_kwok_objects(self)
        self.changed.set()
        return True

    async def _wait_deleting(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), seconds)
        return self.deleting.is_set()

    async def _run_init(self) -> bool:
        """Run init containers one after the other (restarting a failed one); False if deleted first."""
        for c in self.init:
            while True:
                if self.deleting.is_set():
                    return False
                rc = await self._run_once(c)
                if rc == 0:
                    break
                if await self._backoff(c):
                    return False
        for c in self.main:
            c.state = c.state.waiting("ContainerCreating")
        self.since["Initialized"] = self.rt.clock()
        self.changed.set()
        return True

    async def _run_main(self, c: _Container) -> None:
        while not self.deleting.is_set():
            await self._run_once(c)
            if self.deleting.is_set():
                return
            if await self._backoff(c):
                return

    async def _backoff(self, c: _Container) -> bool:
        """Wait before restarting ``c``; True if the pod is being deleted meanwhile."""
        ran = (c.state.finished_at or 0) - (c.state.started_at or 0)
        c.state = c.state.restarted()
        if ran >= 600:
            c.state = replace(c.state, restart_count=1)
        delay = backoff_delay(c.state.restart_count)
        if delay:
            reason = "CrashLoopBackOff"
            c.state = replace(c.state.waiting(reason, f"back-off {delay:.0f}s restarting failed container="
                                                      f"{c.spec['name']} pod={self.name}_{self.ns}({self.uid})"),
                              restart_count=c.state.restart_count)
            self.changed.set()
            await self.rt.event(self, "Warning", "BackOff", f"Back-off restarting failed container {c.spec['name']}")
        return await self._wait_deleting(delay)

    async def _run_once(self, c: _Container) -> int:
        """Start ``c``, probe it while it runs, return its exit code (126: it could not start)."""
        assert self.net is not None and self.ip is not None
        kind = image_kind(c.spec["image"])
        if kind is ImageKind.SIMULATED:  # an image the lab cannot run: reported running, no process
            c.state = c.state.running(self.rt.clock(), f"lab://{self.uid}/{c.spec['name']}")
            c.state = replace(c.state, ready=True, started=True)
            self.changed.set()
            await self.deleting.wait()
            return 0
        pulls = 0
        while True:  # an image that cannot be had: ErrImagePull, then ImagePullBackOff, never a restart
            try:
                layer = await self.rt.image(kind, c.spec["image"])
                break
            except CassandraLabError as exc:
                message = str(exc)[-1024:]
                pulls += 1
                c.state = c.state.waiting("ErrImagePull" if pulls == 1 else "ImagePullBackOff", message)
                self.changed.set()
                await self.rt.event(self, "Warning", "Failed", f"Failed to pull image {c.spec['image']!r}: {message}")
                if await self._wait_deleting(backoff_delay(pulls)):
                    return 0
        spec = self._container_spec(c, layer)
        log_file = self.dir / "logs" / f"{c.spec['name']}.log"
        if log_file.exists():
            log_file.replace(log_file.with_suffix(".previous.log"))
        c.dir.mkdir(parents=True, exist_ok=True)
        c.tail.clear()
        c.killed_by = None
        proc = await start_container(netns_path=self.net.netns_path, spec=spec, spec_path=c.dir / "spec.json",
                                     log=log_file, tail=c.tail)
        c.proc = proc
        uid, gid = spec.get("runAsUser"), spec.get("runAsGroup")
        (c.dir / "uid").write_text(str(0 if uid is None else uid))
        (c.dir / "gid").write_text(str(0 if gid is None else gid))
        (c.dir / "pid").write_text(str(proc.pid))
        c.state = c.state.running(proc.started, f"lab://{self.uid}/{c.spec['name']}/{proc.pid}")
        if c.init or not any(k in c.spec for k in ("startupProbe", "readinessProbe")):
            c.state = replace(c.state, started=True, ready=not c.init)
        self.changed.set()
        await self.rt.event(self, "Normal", "Started", f"Started container {c.spec['name']}")
        probes = None if c.init else asyncio.create_task(self._probe_logged(c, spec))
        helper = asyncio.create_task(self._start_helper(c, spec, proc)) if kind is ImageKind.CASSANDRA and \
            not c.init else None
        rc = await proc.wait()
        if helper is not None:
            helper.cancel()
            await asyncio.gather(helper, return_exceptions=True)
        self._stop_helper(c)
        if probes is not None:
            probes.cancel()
            await asyncio.gather(probes, return_exceptions=True)
        (c.dir / "pid").unlink(missing_ok=True)
        c.proc = None
        said: str | None = b"".join(c.tail[-10:]).decode(errors="replace").strip() or None
        if rc < 0:
            rc = 128 - rc
        reason = "Completed" if rc == 0 else "Error"
        if c.killed_by:
            said = c.killed_by
        c.state = c.state.terminated(self.rt.clock(), rc, reason, said)
        self.changed.set()
        if rc != 0 and not self.deleting.is_set():
            await self.rt.event(self, "Warning", "Failed",
                                f"Container {c.spec['name']} exited with code {rc}: {(said or '')[-300:]}")
        return rc

    async def _start_helper(self, c: _Container, spec: JSON, proc: ContainerProcess) -> None:
        """Start the image's warm nodetool inside the container once its root is built (it has chrooted)."""
        for _ in range(600):
            try:
                if _chrooted(proc.pid):
                    break
            except OSError:
                return
            await asyncio.sleep(0.1)
        else:
            return
        argv = exec_argv(proc.pid, spec.get("runAsUser"), spec.get("runAsGroup"), ["nodetool-server"])
        with (c.dir / "nodetool-server.log").open("ab") as out:
            c.helper = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                                                            stderr=asyncio.subprocess.STDOUT, start_new_session=True)

    def _stop_helper(self, c: _Container) -> None:
        if c.helper is not None and c.helper.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.helper.pid, signal.SIGKILL)
        c.helper = None

    def _user(self, c: JSON) -> tuple[int | None, int | None]:
        pod_sec = self.pod["spec"].get("securityContext") or {}
        sec = c.get("securityContext") or {}
        uid = sec.get("runAsUser", pod_sec.get("runAsUser"))
        gid = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
        return uid, gid

    def _env(self, c: JSON, layer: ImageLayer) -> dict[str, str]:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        fields = {"status.podIP": str(self.ip), "status.podIPs": str(self.ip), "metadata.name": self.name,
                  "metadata.namespace": self.ns, "metadata.uid": self.uid, "spec.nodeName": spec.get("nodeName", ""),
                  "status.hostIP": self.rt.settings.host_ip, "spec.serviceAccountName":
                      spec.get("serviceAccountName", "default")}
        env = {"HOSTNAME": spec.get("hostname") or self.name, **layer.env}
        for var in c.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            elif ref := (var.get("valueFrom") or {}).get("fieldRef"):
                path = ref["fieldPath"]
                if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
                    group, key = path.split("['", 1)
                    env[var["name"]] = (meta.get(group.split(".")[1]) or {}).get(key.rstrip("']"), "")
                else:
                    env[var["name"]] = fields.get(path, "")
            else:  # secretKeyRef / configMapKeyRef: not read by the lab (the rendered pods use none)
                env[var["name"]] = ""
        return env

    def _container_spec(self, c: _Container, layer: ImageLayer) -> JSON:
        cs = c.spec
        kind = image_kind(cs["image"])
        env = self._env(cs, layer)
        entry, cmd = _ENTRYPOINTS.get(kind, ([], []))
        command = [expand(a, env) for a in cs["command"]] if "command" in cs else list(entry)
        args = [expand(a, env) for a in cs["args"]] if "args" in cs else ([] if "command" in cs else list(cmd))
        uid, gid = self._user(cs)
        hostname = self.pod["spec"].get("hostname") or self.name
        sub = self.pod["spec"].get("subdomain")
        fqdn = f"{hostname}.{sub}.{self.ns}.svc.{self.rt.settings.cluster_domain}" if sub else ""
        hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{self.ip}\t{fqdn} {hostname}\n"
        binds = [{"source": str(src), "target": target, "readOnly": True} for src, target in layer.binds]
        for m in cs.get("volumeMounts", []):
            src = self.volumes.get(m["name"])
            if src is None:
                continue
            if m.get("subPath"):
                src = src / m["subPath"]
            binds.append({"source": str(src), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        pod_sec = self.pod["spec"].get("securityContext") or {}
        groups = [g for g in [pod_sec.get("fsGroup"), *pod_sec.get("supplementalGroups", [])] if g is not None]
        return {
            "root": str(c.dir / "root"),
            "layers": [str(layer.dir)] if layer.dir else [],
            "files": {"/etc/hosts": hosts, "/etc/hostname": hostname + "\n",
                      "/etc/resolv.conf": self.rt.network.resolv_conf(self.rt.settings.cluster, self.ns)},
            "binds": binds,
            "env": env,
            "hostname": hostname,
            "runAsUser": uid,
            "runAsGroup": gid,
            "supplementalGroups": groups,
            "workingDir": cs.get("workingDir"),
            "command": [*command, *args],
        }

    # ------------------------------------------------------------------ probes

    async def _probe_logged(self, c: _Container, spec: JSON) -> None:
        try:
            await self._probe(c, spec)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("probes of %s/%s %s", self.ns, self.name, c.spec["name"])

    async def _probe(self, c: _Container, spec: JSON) -> None:
        ports = {p["name"]: p["containerPort"] for p in c.spec.get("ports", []) if "name" in p}
        uid, gid = spec.get("runAsUser"), spec.get("runAsGroup")

        async def once(probe: JSON) -> ProbeResult:
            assert self.net is not None
            return await run_probe(probe, pid=c.proc.pid if c.proc else None, uid=uid, gid=gid,
                                   netns_path=self.net.netns_path, pod_ip=str(self.ip), ports=ports)

        clock = self.rt.sleep
        if startup := c.spec.get("startupProbe"):
            await self._initial_delay(c, startup)
            failures = 0
            while True:
                result = await once(startup)
                if result.ok:
                    break
                failures += 1
                if failures >= int(startup.get("failureThreshold", 3)):
                    await self._kill(c, f"Startup probe failed: {result.message}")
                    return
                await clock(float(startup.get("periodSeconds", 10)))
        c.state = replace(c.state, started=True, ready=c.state.ready or "readinessProbe" not in c.spec)
        self.changed.set()
        tasks = []
        if readiness := c.spec.get("readinessProbe"):
            tasks.append(asyncio.create_task(self._readiness(c, readiness, once)))
        if liveness := c.spec.get("livenessProbe"):
            tasks.append(asyncio.create_task(self._liveness(c, liveness, once)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _initial_delay(self, c: _Container, probe: JSON) -> None:
        """``initialDelaySeconds`` counts from the container's start (a startup probe may have used some)."""
        started = c.state.started_at or self.rt.clock()
        await self.rt.sleep(max(0.0, started + float(probe.get("initialDelaySeconds", 0)) - self.rt.clock()))

    async def _readiness(self, c: _Container, probe: JSON, once: Callable[[JSON], Any]) -> None:
        await self._initial_delay(c, probe)
        ok_run = bad_run = 0
        while True:
            result: ProbeResult = await once(probe)
            if result.ok:
                ok_run, bad_run = ok_run + 1, 0
                if not c.state.ready and ok_run >= int(probe.get("successThreshold", 1)):
                    c.state = replace(c.state, ready=True)
                    self.changed.set()
            else:
                ok_run, bad_run = 0, bad_run + 1
                if bad_run >= int(probe.get("failureThreshold", 3)) and c.state.ready:
                    c.state = replace(c.state, ready=False)
                    self.changed.set()
                    await self.rt.event(self, "Warning", "Unhealthy", f"Readiness probe failed: {result.message}")
            await self.rt.sleep(float(probe.get("periodSeconds", 10)))

    async def _liveness(self, c: _Container, probe: JSON, once: Callable[[JSON], Any]) -> None:
        await self._initial_delay(c, probe)
        bad_run = 0
        while True:
            result: ProbeResult = await once(probe)
            bad_run = 0 if result.ok else bad_run + 1
            if bad_run >= int(probe.get("failureThreshold", 3)):
                await self.rt.event(self, "Warning", "Unhealthy", f"Liveness probe failed: {result.message}")
                await self._kill(c, f"Liveness probe failed: {result.message}")
                return
            await self.rt.sleep(float(probe.get("periodSeconds", 10)))

    async def _kill(self, c: _Container, why: str) -> None:
        """Restart a container that failed its probes: preStop, SIGTERM, SIGKILL after the lab's grace."""
        proc = c.proc
        if proc is None:
            return
        c.killed_by = why
        await self.rt.event(self, "Normal", "Killing", f"Container {c.spec['name']} {why}, will be restarted")
        await self._stop(c, proc, self.rt.clock() + self.rt.settings.liveness_kill_grace_s)

    async def _stop(self, c: _Container, proc: ContainerProcess, deadline: float) -> None:
        hook = ((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook:
            uid, gid = self._user(c.spec)
            remaining = max(1.0, deadline - self.rt.clock())
            rc, out = await exec_in(proc.pid, uid, gid, hook["command"], within=remaining)
            if rc != 0:
                await self.rt.event(self, "Warning", "FailedPreStopHook",
                                    f"PreStopHook failed (exit {rc}): {out.decode(errors='replace')[-300:]}")
        proc.kill(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.proc.wait()), max(0.5, deadline - self.rt.clock()))
        except TimeoutError:
            proc.kill(signal.SIGKILL)

    # ------------------------------------------------------------- termination

    async def _terminate(self) -> None:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds", self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        deadline = self.rt.clock() + float(grace)
        running = [(c, c.proc) for c in [*self.init, *self.main] if c.proc is not None]
        if running:
            await self.rt.event(self, "Normal", "Killing", "Stopping containers")
        await asyncio.gather(*(self._stop(c, p, deadline) for c, p in running), return_exceptions=True)
        await asyncio.gather(*(p.proc.wait() for _, p in running), return_exceptions=True)

    async def _teardown(self) -> None:
        for c in [*self.init, *self.main]:
            self._stop_helper(c)
            if c.proc is not None:
                c.proc.kill(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.proc.proc.wait(), 10)
        if self.net is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.rt.network.remove_pod, self.rt.settings.cluster, self.key)
        self.rt.release_ip(self)
        await asyncio.to_thread(shutil.rmtree, self.dir, True)
        if self.deleting.is_set() and not self.gone:
            with contextlib.suppress(httpx.HTTPError):
                await self.rt.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                                         {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})

    # ----------------------------------------------------------------- status

    def status(self) -> JSON:
        annotations = self.pod["metadata"].get("annotations") or {}
        not_ready = "IsthmusLabFault" if NOT_READY_KEY in annotations else None
        view = PodView(pod_ip=str(self.ip) if self.net is not None else None, host_ip=self.rt.settings.host_ip,
                       start_time=self.start_time, scheduled_at=self.start_time, conditions_since=self.since)
        status = pod_status(view, [c.state for c in self.init], [c.state for c in self.main],
                            not_ready_reason=not_ready)
        now = self.rt.clock()
        for cond in status["conditions"]:  # transition times move only when a condition flips
            flag = cond["status"] == "True"
            if self._last_conditions.get(cond["type"]) != flag:
                self._last_conditions[cond["type"]] = flag
                self.since[cond["type"]] = now
            cond["lastTransitionTime"] = rfc3339(self.since.get(cond["type"], now))
        return status

    async def _publisher(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            if self.gone:
                return
            try:
                found = await self.rt.api.merge_patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                                                      {"metadata": {"uid": self.uid}, "status": self.status()})
                if found is None:
                    self.gone = True
                    self.deleting.set()
            except httpx.HTTPError as exc:
                detail = exc.response.text[:300] if isinstance(exc, httpx.HTTPStatusError) else ""
                log.warning("status of %s/%s: %s %s", self.ns, self.name, exc, detail)
                self.changed.set()
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.2)  # coalesce bursts of changes into one patch


def _chrooted(pid: int) -> bool:
    """Whether the container's first program has entered the container's root (so ``nsenter -r`` lands there)."""
    return Path(f"/proc/{pid}/root").readlink() != Path("/")


class Runtime:
    """The pod runtime of one lab cluster (``python -m isthmus.lab.pods``)."""

    def __init__(self, settings: RuntimeSettings, api: RuntimeApi, network: PodNetworkProvider, *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.settings = settings
        self.api = api
        self.network = network
        self.clock = clock
        self.sleep = sleep
        self.workers: dict[str, PodWorker] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.used_ips: dict[ipaddress.IPv4Address, str] = {}
        self._last_ip: dict[ipaddress.IPv4Network, int] = {}
        self._images: dict[str, ImageLayer] = {}
        self._image_lock = asyncio.Lock()

    # --------------------------------------------------------------- helpers

    def allocate_ip(self, worker: PodWorker) -> ipaddress.IPv4Address:
        pod_range = self.network.pod_range(self.settings.cluster)
        wanted = (worker.pod.get("status") or {}).get("podIP")
        if wanted:
            ip = ipaddress.IPv4Address(wanted)
            if ip in pod_range and self.used_ips.get(ip) in (None, worker.uid):
                self.used_ips[ip] = worker.uid
                return ip
        # As CNI's host-local IPAM does: the next free address after the last one given, wrapping around, so a
        # freed address is not handed out again at once. (First-free would let two pods deleted together come
        # back with each other's addresses, which Cassandra refuses: "A node with address ... already exists";
        # see casskop#170 for that crossing on a real fleet.)
        hosts = list(pod_range.hosts())[1:]  # the first host is the gateway
        start = self._last_ip.get(pod_range, -1) + 1
        for i in range(len(hosts)):
            at = (start + i) % len(hosts)
            ip = hosts[at]
            if ip not in self.used_ips:
                self.used_ips[ip] = worker.uid
                self._last_ip[pod_range] = at
                return ip
        raise RuntimeError(f"cluster {self.settings.cluster}: no free pod IP in {pod_range}")

    def release_ip(self, worker: PodWorker) -> None:
        if worker.ip is not None and self.used_ips.get(worker.ip) == worker.uid:
            del self.used_ips[worker.ip]

    async def image(self, kind: ImageKind, image: str) -> ImageLayer:
        async with self._image_lock:
            if image not in self._images:
                if kind is ImageKind.CASSANDRA:
                    version = cassandra_version(image, default=DEFAULT_CASSANDRA_VERSION)
                    self._images[image] = await asyncio.to_thread(
                        cassandra_image, version, images_dir=self.settings.images_dir,
                        heap_cap_mib=self.settings.heap_cap_mib)
                else:
                    self._images[image] = isthmus_image()
            return self._images[image]

    async def event(self, worker: PodWorker, kind: str, reason: str, message: str) -> None:
        now = rfc3339(self.clock())
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{worker.name}.", "namespace": worker.ns},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": worker.name, "namespace": worker.ns,
                                   "uid": worker.uid},
                "reason": reason, "message": message[:1024], "type": kind, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "kubelet", "host": worker.pod["spec"].get("nodeName", "")},
                "reportingComponent": "kubelet", "reportingInstance": worker.pod["spec"].get("nodeName", "")}
        with contextlib.suppress(httpx.HTTPError):
            await self.api.create(f"/api/v1/namespaces/{worker.ns}/events", body)

    async def write_kwok_objects(self, worker: PodWorker) -> None:
        """kwok's Exec, Logs and PortForward objects for this pod (owned by it, so they go with it)."""
        assert worker.net is not None
        owner = [{"apiVersion": "v1", "kind": "Pod", "name": worker.name, "uid": worker.uid}]
        containers = [c for c in [*worker.init, *worker.main]]
        ports = sorted({int(p["containerPort"]) for c in worker.main for p in c.spec.get("ports", [])}
                       | set(_EXTRA_FORWARD_PORTS))
        netns = worker.net.netns_path
        specs = {
            "execs": {"execs": [{"containers": [c.spec["name"]], "local": {"envs": [
                {"name": "ISTHMUS_CONTAINER_DIR", "value": str(c.dir)}]}} for c in containers]},
            "logs": {"logs": [{"containers": [c.spec["name"]],
                               "logsFile": str(worker.dir / "logs" / f"{c.spec['name']}.log"),
                               "previousLogsFile": str(worker.dir / "logs" / f"{c.spec['name']}.previous.log"),
                               "follow": True} for c in containers]},
            "portforwards": {"forwards": [{"ports": [p], "command": [
                "/usr/bin/nsenter", f"--net={netns}", "/usr/bin/socat", "-", f"TCP4:127.0.0.1:{p}"]} for p in ports]},
        }
        kinds = {"execs": "Exec", "logs": "Logs", "portforwards": "PortForward"}
        for plural, spec in specs.items():
            path = f"{KWOK_API}/namespaces/{worker.ns}/{plural}"
            body = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": kinds[plural],
                    "metadata": {"name": worker.name, "namespace": worker.ns, "ownerReferences": owner}, "spec": spec}
            if await self.api.create(path, body) == 409:  # the previous pod of that name: replace its objects
                await self.api.delete(f"{path}/{worker.name}")
                await self.api.create(path, body)

    # ----------------------------------------------------------------- loop

    def _is_ours(self, pod: JSON) -> bool:
        spec = pod.get("spec") or {}
        images = [c.get("image", "") for c in [*spec.get("initContainers", []), *spec.get("containers", [])]]
        return bool(spec.get("nodeName")) and runs_for_real(images)

    def _seen(self, pod: JSON) -> None:
        if not self._is_ours(pod):
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if worker is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            task = asyncio.create_task(self._run_worker(worker), name=f"pod {worker.ns}/{worker.name}")
            self.tasks[uid] = task
        worker.update(pod)

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("pod %s/%s", worker.ns, worker.name)
        finally:
            self.workers.pop(worker.uid, None)
            self.tasks.pop(worker.uid, None)

    def _gone(self, pod: JSON) -> None:
        worker = self.workers.get(pod["metadata"]["uid"])
        if worker is not None:
            worker.gone = True
            worker.deleting.set()

    async def watch_pods(self) -> None:
        while True:
            try:
                listing = await self.api.list("/api/v1/pods")
                for pod in listing["items"]:
                    self._seen(pod)
                live = {p["metadata"]["uid"] for p in listing["items"]}
                for uid in list(self.workers):
                    if uid not in live:
                        self._gone(self.workers[uid].pod)
                rv = listing["metadata"].get("resourceVersion", "0")
                async for event in self.api.watch("/api/v1/pods", rv):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind in ("ADDED", "MODIFIED"):
                        self._seen(obj)
                    elif kind == "DELETED":
                        self._gone(obj)
                    elif kind == "ERROR":
                        break
            except (httpx.HTTPError, OSError) as exc:
                log.info("pod watch: %s; retrying", exc)
                await asyncio.sleep(1.0)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.watch_pods(), name="pods"),
                 asyncio.create_task(run_provisioner(self.api, self.settings.volumes_dir), name="provisioner")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def shutdown(self) -> None:
        """The node goes away: every container dies at once (SIGKILL), as on a machine that is switched off."""
        for worker in list(self.workers.values()):
            for c in [*worker.init, *worker.main]:
                worker._stop_helper(c)
                if c.proc is not None:
                    c.proc.kill(signal.SIGKILL)
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

