"""The user's spec: pydantic models for each document kind, YAML loading, located errors.

Owns: what a valid spec is, and telling the user precisely where one is not.
Must not: plan, render or talk to any cluster; no I/O beyond reading the spec files it is given.
"""

from ._base import API_VERSION
from .apps import KINDS, App, register_kind
from .cassandra import CassandraCluster, CassandraSpec, Datacenter, Rack
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
from .loading import Document, SpecSet, load_file, load_files, load_text
from .schema import json_schema

__all__ = [
    "API_VERSION",
    "KINDS",
    "App",
    "CassandraCluster",
    "CassandraSpec",
    "ClusterSpec",
    "Datacenter",
    "Document",
    "Encryption",
    "Fleet",
    "FleetSpec",
    "IPFamily",
    "Mesh",
    "NetworkSpec",
    "Problem",
    "Rack",
    "RoutingMode",
    "SpecError",
    "SpecSet",
    "TunnelProtocol",
    "check_consistency",
    "json_schema",
    "load_file",
    "load_files",
    "load_text",
    "register_kind",
    "require_fleet",
]
