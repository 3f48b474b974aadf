"""CQL access control in the app's pods: the cqlguard sidecar, its policy, and the legacy Cilium form.

Owns: what ``spec.access`` changes in a Cassandra pod and around it.

With ``access.enabled`` and ``enforcement: guard`` (the default), every Cassandra pod runs a
``cqlguard`` sidecar and the addresses are arranged so that the guard *is* the node's CQL port::

    client ──────────► POD_IP:9042     cqlguard ──► 127.0.0.2:9042  Cassandra native transport
    port-forward ────► 127.0.0.1:9042  (metrics 0.0.0.0:9105)       rpc_address: 127.0.0.2
                                                                    broadcast_rpc_address: POD_IP

``broadcast_rpc_address`` with ``native_transport_port: 9042`` makes ``system.local`` and
``system.peers_v2`` advertise ``POD_IP:9042``, which is the guard, so drivers that discover the
ring connect to guards only. Cassandra's own native port listens on 127.0.0.2, which nothing outside
the pod can reach, and which ``kubectl port-forward`` does not reach either: the kubelet connects to
``localhost`` inside the pod, and on 127.0.0.1 the guard listens too. So every way in goes through the
guard. The three sockets bind 9042 on distinct addresses (never the wildcard, which Linux would refuse
next to them). The container port ``cql`` (9042) moves from the Cassandra container to the sidecar;
Services keep targeting 9042 and so reach the guard. Readiness of the Cassandra container is unchanged
(``nodetool`` over local JMX).

The rendered policy adds one rule to the spec's, :data:`SUPERUSER_RULE`: the app's superuser (and
Cassandra's default ``cassandra`` login, which the rollout disables once the superuser exists) may run
anything, but only from the pod's loopback, which is to say through ``pods/portforward`` or
``pods/exec`` on the cluster's API server, both behind Kubernetes RBAC. That is how the rollout sets up
the superuser and, later, operates the database; a client on the network gets only the spec's rules,
whatever role it logs in with. Cassandra still authenticates every login: the rule widens nothing for a
wrong password.

The policy is one ConfigMap per app and member cluster, ``<app>-cqlguard`` (``policy.yaml``: the
access rules without ``clientLabels``), mounted as a directory (never ``subPath``, which would
freeze it). The guard reloads the file when the kubelet swaps the ConfigMap's files, without
dropping connections, so the policy's hash stays out of the pod template: a policy change never
rolls the StatefulSets.

``enforcement: legacyCiliumL7`` (deprecated) renders no sidecar: Cilium's proxylib Cassandra
parser enforces the rules instead, on Cassandra's own port, through the L7 rules that
:func:`legacy_l7_grants` derives and :mod:`isthmus.render.netpolicy` puts in a
CiliumNetworkPolicy. Only what that parser can express without widening access is accepted.

Must not: do I/O, read the clock or draw randomness; decide who may connect at L3/L4 (that is
:mod:`isthmus.render.netpolicy`'s).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..image import RELEASED
from ..spec.cassandra import AccessEnforcement, CassandraCluster
from ..spec.policy import ACTION_GROUPS, CqlAction
from .cassandra_config import CQL_PORT, POD_IP_MARKER, SUPERUSER_USERNAME
from .errors import RenderError
from .yamltext import dump_text, load_text

__all__ = [
    "CASSANDRA_RPC_ADDRESS",
    "DEFAULT_GUARD_IMAGE",
    "DEPRECATED_ANNOTATION",
    "FLOWS_PATH",
    "GUARD_CONTAINER",
    "GUARD_METRICS_PORT",
    "GUARD_PORT",
    "POLICY_PATH",
    "SUPERUSER_RULE",
    "L7Grant",
    "add_guard",
    "client_port",
    "guard_container",
    "guard_enabled",
    "guarded_cassandra_yaml",
    "legacy_l7_enabled",
    "legacy_l7_grants",
    "policy_config_map",
    "policy_config_map_name",
    "policy_yaml",
]

GUARD_CONTAINER: Final = "cqlguard"
# The guard takes the CQL port number on the pod IP: peers_v2 advertises broadcast_rpc_address with
# native_transport_port, so the two must be one number for drivers to find the guard.
GUARD_PORT: Final = CQL_PORT
GUARD_METRICS_PORT: Final = 9105
CASSANDRA_RPC_ADDRESS: Final = "127.0.0.2"
#: Where ``kubectl port-forward`` arrives in a pod: the kubelet connects to ``localhost`` there.
GUARD_LOOPBACK: Final = "127.0.0.1"
#: The rule every rendered policy ends with (see the module docstring); spec rules may not take its name.
SUPERUSER_RULE: Final = "builtin:superuser-through-kubernetes"
_DEFAULT_ROLE: Final = "cassandra"  # Cassandra's default superuser, disabled by the rollout
DEFAULT_GUARD_IMAGE: Final = str(RELEASED)  # by digest: the image `make image` built for this release
POLICY_DIR: Final = "/etc/cqlguard"
POLICY_PATH: Final = f"{POLICY_DIR}/policy.yaml"
FLOWS_DIR: Final = "/var/log/cqlguard"
FLOWS_PATH: Final = f"{FLOWS_DIR}/flows.jsonl"
DEPRECATED_ANNOTATION: Final = "isthmus.dev/deprecated"

# requests = limits keeps the Cassandra pod in the Guaranteed QoS class.
_GUARD_RESOURCES: Final = {"cpu": "500m", "memory": "256Mi"}
_POLICY_VOLUME: Final = "cqlguard-policy"
_FLOWS_VOLUME: Final = "cqlguard-flows"
FLOWS_MAX_BYTES: Final = 64 * 1024 * 1024
"""The guard rotates its flows file past this size and keeps one old file: two files at most."""
FLOWS_VOLUME_LIMIT: Final = "192Mi"  # two files plus slack; past it the kubelet would evict the pod


def guard_enabled(app: CassandraCluster) -> bool:
    """The cqlguard sidecar fronts every node."""
    access = app.spec.access
    return access.enabled and access.enforcement is AccessEnforcement.GUARD


def legacy_l7_enabled(app: CassandraCluster) -> bool:
    """Cilium's deprecated Cassandra parser enforces the rules (and no sidecar runs)."""
    access = app.spec.access
    return access.enabled and access.enforcement is AccessEnforcement.LEGACY_CILIUM_L7


def client_port(app: CassandraCluster) -> int:
    """The pod port clients connect to: the guard's when it runs, else Cassandra's (the same number)."""
    return GUARD_PORT if guard_enabled(app) else CQL_PORT


# --- the policy -----------------------------------------------------------------------------------

def policy_config_map_name(app: CassandraCluster) -> str:
    return f"{app.metadata.name}-cqlguard"


def superuser_rule() -> dict[str, Any]:
    """The superuser (and the default login until it is disabled) may do anything from the pod's loopback."""
    return {"name": SUPERUSER_RULE,
            "identities": {"cidrs": ["127.0.0.0/8"], "users": [SUPERUSER_USERNAME, _DEFAULT_ROLE]},
            "allow": [{"actions": [a.value for a in CqlAction if a is not CqlAction.USE], "tables": ["*.*"]}]}


def policy_yaml(app: CassandraCluster) -> str:
    """``policy.yaml`` for the guard: the spec's rules as the guard reads them, then :data:`SUPERUSER_RULE`."""
    names = [r["name"] for r in app.spec.access.rules]
    if SUPERUSER_RULE in names:
        raise RenderError(f"spec.access.rules: the name {SUPERUSER_RULE!r} is Isthmus's own rule; rename yours")
    document = app.spec.access.policy_document()
    document = {**document, "rules": [*document["rules"], superuser_rule()]}
    header = f"# Rendered by isthmus for {app.metadata.name}; edit spec.access.rules, not this file.\n"
    return header + dump_text(document)


def policy_config_map(app: CassandraCluster, *, labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": policy_config_map_name(app), "namespace": app.namespace, "labels": dict(labels)},
            "data": {"policy.yaml": policy_yaml(app)}}


# --- the pod --------------------------------------------------------------------------------------

def guarded_cassandra_yaml(text: str) -> str:
    """``cassandra.yaml`` with the native transport on loopback, still advertising the pod IP."""
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    doc = load_text(text)
    if doc.get("broadcast_rpc_address") != POD_IP_MARKER or doc.get("native_transport_port") != GUARD_PORT:
        raise RenderError("cassandra.yaml must advertise the pod IP on the CQL port for the guard to front it")
    doc["rpc_address"] = CASSANDRA_RPC_ADDRESS
    return header + dump_text(doc)


def _listen(ipv6: bool) -> str:
    # Kubernetes expands $(POD_IP) from the container's env; the guard wants IPv6 hosts in brackets.
    return f"[$(POD_IP)]:{GUARD_PORT}" if ipv6 else f"$(POD_IP):{GUARD_PORT}"


def guard_container(app: CassandraCluster, *, ipv6: bool = False) -> dict[str, Any]:
    """The ``cqlguard`` sidecar: POD_IP:9042 and 127.0.0.1:9042 in front of 127.0.0.2:9042, metrics on 9105."""
    probe = {"httpGet": {"path": "/metrics", "port": GUARD_METRICS_PORT}, "timeoutSeconds": 5}
    return {
        "name": GUARD_CONTAINER,
        "image": app.spec.access.guard_image or DEFAULT_GUARD_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["isthmus"],
        "args": ["guard", "run", "--listen", _listen(ipv6), "--listen", f"{GUARD_LOOPBACK}:{GUARD_PORT}",
                 "--upstream", f"{CASSANDRA_RPC_ADDRESS}:{CQL_PORT}",
                 "--policy", POLICY_PATH, "--flows", FLOWS_PATH,
                 "--flows-max-bytes", str(FLOWS_MAX_BYTES), "--metrics", f"0.0.0.0:{GUARD_METRICS_PORT}"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "cql", "containerPort": GUARD_PORT, "protocol": "TCP"},
                  {"name": "guard-metrics", "containerPort": GUARD_METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": dict(_GUARD_RESOURCES), "limits": dict(_GUARD_RESOURCES)},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 6, "initialDelaySeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": _POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True},
                         {"name": _FLOWS_VOLUME, "mountPath": FLOWS_DIR}],
    }


def _guard_volumes(app: CassandraCluster) -> list[dict[str, Any]]:
    return [{"name": _POLICY_VOLUME, "configMap": {"name": policy_config_map_name(app)}},
            {"name": _FLOWS_VOLUME, "emptyDir": {"sizeLimit": FLOWS_VOLUME_LIMIT}}]


def add_guard(app: CassandraCluster, pod_spec: Mapping[str, Any], *, ipv6: bool = False) -> dict[str, Any]:
    """A copy of ``pod_spec`` (first container: Cassandra) with the sidecar in front of it.

    The ``cql`` port leaves the Cassandra container (it listens on loopback) for the sidecar.
    """
    out = copy.deepcopy(dict(pod_spec))
    cassandra, *others = out["containers"]
    cassandra["ports"] = [p for p in cassandra.get("ports", []) if p["containerPort"] != CQL_PORT]
    out["containers"] = [cassandra, *others, guard_container(app, ipv6=ipv6)]
    out["volumes"] = [*out.get("volumes", []), *_guard_volumes(app)]
    return out


# --- the legacy Cilium form -----------------------------------------------------------------------

# Cilium's proxylib parser (proxylib/cassandra) knows these query_action values. Table actions
# match query_table, a Go regexp against "keyspace.table" (the keyspace of USE when unqualified);
# keyspace actions match it against the keyspace name (prefixed by the current keyspace, a quirk
# of the parser); the others take no query_table and are expressed only where cqlguard scopes them
# to nothing either (global actions), since dropping a table scope would widen access.
_CILIUM_TABLE_ACTIONS: Final = {
    CqlAction.SELECT: "select", CqlAction.INSERT: "insert", CqlAction.UPDATE: "update", CqlAction.DELETE: "delete",
    CqlAction.TRUNCATE: "truncate-table", CqlAction.CREATE_TABLE: "create-table", CqlAction.ALTER_TABLE: "alter-table",
    CqlAction.DROP_TABLE: "drop-table",
}
_CILIUM_KEYSPACE_ACTIONS: Final = {
    CqlAction.CREATE_KEYSPACE: "create-keyspace", CqlAction.ALTER_KEYSPACE: "alter-keyspace",
    CqlAction.DROP_KEYSPACE: "drop-keyspace",
}
_CILIUM_GLOBAL_ACTIONS: Final = {
    CqlAction.CREATE_ROLE: "create-role", CqlAction.ALTER_ROLE: "alter-role", CqlAction.DROP_ROLE: "drop-role",
    CqlAction.CREATE_USER: "create-user", CqlAction.ALTER_USER: "alter-user", CqlAction.DROP_USER: "drop-user",
    CqlAction.LIST_ROLES: "list-roles", CqlAction.LIST_USERS: "list-users",
    CqlAction.LIST_PERMISSIONS: "list-permissions",
}
# What cqlguard lets any identity read (policy.BUILTIN_RULE): drivers read these on connect.
_BUILTIN_L7: Final = (
    {"query_action": "select", "query_table": r"^system\.(local|peers|peers_v2)$"},
    {"query_action": "select", "query_table": r"^system_schema\.[^.]*$"},
    {"query_action": "select", "query_table": r"^system_virtual_schema\.[^.]*$"},
)


@dataclass(frozen=True)
class L7Grant:
    """One access rule in Cilium's terms: who (labels, CIDRs) may send which queries."""

    rule: str
    label_sets: tuple[tuple[tuple[str, str], ...], ...]
    cidrs: tuple[str, ...]
    l7: tuple[dict[str, str], ...]


def _regex(pattern: str) -> str:
    """A cqlguard name pattern as a regexp: ``*``/``?`` never cross a dot."""
    return "".join("[^.]*" if c == "*" else "[^.]" if c == "?" else re.escape(c) for c in pattern)


def _actions(names: Sequence[str]) -> list[CqlAction]:
    out: list[CqlAction] = []
    for name in names:
        for action in sorted(ACTION_GROUPS[name]) if name in ACTION_GROUPS else [CqlAction(name)]:
            if action not in out:
                out.append(action)
    return out


def _allowance_l7(where: str, allowance: Mapping[str, Any]) -> list[dict[str, str]]:
    tables: list[str] = list(allowance.get("tables", []))
    out: list[dict[str, str]] = []
    for action in _actions(allowance["actions"]):
        if action is CqlAction.USE:
            continue  # the parser never denies USE
        if action in _CILIUM_TABLE_ACTIONS:
            out += [{"query_action": _CILIUM_TABLE_ACTIONS[action],
                     "query_table": "^" + r"\.".join(_regex(p) for p in t.split(".")) + "$"} for t in tables]
        elif action in _CILIUM_KEYSPACE_ACTIONS:
            out += [{"query_action": _CILIUM_KEYSPACE_ACTIONS[action],
                     "query_table": r"^([^.]*\.)?" + _regex(t.split(".")[0]) + "$"}
                    for t in tables if t.split(".")[1] == "*"]
        elif action in _CILIUM_GLOBAL_ACTIONS:
            out.append({"query_action": _CILIUM_GLOBAL_ACTIONS[action]})
        else:
            raise RenderError(f"{where}: action {action.value!r} cannot be expressed by Cilium's legacy Cassandra "
                              "parser without widening it; drop it or use enforcement: guard")
    return out


def legacy_l7_grants(app: CassandraCluster) -> list[L7Grant]:
    """The access rules as Cilium L7 grants, for ``enforcement: legacyCiliumL7``.

    Cilium identifies clients by endpoint labels and addresses only: every rule needs
    ``clientLabels`` or ``identities.cidrs``, and may not name ``users`` or ``principals`` (dropping
    them would let more clients in than the rule does).
    """
    grants: list[L7Grant] = []
    for index, rule in enumerate(app.spec.access.rules):
        where = f"spec.access.rules[{index}] ({rule['name']})"
        identities = rule.get("identities") or {}
        unsupported = [k for k in ("users", "principals") if identities.get(k)]
        if unsupported:
            raise RenderError(f"{where}: Cilium's legacy Cassandra parser cannot match {' or '.join(unsupported)}; "
                              "identify the clients with clientLabels or identities.cidrs, or use enforcement: guard")
        # Cilium cannot AND pod labels with addresses: the clientLabels pods get the rule only when its
        # CIDRs (if any) cover every address; narrower CIDRs grant to those CIDRs alone (never wider
        # than the guard, which would check the pod's address against them).
        cidrs = tuple(str(c) for c in identities.get("cidrs", ()))
        labels = rule.get("clientLabels")
        anyone = not cidrs or any(c.endswith("/0") for c in cidrs)
        label_sets = (tuple(sorted(labels.items())),) if labels and anyone else ()
        if not (label_sets or cidrs):
            raise RenderError(f"{where}: the legacy Cilium form needs clientLabels or identities.cidrs to say "
                              "which clients the rule is for")
        l7: list[dict[str, str]] = [dict(b) for b in _BUILTIN_L7]
        for allowance in rule["allow"]:
            l7 += [r for r in _allowance_l7(where, allowance) if r not in l7]
        grants.append(L7Grant(str(rule["name"]), label_sets, cidrs, tuple(l7)))
    return grants
