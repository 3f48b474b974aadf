"""The configuration files a Cassandra pod mounts: ``cassandra.yaml`` and ``cassandra-rackdc.properties``.

``cassandra.yaml`` is one per datacenter (the seed list differs per datacenter); the pod's own IP
is written as the literal ``${POD_IP}``, which the pod's init container substitutes (see
``cassandra.py``), so the ConfigMap stays identical for every pod of the datacenter.
"""

from __future__ import annotations

from typing import Any

from ..spec.cassandra import CassandraCluster, Datacenter
from .seeds import seed_list
from .yamltext import dump_text

#: The role the app's superuser Secret names: the rollout creates it (isthmus.rollout.superuser).
SUPERUSER_USERNAME = "cassandra-admin"

__all__ = [
    "CQL_PORT",
    "DATA_DIR",
    "INTRA_NODE_PORT",
    "JMX_PORT",
    "POD_IP_MARKER",
    "TLS_INTRA_NODE_PORT",
    "cassandra_yaml",
    "rackdc_properties",
]

INTRA_NODE_PORT = 7000
TLS_INTRA_NODE_PORT = 7001
CQL_PORT = 9042
JMX_PORT = 7199
DATA_DIR = "/var/lib/cassandra"
POD_IP_MARKER = "${POD_IP}"

_HEADER = "# Rendered by isthmus for {app}/{dc}; edit the CassandraCluster spec, not this file.\n"


def _version(app: CassandraCluster) -> tuple[int, int]:
    major, minor, _patch = (int(p) for p in app.spec.version.split("."))
    return major, minor


def cassandra_yaml(app: CassandraCluster, dc: Datacenter, *, cluster_domain: str,
                   clusterset_domain: str) -> str:
    """``cassandra.yaml`` for every node of ``dc``; only options every release since 4.0 accepts."""
    seeds = ",".join(seed_list(app, dc, cluster_domain=cluster_domain, clusterset_domain=clusterset_domain))
    doc: dict[str, Any] = {
        "cluster_name": app.metadata.name,
        "num_tokens": app.spec.num_tokens,
        # Cassandra refuses to allocate a joining node's tokens when the datacenter counts fewer racks than this
        # (other than one): a datacenter of two racks allocates for 2. Three racks or more, or one: for 3.
        "allocate_tokens_for_local_replication_factor": 2 if len(dc.racks) == 2 else 3,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "endpoint_snitch": "GossipingPropertyFileSnitch",
        "seed_provider": [{
            "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
            # Values are strings: the provider reads a Map<String, String>.
            "parameters": [{"seeds": seeds, "resolve_multiple_ip_addresses_per_dns_record": "true"}],
        }],
        "authenticator": "PasswordAuthenticator",
        "authorizer": "CassandraAuthorizer",
        "role_manager": "CassandraRoleManager",
        "listen_address": POD_IP_MARKER,
        "rpc_address": "0.0.0.0",
        "broadcast_rpc_address": POD_IP_MARKER,
        "storage_port": INTRA_NODE_PORT,
        "native_transport_port": CQL_PORT,
        "start_native_transport": True,
        "data_file_directories": [f"{DATA_DIR}/data"],
        "commitlog_directory": f"{DATA_DIR}/commitlog",
        "hints_directory": f"{DATA_DIR}/hints",
        "saved_caches_directory": f"{DATA_DIR}/saved_caches",
        "cdc_raw_directory": f"{DATA_DIR}/cdc_raw",
        "commitlog_sync": "periodic",
    }
    # 4.1 renamed duration options (commitlog_sync_period_in_ms -> commitlog_sync_period: 10000ms);
    # 4.0 knows only the old name, later releases accept it with a deprecation warning.
    if _version(app) >= (4, 1):
        doc["commitlog_sync_period"] = "10000ms"
    else:
        doc["commitlog_sync_period_in_ms"] = 10000
    body = dump_text(doc)
    return _HEADER.format(app=app.metadata.name, dc=dc.name) + body


def rackdc_properties(dc: Datacenter, rack: str) -> str:
    """``cassandra-rackdc.properties`` for GossipingPropertyFileSnitch."""
    return f"dc={dc.name}\nrack={rack}\n"
