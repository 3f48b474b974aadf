"""Rendering a CassandraCluster into the Kubernetes objects of each member cluster.

Owns: what a Cassandra datacenter looks like in Kubernetes — one StatefulSet per rack pinned to
its zone, headless Services for pod DNS and seeds, a client Service, a PodDisruptionBudget, the
configuration, the superuser Secret — and the labels and hashes that tie them together.
Must not: do I/O, read the clock or draw randomness. Equal inputs give equal output, byte for
byte; the caller passes anything secret (the superuser password).

Per member cluster (once, however many datacenters it hosts): Namespace, ServiceAccount, Secret.
Per datacenter, in its cluster: a ConfigMap (``cassandra.yaml`` plus one
``cassandra-rackdc.<rack>.properties`` key per rack; each StatefulSet mounts its rack's key as
``cassandra-rackdc.properties``), Services ``-all``, ``-seeds`` and ``-client``, a StatefulSet per
rack and a PodDisruptionBudget. The seed design is in :mod:`isthmus.render.seeds`.

How the pod gets its configuration: an init container (same image) copies the image's default
``/etc/cassandra`` (JVM options, logback) into an ``emptyDir``, overlays the ConfigMap's files and
substitutes the pod IP for ``${POD_IP}``. The main container mounts that ``emptyDir`` at
``/etc/cassandra`` and runs ``cassandra -f`` directly as the image's ``cassandra`` user (uid 999):
the image's entrypoint would rewrite ``cassandra.yaml`` from ``CASSANDRA_*`` variables, including
replacing the seed list with the pod's own IP when ``CASSANDRA_SEEDS`` is unset.

How a pod whose volume was lost comes back as the node it was (``replace_address_first_boot``)
===========================================================================================
Cassandra 5.0 refuses an empty node at an address the ring knows ("A node with address X already
exists, cancelling join. Use cassandra.replace_address..."), and an empty node at a new address joins
as a new node, leaving the old one DN for ever (a ghost that blocks every gate). So the rollout records
each node's address as the ring sees it (UN, in its own view) in a per-datacenter ConfigMap
``<app>-<dc>-identities`` (pod name -> address; :mod:`isthmus.rollout.identities` writes it, render never
does, and the pods mount it ``optional``). The init container also mounts the data volume. When the
ConfigMap names an address for this pod (``POD_NAME``, from the downward API) and the volume holds no data
(``data/`` missing or empty), the pod is a replacement: the init container appends
``-Dcassandra.replace_address_first_boot=<address>`` to the staged ``jvm-server.options`` and leaves the
pod's own name out of its seed list: Cassandra replaces only by bootstrapping, and a node that finds itself
among its seeds never bootstraps (``Replacing a node without bootstrapping risks invalidating consistency``).
A marker file on the volume (:data:`REPLACING_MARKER`) keeps a replacement that was interrupted (its
volume no longer empty) a replacement on the next start; the readiness probe removes it once the node
serves CQL, which it does only after the replacement finished. A brand-new pod (first deploy, scale-up) has
no entry and bootstraps as usual; a node that still has its data keeps its identity (the flag is not given,
and Cassandra ignores it anyway once a node has bootstrapped).
A datacenter added to a running ring (:mod:`isthmus.rollout.datacenters`) has the key ``no-bootstrap`` in
that ConfigMap until it is rebuilt: a pod with no data and no address to replace then starts with
``-Dcassandra.auto_bootstrap=false`` (its data comes from ``nodetool rebuild``, not bootstrap streaming).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..spec.cassandra import CassandraCluster, Datacenter, Rack
from ..spec.fleet import Fleet, IPFamily, Mesh
from .access import add_guard, guard_enabled, guarded_cassandra_yaml, policy_config_map
from .cassandra_config import (
    CQL_PORT,
    DATA_DIR,
    INTRA_NODE_PORT,
    JMX_PORT,
    SUPERUSER_USERNAME,
    TLS_INTRA_NODE_PORT,
    cassandra_yaml,
    rackdc_properties,
)
from .errors import RenderError
from .hashing import digest, stamp
from .manifests import Manifests
from .naming import CassandraNames
from .quantities import heap_settings
from .seeds import DEFAULT_CLUSTER_DOMAIN, DEFAULT_CLUSTERSET_DOMAIN, remote_seeds, seed_racks

__all__ = [
    "CILIUM_GLOBAL_ANNOTATION",
    "CILIUM_SHARED_ANNOTATION",
    "CONFIG_HASH_ANNOTATION",
    "DRAIN_GRACE_SECONDS",
    "POD_INDEX_LABEL",
    "REPLACING_MARKER",
    "SEED_RACK_LABEL",
    "SUPERUSER_PASSWORD_PLACEHOLDER",
    "SUPERUSER_USERNAME",
    "render_cassandra",
]

# The applier replaces this value with the real password (read from the live Secret or generated
# outside render) and ``diff`` masks it; render never invents a password.
SUPERUSER_PASSWORD_PLACEHOLDER = "@@isthmus:superuser-password@@"

CONFIG_HASH_ANNOTATION = "isthmus.dev/config-hash"
SEED_RACK_LABEL = "isthmus.dev/seed-rack"
# Set by the StatefulSet controller on every pod (PodIndexLabel, on by default since 1.28).
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
CILIUM_GLOBAL_ANNOTATION = "service.cilium.io/global"
CILIUM_SHARED_ANNOTATION = "service.cilium.io/shared"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"

# Long enough for `nodetool drain` (flush memtables, stop accepting writes) on a loaded node.
DRAIN_GRACE_SECONDS = 1800
CASSANDRA_UID = 999  # the `cassandra` user of the official image
CONFIG_MOUNT = "/isthmus"
CONF_STAGING = "/conf"

IDENTITY_MOUNT = "/isthmus-identity"
#: On the data volume while the node there replaces its dead predecessor (see the module docstring).
REPLACING_MARKER = f"{DATA_DIR}/.isthmus-replacing"

_INIT_SCRIPT = f"""set -eu
cp -R /etc/cassandra/. {CONF_STAGING}/
sed "s|\\${{POD_IP}}|${{POD_IP}}|g" {CONFIG_MOUNT}/cassandra.yaml > {CONF_STAGING}/cassandra.yaml
cp {CONFIG_MOUNT}/cassandra-rackdc.properties {CONF_STAGING}/cassandra-rackdc.properties
old=""
if [ -f "{IDENTITY_MOUNT}/$POD_NAME" ]; then old=$(cat "{IDENTITY_MOUNT}/$POD_NAME"); fi
case "$old" in *[!0-9A-Fa-f.:]*) echo "isthmus: {IDENTITY_MOUNT}/$POD_NAME is not an address: $old" >&2; exit 1;; esac
if [ -n "$old" ] && {{ [ -f {REPLACING_MARKER} ] || [ -z "$(ls -A {DATA_DIR}/data 2>/dev/null)" ]; }}; then
  echo "$old" > {REPLACING_MARKER}
  echo "-Dcassandra.replace_address_first_boot=$old" >> {CONF_STAGING}/jvm-server.options
  self=$(echo "$POD_NAME$SEED_SUFFIX" | sed 's/[.]/[.]/g')
  sed -i -e "s/$self,//" -e "s/,$self//" {CONF_STAGING}/cassandra.yaml
  echo "isthmus: $POD_NAME has no data: it replaces $old and leaves itself out of its seed list" >&2
elif [ -z "$old" ] && [ -f "{IDENTITY_MOUNT}/no-bootstrap" ] && [ -z "$(ls -A {DATA_DIR}/data 2>/dev/null)" ]; then
  echo "-Dcassandra.auto_bootstrap=false" >> {CONF_STAGING}/jvm-server.options
  echo "isthmus: $POD_NAME joins a new datacenter of a running ring: no bootstrap (it is rebuilt)" >&2
fi
"""

# Readiness means "this node serves CQL". `nodetool statusbinary` asks the node itself (over local
# JMX) whether its native transport is running; it prints "running" or "not running", so the
# output is compared whole (a grep for "running" would match both). A tcpSocket probe on 9042 is
# not used: the kubelet's connect proves only that something accepts on the port, and the check
# must be the node's own answer. `nodetool status` is no substitute either: it reports UN before
# the CQL port opens. Costs a short-lived JVM per probe, hence the 15s period.
# Once it serves, a replacement is over: the probe removes the marker that kept it one (see the module docstring).
_READY_COMMAND = ["/bin/sh", "-c",
                  f'test "$(nodetool statusbinary 2>/dev/null)" = running && rm -f {REPLACING_MARKER}']
# Liveness is lenient: it asks only that the JVM answers JMX (`nodetool version`), which holds
# through commit-log replay, bootstrap streaming and compaction storms, and allows 5 minutes of
# silence before a restart. JMX listens on localhost only, so it must be an exec, not tcpSocket.
# The startup probe gives a fresh JVM 15 minutes to open JMX before liveness starts counting.
_ALIVE_COMMAND = ["nodetool", "version"]


def _base_labels(app: CassandraCluster) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "cassandra",
        "app.kubernetes.io/instance": app.metadata.name,
        "app.kubernetes.io/managed-by": "isthmus",
        "app.kubernetes.io/version": app.spec.version,
        "isthmus.dev/app": app.metadata.name,
    }


def _selector(app: CassandraCluster, dc: Datacenter | None = None,
              rack: Rack | None = None) -> dict[str, str]:
    """Immutable identity labels: what selectors, PVC templates and anti-affinity use (never the version)."""
    sel = {"app.kubernetes.io/name": "cassandra", "app.kubernetes.io/instance": app.metadata.name}
    if dc is not None:
        sel["isthmus.dev/datacenter"] = dc.name
    if rack is not None:
        sel["isthmus.dev/rack"] = rack.name
    return sel


def _claim_labels(app: CassandraCluster, dc: Datacenter, rack: Rack) -> dict[str, str]:
    """Claims outlive their StatefulSet; these labels let ``delete --delete-volumes`` find them as ours."""
    return {**_selector(app, dc, rack), "isthmus.dev/app": app.metadata.name, "app.kubernetes.io/managed-by": "isthmus"}


def _labels(app: CassandraCluster, dc: Datacenter | None = None, rack: Rack | None = None) -> dict[str, str]:
    return {**_base_labels(app), **_selector(app, dc, rack)}


def _meta(name: str, app: CassandraCluster, labels: dict[str, str],
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": app.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": port, "protocol": "TCP"}


_INIT_RESOURCES = {"cpu": "100m", "memory": "64Mi"}
_INTRA = ("intra-node", INTRA_NODE_PORT)
_TLS = ("tls-intra-node", TLS_INTRA_NODE_PORT)
_CQL = ("cql", CQL_PORT)
_JMX = ("jmx", JMX_PORT)


# --- per member cluster -------------------------------------------------------------------------

def _namespace(app: CassandraCluster) -> dict[str, Any]:
    # Only the manager label: several apps may share a namespace and must render it identically.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": app.namespace, "labels": {"app.kubernetes.io/managed-by": "isthmus"}}}


def _service_account(app: CassandraCluster, names: CassandraNames) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(names.service_account, app, _labels(app)),
            "automountServiceAccountToken": False}


def _superuser_secret(app: CassandraCluster, names: CassandraNames, password: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": _meta(names.superuser_secret, app, _labels(app)),
            "stringData": {"username": SUPERUSER_USERNAME, "password": password}}


# --- per datacenter -----------------------------------------------------------------------------

def _rack_key(rack: Rack) -> str:
    return f"cassandra-rackdc.{rack.name}.properties"


def _config_data(app: CassandraCluster, dc: Datacenter, *, cluster_domain: str,
                 clusterset_domain: str) -> dict[str, str]:
    data = {"cassandra.yaml": cassandra_yaml(app, dc, cluster_domain=cluster_domain,
                                             clusterset_domain=clusterset_domain)}
    if guard_enabled(app):  # CQL on loopback behind the guard (render.access)
        data["cassandra.yaml"] = guarded_cassandra_yaml(data["cassandra.yaml"])
    for rack in dc.racks:
        data[_rack_key(rack)] = rackdc_properties(dc, rack.name)
    return data


def _config_map(app: CassandraCluster, names: CassandraNames, dc: Datacenter,
                data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(names.config_map(dc.name), app, _labels(app, dc)), "data": data}


def _services(app: CassandraCluster, names: CassandraNames, dc: Datacenter,
              mesh: Mesh) -> list[dict[str, Any]]:
    sel = _selector(app, dc)
    labels = _labels(app, dc)
    all_pods = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(names.all_service(dc.name), app, labels),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel,
                 "ports": [_port(*_INTRA), _port(*_TLS), _port(*_CQL)]},
    }
    seeds = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(names.seed_service(dc.name), app, labels),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {**sel, SEED_RACK_LABEL: "true", POD_INDEX_LABEL: "0"},
                 "ports": [_port(*_INTRA), _port(*_TLS)]},
    }
    global_service = mesh in (Mesh.CILIUM, Mesh.BOTH)
    annotations = ({CILIUM_GLOBAL_ANNOTATION: "true", CILIUM_SHARED_ANNOTATION: "true"}
                   if global_service else None)
    client = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(names.client_service(dc.name), app, labels, annotations),
        "spec": {"type": "ClusterIP", "selector": sel, "ports": [_port(*_CQL)]},
    }
    return [all_pods, seeds, client]


def _disruption_budget(app: CassandraCluster, names: CassandraNames, dc: Datacenter) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(names.disruption_budget(dc.name), app, _labels(app, dc)),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(app, dc)}}}


def _affinity(app: CassandraCluster, rack: Rack) -> dict[str, Any]:
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": [rack.zone]}]},
        ]}},
        # Required, across every rack and datacenter of this app: two of its nodes never share a machine.
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": _selector(app)}, "topologyKey": HOSTNAME_LABEL},
        ]},
    }


def _exec_probe(command: list[str], *, period: int, timeout: int, failures: int,
                delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {"exec": {"command": command}, "periodSeconds": period,
                             "timeoutSeconds": timeout, "failureThreshold": failures, "successThreshold": 1}
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _statefulset(app: CassandraCluster, names: CassandraNames, dc: Datacenter, rack: Rack, replicas: int,
                 config: dict[str, str], *, seed: bool, cluster_domain: str, ipv6: bool = False,
                 remote: Sequence[str] = ()) -> dict[str, Any]:
    spec = app.spec
    res = spec.resources
    heap = heap_settings(memory=res.memory, cpu=res.cpu, heap=res.heap)
    image = spec.image or f"cassandra:{spec.version}"
    mounted = {"cassandra.yaml": config["cassandra.yaml"],
               "cassandra-rackdc.properties": config[_rack_key(rack)]}
    # The remote seed names are read only when a node starts, and gossip knows the ring's datacenters: a
    # datacenter added or removed elsewhere changes them, which must not restart this one's nodes (the
    # ConfigMap has them for the next start). So the pods' config hash leaves them out.
    yaml_hashed = config["cassandra.yaml"]
    for name in remote:
        yaml_hashed = yaml_hashed.replace(f",{name}", "")
    hashed = {**mounted, "cassandra.yaml": yaml_hashed}
    pod_labels = _labels(app, dc, rack)
    if seed:
        pod_labels[SEED_RACK_LABEL] = "true"
    resources = {"cpu": res.cpu, "memory": res.memory}
    init = {
        "name": "config", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", _INIT_SCRIPT],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                # What follows the pod's name in its own seed name (render.seeds), to leave it out when replacing.
                {"name": "SEED_SUFFIX",
                 "value": f".{names.all_service(dc.name)}.{app.namespace}.svc.{cluster_domain}"}],
        # requests = limits keeps the pod in the Guaranteed QoS class.
        "resources": {"requests": dict(_INIT_RESOURCES), "limits": dict(_INIT_RESOURCES)},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
                         {"name": "identity", "mountPath": IDENTITY_MOUNT, "readOnly": True},
                         {"name": "data", "mountPath": DATA_DIR},
                         {"name": "conf", "mountPath": CONF_STAGING}],
    }
    container = {
        "name": "cassandra", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["cassandra", "-f"],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MAX_HEAP_SIZE", "value": heap.max_heap},
            {"name": "HEAP_NEWSIZE", "value": heap.new_size},
        ],
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in (_INTRA, _TLS, _CQL, _JMX)],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "readinessProbe": _exec_probe(_READY_COMMAND, period=15, timeout=15, failures=3, delay=20),
        "startupProbe": _exec_probe(_ALIVE_COMMAND, period=10, timeout=15, failures=90),
        "livenessProbe": _exec_probe(_ALIVE_COMMAND, period=30, timeout=20, failures=10),
        "lifecycle": {"preStop": {"exec": {"command": ["nodetool", "drain"]}}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR},
                         {"name": "conf", "mountPath": "/etc/cassandra"}],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": names.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": DRAIN_GRACE_SECONDS,
        "securityContext": {"runAsUser": CASSANDRA_UID, "runAsGroup": CASSANDRA_UID,
                            "runAsNonRoot": True, "fsGroup": CASSANDRA_UID,
                            "fsGroupChangePolicy": "OnRootMismatch"},
        "affinity": _affinity(app, rack),
        "initContainers": [init],
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": names.config_map(dc.name), "items": [
                {"key": "cassandra.yaml", "path": "cassandra.yaml"},
                {"key": _rack_key(rack), "path": "cassandra-rackdc.properties"},
            ]}},
            # Written by the rollout (rollout.identities), absent until it has seen the ring: optional.
            {"name": "identity", "configMap": {"name": names.identities(dc.name), "optional": True}},
            {"name": "conf", "emptyDir": {}},
        ],
    }
    if guard_enabled(app):
        pod_spec = add_guard(app, pod_spec, ipv6=ipv6)
    claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                  "resources": {"requests": {"storage": spec.storage.size}}}
    if spec.storage.storage_class_name:
        claim_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(names.statefulset(dc.name, rack.name), app, _labels(app, dc, rack)),
        "spec": {
            "serviceName": names.all_service(dc.name),
            "replicas": replicas,
            # Pods deleted together start together: a rack restarts at once when the ring's replication allows
            # it (rollout.rackrolling, which also raises the replicas one at a time so nodes join one by one).
            "podManagementPolicy": "Parallel",
            # The rollout work drives the partition; render always asks for the whole set.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "selector": {"matchLabels": _selector(app, dc, rack)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: digest(hashed)}},
                "spec": pod_spec,
            },
            # Immutable once created: identity labels only, so a version bump never touches it.
            "volumeClaimTemplates": [{
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "labels": _claim_labels(app, dc, rack)},
                "spec": claim_spec,
            }],
        },
    }


def _check_placement(app: CassandraCluster, fleet: Fleet) -> None:
    clusters = {c.name: c for c in fleet.spec.clusters}
    for dc in app.spec.datacenters:
        cluster = clusters.get(dc.cluster)
        if cluster is None:
            raise RenderError(f"datacenter {dc.name!r} names cluster {dc.cluster!r}, which Fleet "
                              f"{fleet.metadata.name!r} does not have ({', '.join(clusters)})")
        for rack in dc.racks:
            if rack.zone not in cluster.zone_names:
                zones = ", ".join(cluster.zone_names)
                raise RenderError(f"rack {rack.name!r} of datacenter {dc.name!r} is pinned to zone "
                                  f"{rack.zone!r}, not one of cluster {cluster.name!r}'s zones ({zones})")


def render_cassandra(
    app: CassandraCluster,
    fleet: Fleet,
    *,
    superuser_password: str | None = None,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
    clusterset_domain: str = DEFAULT_CLUSTERSET_DOMAIN,
    mesh: Mesh | None = None,
) -> Manifests:
    """Every object of ``app``, in the member cluster each belongs to.

    ``superuser_password=None`` renders :data:`SUPERUSER_PASSWORD_PLACEHOLDER` for the applier
    to fill in. ``mesh`` defaults to the Fleet's ``spec.network.mesh``; ``cluster_domain`` names
    local Service DNS, ``clusterset_domain`` the mesh-wide DNS of the remote seed Services.
    """
    _check_placement(app, fleet)
    mesh = fleet.spec.network.mesh if mesh is None else mesh
    names = CassandraNames(app.metadata.name, app.namespace)
    password = SUPERUSER_PASSWORD_PLACEHOLDER if superuser_password is None else superuser_password
    ip_families = {c.name: c.ip_family for c in fleet.spec.clusters}
    pairs: list[tuple[str, dict[str, Any]]] = []
    for cluster in app.member_clusters():
        secret = _superuser_secret(app, names, password)
        # The hash covers the placeholder, never the password: an annotation must not leak it.
        masked = _superuser_secret(app, names, SUPERUSER_PASSWORD_PLACEHOLDER)
        pairs += [(cluster, stamp(_namespace(app))), (cluster, stamp(_service_account(app, names))),
                  (cluster, stamp(secret, hashed_as=masked))]
        if guard_enabled(app):
            pairs.append((cluster, stamp(policy_config_map(app, labels=_labels(app)))))
    for dc in app.spec.datacenters:
        config = _config_data(app, dc, cluster_domain=cluster_domain, clusterset_domain=clusterset_domain)
        objects = [_config_map(app, names, dc, config), *_services(app, names, dc, mesh),
                   _disruption_budget(app, names, dc)]
        seeds = set(seed_racks(dc))
        sizes = dc.rack_sizes()
        ipv6 = ip_families[dc.cluster] is IPFamily.IPV6
        remote = remote_seeds(app, dc, clusterset_domain=clusterset_domain)
        objects += [_statefulset(app, names, dc, rack, sizes[rack.name], config, seed=rack.name in seeds,
                                 cluster_domain=cluster_domain, ipv6=ipv6, remote=remote)
                    for rack in dc.racks]
        pairs += [(dc.cluster, stamp(obj)) for obj in objects]
    return Manifests.build(pairs)
