"""The user's spec: pydantic models for each document kind, YAML loading, located errors.

Owns: what a valid spec is, and telling the user precisely where one is not.
Must not: plan, render or talk to any cluster; no I/O beyond reading the spec files it is given.
"""

from ._base import API_VERSION
from .apps import KINDS, App, register_kind
from .cassandra import CassandraCluster, CassandraSpec, Datacenter, Rack
from .charts import ChartRelease, ChartReleaseSpec, ClusterRolloutStrategy, bind_release, merge_values
from .consistency import check_consistency, require_fleet
from .errors import Problem, SpecError
from .fleet import (
    ClusterSpec,
    Encryption,
    Fleet,
    FleetSpec,
    IPFamily,
    Mesh,
    NetworkSpec,
    RoutingMode,
    TunnelProtocol,
)
from .keyspaces import Consistency, Keyspace
from .loading import Document, SpecSet, load_file, load_files, load_text
from .schema import json_schema

__all__ = [
    "API_VERSION",
    "KINDS",
    "App",
    "CassandraCluster",
    "CassandraSpec",
    "ChartRelease",
    "ChartReleaseSpec",
    "ClusterRolloutStrategy",
    "ClusterSpec",
    "Consistency",
    "Datacenter",
    "Document",
    "Encryption",
    "Fleet",
    "FleetSpec",
    "IPFamily",
    "Keyspace",
    "Mesh",
    "NetworkSpec",
    "Problem",
    "Rack",
    "RoutingMode",
    "SpecError",
    "SpecSet",
    "TunnelProtocol",
    "bind_release",
    "check_consistency",
    "json_schema",
    "load_file",
    "load_files",
    "load_text",
    "merge_values",
    "register_kind",
    "require_fleet",
]
