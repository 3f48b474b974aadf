"""The lab: several real Kubernetes control planes on one machine, for tests and demos.

Owns: building the binaries (:mod:`.binaries`), the cluster shapes (:mod:`.specs`), PKI
(:mod:`.pki`), component command lines (:mod:`.components`), process supervision
(:mod:`.processes`), lab state (:mod:`.state`), the :class:`Lab` API (:mod:`.lab`) and the
``isthmus lab`` commands (:mod:`.cli`). Each cluster is etcd + kube-apiserver +
kube-controller-manager + kube-scheduler + kwok, whose fake nodes carry region/zone labels.
Must not: be imported by the product packages (spec, netplan, render, kube, rollout,
operator); it is test and demo infrastructure.
"""

from __future__ import annotations

from .components import Component
from .errors import (
    ComponentError,
    LabAlreadyRunningError,
    LabBusyError,
    LabError,
    LabNotRunningError,
    ToolchainError,
    UnknownTargetError,
)
from .lab import ClusterStatus, ComponentState, ComponentStatus, Lab, LabSettings, LabStatus
from .specs import LabClusterSpec, LabNode, default_specs
from .state import PodMode

__all__ = [
    "ClusterStatus",
    "Component",
    "ComponentError",
    "ComponentState",
    "ComponentStatus",
    "Lab",
    "LabAlreadyRunningError",
    "LabBusyError",
    "LabClusterSpec",
    "LabError",
    "LabNode",
    "LabNotRunningError",
    "LabSettings",
    "LabStatus",
    "PodMode",
    "ToolchainError",
    "UnknownTargetError",
    "default_specs",
]
