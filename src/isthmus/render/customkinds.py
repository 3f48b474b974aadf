"""The custom resource kinds Isthmus renders, and the CustomResourceDefinition each one needs. Pure.

Owns: one table, :data:`CUSTOM_KINDS`, saying for every CRD-backed kind that a renderer may emit
its group, version, plural and scope, which project defines it and how a user installs it; and
:func:`required_kinds`, the kinds a set of objects needs that the set does not define itself.
``isthmus.kube`` reads the table to type these objects at its boundary and to refuse, before any
write, a member that does not serve one of them.
Must not: talk to a cluster, or decide whether an object is rendered (each renderer does that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["CUSTOM_KINDS", "CustomKind", "custom_kind", "required_kinds"]

_MCS_FIX: Final = ("install the MCS API CRDs from sigs.k8s.io/mcs-api (config/crd), or let the mesh install them "
                   "(Cilium: clustermesh.mcsapi.enabled=true, see `isthmus mesh render`)")
_ISTIO_FIX: Final = "install Istio's CRDs (the istio/base Helm chart) in that cluster"
_CILIUM_FIX: Final = "install Cilium in that cluster (its agent registers the cilium.io CRDs)"


@dataclass(frozen=True)
class CustomKind:
    """A kind served by a CustomResourceDefinition rather than by Kubernetes itself."""

    group: str
    version: str
    kind: str
    plural: str
    project: str
    """Who defines the kind, for people (``the MCS API``)."""
    fix: str
    """How to make a cluster serve it, one clause."""
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        """The name of the CustomResourceDefinition object (``<plural>.<group>``)."""
        return f"{self.plural}.{self.group}"


def _table(*kinds: CustomKind) -> Mapping[tuple[str, str], CustomKind]:
    return {(k.api_version, k.kind): k for k in kinds}


CUSTOM_KINDS: Final[Mapping[tuple[str, str], CustomKind]] = _table(
    CustomKind("multicluster.x-k8s.io", "v1alpha1", "ServiceExport", "serviceexports", "the MCS API", _MCS_FIX),
    CustomKind("multicluster.x-k8s.io", "v1alpha1", "ServiceImport", "serviceimports", "the MCS API", _MCS_FIX),
    CustomKind("networking.istio.io", "v1", "DestinationRule", "destinationrules", "Istio", _ISTIO_FIX),
    CustomKind("networking.istio.io", "v1", "Gateway", "gateways", "Istio", _ISTIO_FIX),
    CustomKind("security.istio.io", "v1", "PeerAuthentication", "peerauthentications", "Istio", _ISTIO_FIX),
    CustomKind("security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies", "Istio", _ISTIO_FIX),
    CustomKind("cilium.io", "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies", "Cilium", _CILIUM_FIX),
)


def custom_kind(obj: Mapping[str, Any]) -> CustomKind | None:
    """The table's entry for ``obj``'s kind; None for a built-in kind (or one Isthmus never renders)."""
    return CUSTOM_KINDS.get((str(obj.get("apiVersion", "")), str(obj.get("kind", ""))))


def required_kinds(objects: Iterable[Mapping[str, Any]]) -> tuple[CustomKind, ...]:
    """The custom kinds ``objects`` use whose CRD they do not carry themselves, in a stable order."""
    objects = list(objects)
    defined = {str(o.get("metadata", {}).get("name", "")) for o in objects
               if o.get("kind") == "CustomResourceDefinition"}
    needed = {k for o in objects if (k := custom_kind(o)) is not None and k.crd_name not in defined}
    return tuple(sorted(needed, key=lambda k: k.crd_name))
