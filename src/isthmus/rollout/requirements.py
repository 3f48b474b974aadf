"""What every member must serve before a rollout writes anything: the custom kinds of its objects.

A member without the CRD of a kind the app's manifests use (the MCS ``ServiceExport`` that
makes ``clusterset.local`` names resolve, an Istio ``DestinationRule``) would take the first
objects of a rollout and fail on that one, leaving the app half applied. So the rollout asks
every member it will write to first, and refuses with one line naming each cluster, each
missing CRD and how to install it (exit code 2). A member that does not answer is not judged
here: the rollout's own reachability handling decides about it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UserError
from ..kube import ClusterRegistry, Reach, absent_kinds, across
from ..render import Manifests
from ..render.customkinds import CustomKind, required_kinds

__all__ = ["MissingCRD", "missing_crd_message", "require_custom_kinds"]


class MissingCRD(UserError):
    """A member cluster lacks a CustomResourceDefinition the app's objects need; nothing was written."""


def missing_crd_message(app: str, absent: dict[str, tuple[CustomKind, ...]]) -> str:
    """One line: per cluster, the CRDs it lacks and how to install each."""
    parts = []
    for cluster in sorted(absent):
        kinds = absent[cluster]
        crds = ", ".join(f"{k.crd_name} ({k.kind}, {k.project})" for k in kinds)
        fixes = "; ".join(dict.fromkeys(k.fix for k in kinds))
        parts.append(f"cluster {cluster} lacks the CustomResourceDefinition {crds}: {fixes}")
    return f"app {app}: " + "; ".join(parts) + "; nothing was applied"


async def require_custom_kinds(registry: ClusterRegistry, members: Iterable[str], manifests: Manifests,
                               *, app: str, fresh_for: float = 0.0) -> None:
    """Raise :class:`MissingCRD` when a member among ``members`` does not serve a custom kind of its objects
    (trusting what a member's connection confirmed less than ``fresh_for`` seconds ago; see
    :mod:`isthmus.kube.customkinds`)."""
    wanted = {m: registry[m] for m in members if required_kinds(manifests.for_cluster(m))}
    if not wanted:
        return
    outcomes = await across(wanted, lambda conn: absent_kinds(conn, manifests.for_cluster(conn.name),
                                                                 fresh_for=fresh_for))
    absent = {name: o.value for name, o in outcomes.items() if o.reach is Reach.REACHED and o.value}
    if absent:
        raise MissingCRD(missing_crd_message(app, absent))
