"""Rendering the small configuration files of a lab Cassandra node.

Owns: :class:`LabCassandraYaml`, the parameters of a minimal ``cassandra.yaml`` sized for a
2-core machine, and pure functions that render it, ``cassandra-rackdc.properties`` for
GossipingPropertyFileSnitch, and a console-only ``logback.xml``.
Must not: write files or start processes; callers decide where the text goes.

The rendered yaml uses Cassandra 5.0's unit-suffixed option names (``10000ms``, ``8MiB``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Authenticator",
    "Authorizer",
    "LabCassandraYaml",
    "render_cassandra_yaml",
    "render_logback_xml",
    "render_rackdc_properties",
]


class Authenticator(enum.Enum):
    """Who may log in: anyone, or roles with passwords (default superuser cassandra/cassandra)."""

    ALLOW_ALL = "AllowAllAuthenticator"
    PASSWORD = "PasswordAuthenticator"


class Authorizer(enum.Enum):
    """What a logged-in role may do: anything, or what it was granted."""

    ALLOW_ALL = "AllowAllAuthorizer"
    CASSANDRA = "CassandraAuthorizer"


@dataclass(frozen=True)
class LabCassandraYaml:
    """Everything that differs between lab nodes; the rest is fixed small-machine tuning.

    ``storage_dir`` holds data, commit log, hints, saved caches and CDC folders.
    ``seeds`` are listen addresses (``storage_port`` is appended).
    """

    cluster_name: str
    listen_address: str
    seeds: tuple[str, ...]
    storage_dir: Path
    rpc_address: str | None = None
    native_transport_port: int = 9042
    storage_port: int = 7000
    num_tokens: int = 16
    authenticator: Authenticator = Authenticator.ALLOW_ALL
    authorizer: Authorizer = Authorizer.ALLOW_ALL
    auto_bootstrap: bool = False
    extra: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a lab cassandra.yaml needs at least one seed")
        if not self.listen_address.startswith("127."):
            raise ValueError(f"lab nodes listen on 127.0.0.0/8 only, not {self.listen_address!r}")


def render_cassandra_yaml(cfg: LabCassandraYaml) -> str:
    """A minimal ``cassandra.yaml`` for one lab node (GossipingPropertyFileSnitch, small pools)."""
    store = cfg.storage_dir
    seeds = ",".join(f"{s}:{cfg.storage_port}" for s in cfg.seeds)
    doc: dict[str, Any] = {
        "cluster_name": cfg.cluster_name,
        "num_tokens": cfg.num_tokens,
        "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
        "auto_bootstrap": cfg.auto_bootstrap,
        "authenticator": cfg.authenticator.value,
        "authorizer": cfg.authorizer.value,
        "role_manager": "CassandraRoleManager",
        "network_authorizer": "AllowAllNetworkAuthorizer",
        "data_file_directories": [str(store / "data")],
        "commitlog_directory": str(store / "commitlog"),
        "hints_directory": str(store / "hints"),
        "saved_caches_directory": str(store / "saved_caches"),
        "cdc_raw_directory": str(store / "cdc_raw"),
        "commitlog_sync": "periodic",
        "commitlog_sync_period": "10000ms",
        "commitlog_segment_size": "8MiB",
        "seed_provider": [
            {
                "class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                "parameters": [{"seeds": seeds}],
            }
        ],
        "listen_address": cfg.listen_address,
        "rpc_address": cfg.rpc_address or cfg.listen_address,
        "storage_port": cfg.storage_port,
        "native_transport_port": cfg.native_transport_port,
        "start_native_transport": True,
        "endpoint_snitch": "GossipingPropertyFileSnitch",
        # A 2-core machine: small thread pools, one compactor, one flusher.
        "concurrent_reads": 4,
        "concurrent_writes": 4,
        "concurrent_counter_writes": 4,
        "concurrent_materialized_view_writes": 2,
        "concurrent_compactors": 1,
        "memtable_flush_writers": 1,
        "native_transport_max_threads": 32,
        "compaction_throughput": "64MiB/s",
        "auto_snapshot": False,
        "cdc_enabled": False,
    }
    doc.update(dict(cfg.extra))
    header = "# Rendered by isthmus.lab.cassandra_config for a lab node; edit the caller, not this file.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def render_rackdc_properties(datacenter: str, rack: str = "rack1", *, prefer_local: bool = False) -> str:
    """``cassandra-rackdc.properties`` for GossipingPropertyFileSnitch."""
    for name, value in (("datacenter", datacenter), ("rack", rack)):
        if not value or any(c.isspace() or c in "=:#" for c in value):
            raise ValueError(f"{name} {value!r} must be a non-empty word")
    lines = [f"dc={datacenter}", f"rack={rack}"]
    if prefer_local:
        lines.append("prefer_local=true")
    return "\n".join(lines) + "\n"


def render_logback_xml(level: str = "INFO") -> str:
    """A logback config that logs to the console only (the supervisor sends it to the node's log)."""
    return f"""<configuration scan="false">
  <shutdownHook class="ch.qos.logback.core.hook.DefaultShutdownHook"/>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.cassandra" level="{level}"/>
  <root level="{level}">
    <appender-ref ref="STDOUT"/>
  </root>
</configuration>
"""
