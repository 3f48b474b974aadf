"""The lock: what the planner has handed out, so it never moves.

Owns: the ``Lock`` value and its dict form (what the CLI writes as YAML to ``<spec>.lock``)::

    version: 1
    clusters:
      eu-1: {clusterID: 1, podCIDR: 10.0.0.0/18, serviceCIDR: 172.16.0.0/20}
      us-1: {clusterID: 2, podCIDR: 10.0.64.0/18, serviceCIDR: 172.16.16.0/20,
             podCIDRV6: fd00:10::/96, serviceCIDRV6: fd00:20::/112}

``Lock.from_dict`` validates once, where data enters, and raises ``LockError`` naming the key.
Must not: read or write files (the CLI does), or decide allocations (the planner does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from .errors import LockError

__all__ = ["LOCK_VERSION", "Lock", "LockedCluster"]

LOCK_VERSION = 1
_MAX_CLUSTER_ID = 511


@dataclass(frozen=True)
class LockedCluster:
    """One cluster's recorded assignments; a family or ID it never had stays None."""

    name: str
    cluster_id: int | None = None
    pod_cidr: IPv4Network | None = None
    service_cidr: IPv4Network | None = None
    pod_cidr_v6: IPv6Network | None = None
    service_cidr_v6: IPv6Network | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.cluster_id is not None:
            out["clusterID"] = self.cluster_id
        for key, value in (
            ("podCIDR", self.pod_cidr),
            ("serviceCIDR", self.service_cidr),
            ("podCIDRV6", self.pod_cidr_v6),
            ("serviceCIDRV6", self.service_cidr_v6),
        ):
            if value is not None:
                out[key] = str(value)
        return out

    @property
    def networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(n for n in (self.pod_cidr, self.service_cidr, self.pod_cidr_v6, self.service_cidr_v6) if n)


@dataclass(frozen=True)
class Lock:
    """Every cluster's recorded assignments, sorted by name; ``version`` is the lock format."""

    clusters: tuple[LockedCluster, ...] = ()
    version: int = LOCK_VERSION
    _by_name: Mapping[str, LockedCluster] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.clusters, key=lambda c: c.name))
        by_name = {c.name: c for c in ordered}
        if len(by_name) != len(ordered):
            raise LockError("lock: a cluster is listed twice under clusters")
        object.__setattr__(self, "clusters", ordered)
        object.__setattr__(self, "_by_name", by_name)

    def get(self, name: str) -> LockedCluster | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "clusters": {c.name: c.to_dict() for c in self.clusters}}

    @classmethod
    def from_dict(cls, data: object) -> Lock:
        """Parse and validate lock data (as loaded from YAML); ``LockError`` names the bad key."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise LockError(f"lock: expected a mapping with version and clusters, got {_kind(data)}")
        unknown = sorted(str(k) for k in data if k not in ("version", "clusters"))
        if unknown:
            raise LockError(f"lock: unknown key {unknown[0]!r}; a lock has only version and clusters")
        version = data.get("version")
        if version != LOCK_VERSION or isinstance(version, bool):
            raise LockError(
                f"lock: version: expected {LOCK_VERSION}, got {version!r}; this isthmus reads lock "
                f"version {LOCK_VERSION} only"
            )
        raw = data.get("clusters")
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise LockError(f"lock: clusters: expected a mapping of cluster name to entry, got {_kind(raw)}")
        entries: list[LockedCluster] = []
        owners: dict[int, str] = {}
        for name, entry in raw.items():
            if not isinstance(name, str) or not name:
                raise LockError(f"lock: clusters: cluster names must be non-empty strings, got {name!r}")
            cluster = _parse_entry(name, entry)
            cid = cluster.cluster_id
            if cid is not None:
                if cid in owners:
                    raise LockError(f"lock: clusters.{name}.clusterID: {cid} is also recorded for {owners[cid]}")
                owners[cid] = name
            entries.append(cluster)
        return cls(clusters=tuple(entries))


def _kind(value: object) -> str:
    return type(value).__name__


_CIDR_KEYS = {"podCIDR": 4, "serviceCIDR": 4, "podCIDRV6": 6, "serviceCIDRV6": 6}


def _parse_entry(name: str, entry: object) -> LockedCluster:
    where = f"lock: clusters.{name}"
    if not isinstance(entry, Mapping):
        raise LockError(f"{where}: expected a mapping, got {_kind(entry)}")
    unknown = sorted(str(k) for k in entry if k != "clusterID" and k not in _CIDR_KEYS)
    if unknown:
        allowed = ", ".join(["clusterID", *_CIDR_KEYS])
        raise LockError(f"{where}: unknown key {unknown[0]!r}; expected {allowed}")
    cid = entry.get("clusterID")
    if cid is not None and (isinstance(cid, bool) or not isinstance(cid, int)):
        raise LockError(f"{where}.clusterID: expected an integer, got {_kind(cid)} {cid!r}")
    if cid is not None and not 1 <= cid <= _MAX_CLUSTER_ID:
        raise LockError(f"{where}.clusterID: {cid} is outside 1..{_MAX_CLUSTER_ID}")
    nets: dict[str, IPv4Network | IPv6Network | None] = {}
    for key, version in _CIDR_KEYS.items():
        value = entry.get(key)
        if value is None:
            nets[key] = None
            continue
        if not isinstance(value, str):
            raise LockError(f"{where}.{key}: expected a CIDR string, got {_kind(value)} {value!r}")
        kind = IPv4Network if version == 4 else IPv6Network
        try:
            nets[key] = kind(value.strip(), strict=True)
        except ValueError as exc:
            try:
                other = ipaddress.ip_network(value.strip())
            except ValueError:
                raise LockError(f"{where}.{key}: {value!r} is not a valid CIDR ({exc})") from exc
            raise LockError(f"{where}.{key}: {value} is IPv{other.version}; expected an IPv{version} CIDR") from exc
    pod4, svc4, pod6, svc6 = (nets[k] for k in _CIDR_KEYS)
    assert (pod4 is None or isinstance(pod4, IPv4Network)) and (svc4 is None or isinstance(svc4, IPv4Network))
    assert (pod6 is None or isinstance(pod6, IPv6Network)) and (svc6 is None or isinstance(svc6, IPv6Network))
    return LockedCluster(name, cid, pod4, svc4, pod6, svc6)
