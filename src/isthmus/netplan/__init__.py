"""The pure network planner: cluster IDs, pod/service CIDRs, MTU and capacity for a fleet.

Owns every network decision the CLI and the operator act on: ``plan(fleet, lock) -> NetworkPlan`` for a
fleet still to be planned, ``check(fleet) -> CheckReport`` for one whose CIDRs and IDs are already
assigned, and ``calculate_mtu`` for the MTU arithmetic alone. Must not do I/O: no files, sockets,
asyncio or subprocesses — callers read the spec and the lock and write the results.

Modules, one concept each: ``mtu`` (overheads, route MTU), ``ids`` (Cilium cluster IDs),
``addressing`` (CIDR sizing and allocation), ``capacity`` (how full a pod CIDR is), ``lock`` (the
record of what was handed out), ``planning`` (putting it together), ``checking`` (auditing a fleet).
"""

from __future__ import annotations

from .checking import CheckReport, Finding, Severity, check
from .errors import LockError, PlanError
from .lock import Lock, LockedCluster
from .mtu import MTUResult
from .mtu import calculate as calculate_mtu
from .planning import ClusterPlan, NetworkPlan, NetworkSummary, plan

__all__ = [
    "CheckReport",
    "ClusterPlan",
    "Finding",
    "Lock",
    "LockError",
    "LockedCluster",
    "MTUResult",
    "NetworkPlan",
    "NetworkSummary",
    "PlanError",
    "Severity",
    "calculate_mtu",
    "check",
    "plan",
]
