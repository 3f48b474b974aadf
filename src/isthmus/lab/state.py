"""What a lab remembers between commands: its state folder, state JSON and lock.

Owns: the layout of ``<state>/`` (``state.json``, ``kubeconfig``, ``lock``, ``clusters/``),
reading and atomically writing the state JSON, and the ``flock`` that serialises
``up``/``down``/fault commands (the kernel drops it when its holder dies, so a killed run
leaves no lock behind). Must not: start or signal processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from .binaries import cache_root
from .components import ClusterPaths, ClusterPorts, Component
from .errors import LabBusyError
from .processes import ProcessRef
from .specs import LabClusterSpec

__all__ = [
    "STATE_VERSION",
    "ClusterState",
    "LabPhase",
    "LabState",
    "PodMode",
    "StateDir",
    "default_state_dir",
]

STATE_VERSION = 1


def default_state_dir(name: str) -> Path:
    return cache_root() / "lab" / "state" / name


class LabPhase(StrEnum):
    STARTING = "starting"
    RUNNING = "running"


class PodMode(StrEnum):
    """Whether the lab runs Cassandra pods for real (:mod:`isthmus.lab.pods`) or kwok simulates every pod."""

    REAL = "real"
    #: every pod is kwok's fake: Ready on a timer, no process (fast; for tests of rollout mechanics)
    SIMULATED = "simulated"


@dataclass(frozen=True)
class ClusterState:
    spec: LabClusterSpec
    ports: ClusterPorts
    processes: Mapping[Component, ProcessRef] = field(default_factory=dict)

    def with_process(self, component: Component, ref: ProcessRef | None) -> ClusterState:
        procs = dict(self.processes)
        if ref is None:
            procs.pop(component, None)
        else:
            procs[component] = ref
        return replace(self, processes=procs)

    def to_json(self) -> dict[str, object]:
        return {
            "spec": self.spec.to_json(),
            "ports": self.ports.to_json(),
            "processes": {c.value: r.to_json() for c, r in self.processes.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> ClusterState:
        spec_raw, ports_raw, procs_raw = raw["spec"], raw["ports"], raw.get("processes", {})
        if not (isinstance(spec_raw, Mapping) and isinstance(ports_raw, Mapping)
                and isinstance(procs_raw, Mapping)):
            raise ValueError("malformed cluster state")
        return cls(
            spec=LabClusterSpec.from_json(spec_raw),
            ports=ClusterPorts.from_json(ports_raw),
            processes={Component(k): ProcessRef.from_json(v) for k, v in procs_raw.items()},
        )


@dataclass(frozen=True)
class LabState:
    name: str
    phase: LabPhase
    owner_pid: int
    clusters: tuple[ClusterState, ...]
    pods: PodMode = PodMode.REAL

    def cluster(self, name: str) -> ClusterState | None:
        return next((c for c in self.clusters if c.spec.name == name), None)

    def with_cluster(self, new: ClusterState) -> LabState:
        clusters = tuple(new if c.spec.name == new.spec.name else c for c in self.clusters)
        return replace(self, clusters=clusters)

    def all_processes(self) -> list[ProcessRef]:
        return [r for c in self.clusters for r in c.processes.values()]

    def to_json(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "phase": self.phase.value,
            "owner_pid": self.owner_pid,
            "pods": self.pods.value,
            "clusters": [c.to_json() for c in self.clusters],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> LabState:
        clusters = raw["clusters"]
        assert isinstance(clusters, list)
        return cls(
            name=str(raw["name"]),
            phase=LabPhase(str(raw["phase"])),
            owner_pid=int(str(raw["owner_pid"])),
            clusters=tuple(ClusterState.from_json(c) for c in clusters),
            pods=PodMode(str(raw.get("pods", PodMode.REAL.value))),
        )


@dataclass(frozen=True)
class StateDir:
    """The files of one lab's state folder."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def lock_file(self) -> Path:
        return self.root / "lock"

    def cluster(self, name: str) -> ClusterPaths:
        return ClusterPaths(self.root / "clusters" / name)

    def load(self) -> LabState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable state is treated as stale
        try:
            return LabState.from_json(raw)
        except (KeyError, ValueError, AssertionError, TypeError):
            return None

    def save(self, state: LabState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's lock (non-blocking: a busy lab is an error, not a wait)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LabBusyError(
                    f"lab state {self.root} is locked by another isthmus lab command: wait for it to finish"
                ) from exc
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)
