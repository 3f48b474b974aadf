"""Cilium cluster IDs: unique, in 1..maxConnectedClusters, 0 reserved.

Owns: which cluster gets which ID. Precedence: an ID written in the spec, then the ID recorded in
the lock, then the lowest free ID, handed out in spec order. IDs released this plan (their cluster
left the spec) are not handed out again until the next plan, so a cluster still being torn down
cannot clash with a new one. Must not: read files or know about CIDRs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .errors import PlanError

__all__ = ["IDAssignment", "IDRequest", "assign_cluster_ids"]


@dataclass(frozen=True)
class IDRequest:
    """One cluster asking for an ID: its name and the ID the spec gives it, if any."""

    name: str
    requested: int | None = None


@dataclass(frozen=True)
class IDAssignment:
    """The IDs chosen, by cluster name, and what the user should hear about them."""

    ids: Mapping[str, int]
    warnings: tuple[str, ...] = ()


def assign_cluster_ids(
    requests: Sequence[IDRequest],
    *,
    locked: Mapping[str, int],
    max_connected_clusters: int,
    released: Collection[int] = (),
) -> IDAssignment:
    """Give every requested cluster an ID; raise ``PlanError`` on a clash or when IDs run out."""
    limit = max_connected_clusters
    ids: dict[str, int] = {}
    owner: dict[int, str] = {}
    warnings: list[str] = []

    def take(name: str, cid: int, source: str) -> None:
        if not 1 <= cid <= limit:
            raise PlanError(
                f"cluster {name} has clusterID {cid} in the {source}, outside 1..{limit} "
                f"(maxConnectedClusters: {limit}; ID 0 is reserved); pick an ID in range or raise "
                "maxConnectedClusters to 511"
            )
        if cid in owner:
            raise PlanError(
                f"cluster {name} has clusterID {cid} in the {source}, but {owner[cid]} already holds it; "
                f"give {name} another clusterID in the spec"
            )
        ids[name] = cid
        owner[cid] = name

    for req in requests:
        if req.requested is not None:
            take(req.name, req.requested, "spec")
            previous = locked.get(req.name)
            if previous is not None and previous != req.requested:
                warnings.append(
                    f"cluster {req.name}: clusterID {req.requested} from the spec replaces {previous} "
                    "from the lock; Cilium identities from this cluster change across the mesh"
                )
    for req in requests:
        if req.requested is None and req.name in locked:
            take(req.name, locked[req.name], "lock")

    blocked = set(owner) | set(released)
    pending = [req.name for req in requests if req.name not in ids]
    candidate = 1
    for index, name in enumerate(pending):
        while candidate in blocked:
            candidate += 1
        if candidate > limit:
            held_back = len(set(released) - set(owner))
            note = f"; {held_back} released this plan are free again next plan" if held_back else ""
            raise PlanError(
                f"no cluster ID left for cluster {name}: IDs 1..{limit} are all taken "
                f"(maxConnectedClusters: {limit}, ID 0 is reserved{note}) and {len(pending) - index} "
                f"cluster(s) still need one; set network.maxConnectedClusters: 511 (Cilium then allows "
                "fewer identities per cluster) or split the fleet into several meshes"
            )
        ids[name] = candidate
        blocked.add(candidate)
    return IDAssignment(ids=ids, warnings=tuple(warnings))
