"""Rendering: spec in, per-cluster Kubernetes objects out, as a pure function.

Owns: turning an app spec (and the Fleet it lands in) into :class:`Manifests` — plain JSON-able
dicts per member cluster, their apply order, their YAML and their content hashes.
Must not: do I/O of any kind (no files, sockets, asyncio, subprocess, Kubernetes client), read
the clock or draw randomness. The same input renders the same bytes; secrets come in as
arguments. Applying, diffing and pruning belong to ``isthmus.kube``.
"""

from .cassandra import SUPERUSER_PASSWORD_PLACEHOLDER, SUPERUSER_USERNAME, render_cassandra
from .dispatch import RENDERERS, render
from .errors import RenderError
from .hashing import CONTENT_HASH_ANNOTATION, content_hash
from .manifests import ApplyPhase, Manifests, apply_rank

__all__ = [
    "CONTENT_HASH_ANNOTATION",
    "RENDERERS",
    "SUPERUSER_PASSWORD_PLACEHOLDER",
    "SUPERUSER_USERNAME",
    "ApplyPhase",
    "Manifests",
    "RenderError",
    "apply_rank",
    "content_hash",
    "render",
    "render_cassandra",
]

# Connecting the clusters (Cilium, Istio, discovery, policy, firewall, mesh checks).
from .cilium import CiliumCA, cilium_values, render_cilium
from .discovery import client_addresses, render_discovery
from .firewall import FirewallReport, firewall_rules
from .istio import IstioIntermediateCA, render_istio
from .meshcheck import MeshCheckError, check_mesh, require_mesh_fit
from .netpolicy import render_policies

__all__ += [
    "CiliumCA",
    "FirewallReport",
    "IstioIntermediateCA",
    "MeshCheckError",
    "check_mesh",
    "cilium_values",
    "client_addresses",
    "firewall_rules",
    "render_cilium",
    "render_discovery",
    "render_istio",
    "render_policies",
    "require_mesh_fit",
]
