"""Changing an app across clusters safely: revisions, plans of gated steps, one lock, resume, rollback.

Owns: the order in which clusters change and what must hold before each change.
Must not: talk to an API server except through ``isthmus.kube``, or decide object contents
(that is ``isthmus.render``).
"""

from .clock import Clock, FakeClock
from .deploying import (
    DatacenterStatus,
    Progress,
    StatusReport,
    app_status,
    delete_app,
    diff_app,
    render_app,
    wait_healthy,
)
from .engine import EngineSettings
from .gates import (
    DEFAULT_GATES,
    ClusterView,
    Gate,
    GateContext,
    GateResult,
    GateVerdict,
    NodesReady,
    PodsReady,
    Reachable,
    Soak,
    WorkloadsSettled,
)
from .locking import (
    BreakRefused,
    Fenced,
    LeaseLock,
    LeaseState,
    LockHeld,
    LockLost,
    break_lock,
    fence,
    fence_unchanged_since_us,
    lock_status,
)
from .memberrevisions import History, history
from .progress import Outcome, ProgressStore, RolloutPhase, RolloutState
from .releasing import SecretsLost, release_status, render_release
from .repairing import RepairOptions, RepairResult, RepairUnavailable, run_repair
from .repairplan import BadRepair, RepairNode, RepairPlan, plan_repair
from .repairstate import RepairSummary
from .requirements import MissingCRD
from .results import EngineStats, MemberOutcome, MemberResult, RolloutResult, StepFailed
from .revisions import Revision, RevisionInfo, RevisionNotFound, RevisionStore
from .rollback import NothingToRollBack, rollback_app
from .rolling import NothingToResume, RolloutOptions, UnknownCluster, apply_rollout, resume_rollout
from .secrets import SecretUnavailable, superuser_password
from .steps import RolloutPlan, Step, StepKind, check_strategy, plan_rollout

__all__ = [
    "DEFAULT_GATES",
    "BadRepair",
    "BreakRefused",
    "Clock",
    "ClusterView",
    "DatacenterStatus",
    "EngineSettings",
    "EngineStats",
    "FakeClock",
    "Fenced",
    "Gate",
    "GateContext",
    "GateResult",
    "GateVerdict",
    "History",
    "LeaseLock",
    "LeaseState",
    "LockHeld",
    "LockLost",
    "MemberOutcome",
    "MemberResult",
    "MissingCRD",
    "NodesReady",
    "NothingToResume",
    "NothingToRollBack",
    "Outcome",
    "PodsReady",
    "Progress",
    "ProgressStore",
    "Reachable",
    "RepairNode",
    "RepairOptions",
    "RepairPlan",
    "RepairResult",
    "RepairSummary",
    "RepairUnavailable",
    "Revision",
    "RevisionInfo",
    "RevisionNotFound",
    "RevisionStore",
    "RolloutOptions",
    "RolloutPhase",
    "RolloutPlan",
    "RolloutResult",
    "RolloutState",
    "SecretUnavailable",
    "SecretsLost",
    "Soak",
    "StatusReport",
    "Step",
    "StepFailed",
    "StepKind",
    "UnknownCluster",
    "WorkloadsSettled",
    "app_status",
    "apply_rollout",
    "break_lock",
    "check_strategy",
    "delete_app",
    "diff_app",
    "fence",
    "fence_unchanged_since_us",
    "history",
    "lock_status",
    "plan_repair",
    "plan_rollout",
    "release_status",
    "render_app",
    "render_release",
    "resume_rollout",
    "rollback_app",
    "run_repair",
    "superuser_password",
    "wait_healthy",
]
