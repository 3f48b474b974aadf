"""Immutable revisions of an app, kept in the control-plane cluster, and which one each member runs.

A revision is what one apply (or rollback) meant: the spec, the rendered manifests of every
member (the superuser password replaced by ``SUPERUSER_PASSWORD_PLACEHOLDER``: never stored),
who, when, and a summary of what changed since the previous revision.

Storage, in namespace ``isthmus-system`` of the Fleet's control plane: the revision as gzipped
JSON split into ConfigMaps ``isthmus-rev-<app>-<n>-<chunk>`` (``binaryData``, at most
:data:`CHUNK_BYTES` each, far below the 1 MiB object limit), written first and never changed;
then the index ConfigMap ``isthmus-revisions-<app>`` (one small entry per revision), updated by
compare-and-swap, which is the commit point: a revision exists once the index lists it.

Each member records the revision it runs in ConfigMap ``isthmus-revision-<app>`` of the app's
namespace, so that stays knowable while the control plane is unreachable.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..kube import ClusterConnection, ClusterRegistry, ClusterUnreachable, KubeObject, Reach, across
from ..kube.objects import ObjectRef, content_hash
from ..render import SUPERUSER_PASSWORD_PLACEHOLDER, Manifests
from ._objects import (
    CONTROL_NAMESPACE,
    StaleWrite,
    bookkeeping_labels,
    create_object,
    ensure_namespace,
    get_object,
    replace_object,
)

__all__ = [
    "CHUNK_BYTES",
    "MemberRevision",
    "Revision",
    "RevisionInfo",
    "RevisionNotFound",
    "RevisionStore",
    "manifests_digest",
    "read_member_revision",
    "record_member_revision",
    "summarize",
]

CHUNK_BYTES = 512 * 1024
"""Gzipped bytes per chunk ConfigMap; base64 makes it ~683 KiB, under the 1 MiB object limit."""


class RevisionNotFound(UserError):
    pass


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


ManifestsDoc = dict[str, list[KubeObject]]


def manifests_doc(manifests: Manifests) -> ManifestsDoc:
    doc = {c: [dict(o) for o in manifests.for_cluster(c)] for c in manifests.clusters}
    if SUPERUSER_PASSWORD_PLACEHOLDER not in json.dumps(doc) and any(
            o.get("kind") == "Secret" for objs in doc.values() for o in objs):
        raise ValueError("revisions store manifests rendered with the password placeholder, never a password")
    return doc


def manifests_digest(doc: ManifestsDoc) -> str:
    return hashlib.sha256(_canonical(doc)).hexdigest()[:16]


def summarize(old: ManifestsDoc | None, new: ManifestsDoc) -> tuple[str, ...]:
    """One line per cluster that changes: which objects are added, changed (content hash) or removed."""
    if old is None:
        return tuple(f"{c}: {len(objs)} object(s) created" for c, objs in sorted(new.items()))
    lines = []
    for cluster in sorted(set(old) | set(new)):
        before = {ObjectRef.of(o): content_hash(o) for o in old.get(cluster, [])}
        after = {ObjectRef.of(o): content_hash(o) for o in new.get(cluster, [])}
        added = sorted(set(after) - set(before))
        removed = sorted(set(before) - set(after))
        changed = sorted(r for r in set(before) & set(after) if before[r] != after[r])
        parts = [f"{verb} {', '.join(f'{r.kind}/{r.name}' for r in refs)}"
                 for verb, refs in (("changed", changed), ("added", added), ("removed", removed)) if refs]
        if parts:
            lines.append(f"{cluster}: " + "; ".join(parts))
    return tuple(lines) or ("no change",)


@dataclass(frozen=True)
class RevisionInfo:
    """An index entry: enough to list history without fetching the chunks."""

    number: int
    digest: str
    author: str
    created: float
    summary: tuple[str, ...]
    chunks: int
    size: int
    origin: str = "apply"

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "digest": self.digest, "author": self.author, "created": self.created,
                "summary": list(self.summary), "chunks": self.chunks, "size": self.size, "origin": self.origin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RevisionInfo:
        return cls(int(d["number"]), str(d["digest"]), str(d["author"]), float(d["created"]),
                   tuple(d.get("summary", ())), int(d["chunks"]), int(d["size"]), str(d.get("origin", "apply")))


@dataclass(frozen=True)
class Revision:
    info: RevisionInfo
    spec: dict[str, Any]
    manifests: ManifestsDoc = field(repr=False)

    def for_cluster(self, cluster: str) -> list[KubeObject]:
        return self.manifests.get(cluster, [])

    def to_manifests(self) -> Manifests:
        return Manifests({c: tuple(objs) for c, objs in self.manifests.items()})


def index_name(app: str) -> str:
    return f"isthmus-revisions-{app}"


def chunk_name(app: str, number: int, chunk: int) -> str:
    return f"isthmus-rev-{app}-{number}-{chunk}"


class RevisionStore:
    """The revisions of one app in the control-plane cluster ``conn``."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        self.conn, self.app = conn, app

    async def _index(self) -> tuple[list[RevisionInfo], KubeObject | None]:
        live = await get_object(self.conn, "v1", "ConfigMap", index_name(self.app), CONTROL_NAMESPACE)
        if live is None:
            return [], None
        raw = json.loads((live.get("data") or {}).get("index", "[]"))
        return [RevisionInfo.from_dict(d) for d in raw], live

    async def entries(self) -> list[RevisionInfo]:
        return (await self._index())[0]

    async def latest(self) -> RevisionInfo | None:
        infos = await self.entries()
        return infos[-1] if infos else None

    async def info(self, number: int) -> RevisionInfo:
        infos = await self.entries()
        for info in infos:
            if info.number == number:
                return info
        known = ", ".join(str(i.number) for i in infos) or "none yet"
        raise RevisionNotFound(f"app {self.app} has no revision {number} (revisions: {known}); "
                               "see `isthmus history`")

    async def get(self, number: int) -> Revision:
        info = await self.info(number)
        blob = b""
        for chunk in range(info.chunks):
            live = await get_object(self.conn, "v1", "ConfigMap", chunk_name(self.app, number, chunk),
                                    CONTROL_NAMESPACE)
            if live is None:
                raise RevisionNotFound(f"revision {number} of app {self.app} is damaged: chunk {chunk} is missing")
            blob += base64.b64decode((live.get("binaryData") or {})["data"])
        doc = json.loads(gzip.decompress(blob))
        return Revision(info, doc["spec"], doc["manifests"])

    async def record(self, *, spec: dict[str, Any], manifests: Manifests, author: str, origin: str = "apply",
                     reuse_unchanged: bool = True) -> tuple[RevisionInfo, bool]:
        """Store a new revision (or reuse the latest when nothing changed); returns (info, created)."""
        doc = manifests_doc(manifests)
        digest = manifests_digest(doc)
        await ensure_namespace(self.conn, CONTROL_NAMESPACE)
        while True:
            infos, index = await self._index()
            if reuse_unchanged and infos and infos[-1].digest == digest:
                return infos[-1], False
            previous = (await self.get(infos[-1].number)).manifests if infos else None
            number = (infos[-1].number + 1) if infos else 1
            blob = gzip.compress(_canonical({"spec": spec, "manifests": doc}), mtime=0)
            pieces = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
            for i, piece in enumerate(pieces):
                await self._write_chunk(number, i, piece)
            info = RevisionInfo(number, digest, author, time.time(), summarize(previous, doc), len(pieces),
                                len(blob), origin)
            try:
                await self._write_index([*infos, info], index)
            except StaleWrite:
                continue  # another writer committed a revision first: number again
            return info, True

    async def _write_chunk(self, number: int, chunk: int, data: bytes) -> None:
        obj: KubeObject = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": chunk_name(self.app, number, chunk), "namespace": CONTROL_NAMESPACE,
                         "labels": {**bookkeeping_labels(self.app, "revision"), "isthmus.dev/revision": str(number)}},
            "binaryData": {"data": base64.b64encode(data).decode()},
        }
        live = await get_object(self.conn, "v1", "ConfigMap", obj["metadata"]["name"], CONTROL_NAMESPACE)
        if live is None:
            await create_object(self.conn, obj)
        else:  # left over by a writer that lost the index race: never listed, so safe to overwrite
            obj["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            await replace_object(self.conn, obj)

    async def _write_index(self, infos: Sequence[RevisionInfo], live: KubeObject | None) -> None:
        obj: KubeObject = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": index_name(self.app), "namespace": CONTROL_NAMESPACE,
                         "labels": bookkeeping_labels(self.app, "revision-index")},
            "data": {"index": json.dumps([i.to_dict() for i in infos], indent=1)},
        }
        if live is None:
            await create_object(self.conn, obj)
        else:
            obj["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
            await replace_object(self.conn, obj)


# -- what each member runs ------------------------------------------------------------------------

def member_record_name(app: str) -> str:
    return f"isthmus-revision-{app}"


@dataclass(frozen=True)
class MemberRevision:
    """One member's own record: the revision it fully runs, and the one being rolled out to it."""

    cluster: str
    reach: Reach
    revision: int | None = None
    target: int | None = None
    updated: float | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "reach": self.reach.value, "revision": self.revision,
                "target": self.target, "updated": self.updated, "error": self.error}


async def _read_record(conn: ClusterConnection, app: str, namespace: str) -> KubeObject | None:
    return await get_object(conn, "v1", "ConfigMap", member_record_name(app), namespace)


async def read_member_revision(conn: ClusterConnection, app: str, namespace: str) -> MemberRevision:
    live = await _read_record(conn, app, namespace)
    data = (live or {}).get("data") or {}

    def num(key: str) -> int | None:
        return int(data[key]) if data.get(key) else None

    return MemberRevision(conn.name, Reach.DONE, num("revision"), num("target"),
                          float(data["updated"]) if data.get("updated") else None)


async def record_member_revision(conn: ClusterConnection, app: str, namespace: str, *,
                                 revision: int | None = None, target: int | None = None) -> None:
    """Set ``target`` when a rollout starts touching the member, ``revision`` when it is done there."""
    await ensure_namespace(conn, namespace)
    while True:
        live = await _read_record(conn, app, namespace)
        data = dict((live or {}).get("data") or {})
        if revision is not None:
            data["revision"] = str(revision)
            data.pop("target", None)
        if target is not None:
            data["target"] = str(target)
        data["updated"] = f"{time.time():.3f}"
        obj: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": member_record_name(app), "namespace": namespace,
                                        "labels": bookkeeping_labels(app, "member-revision")},
                           "data": data}
        try:
            if live is None:
                await create_object(conn, obj)
            else:
                obj["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
                await replace_object(conn, obj)
            return
        except StaleWrite:
            continue


async def member_revisions(registry: ClusterRegistry, clusters: Sequence[str], app: str,
                           namespace: str) -> dict[str, MemberRevision]:
    conns = {c: registry[c] for c in clusters}
    outcomes = await across(conns, lambda conn: read_member_revision(conn, app, namespace))
    return {c: (o.value if o.value is not None else MemberRevision(c, o.reach, error=o.error))
            for c, o in outcomes.items()}


@dataclass(frozen=True)
class History:
    """The app's revisions (empty when the control plane did not answer) and what each member runs."""

    app: str
    revisions: tuple[RevisionInfo, ...]
    members: dict[str, MemberRevision]
    control_plane: str
    control_plane_error: str = ""

    def state_of(self, number: int) -> dict[str, str]:
        """Per member: Running, Rolling (the target of an unfinished rollout), Unknown, or empty."""
        out = {}
        for cluster, m in sorted(self.members.items()):
            if m.reach is not Reach.DONE:
                out[cluster] = "Unknown"
            elif m.revision == number and m.target is None:
                out[cluster] = "Running"
            elif m.target == number:
                out[cluster] = "Rolling"
            elif m.revision == number:
                out[cluster] = "Running (rolling on)"
            else:
                out[cluster] = ""
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "controlPlane": self.control_plane, "controlPlaneError": self.control_plane_error,
                "members": {c: m.to_dict() for c, m in sorted(self.members.items())},
                "revisions": [{**r.to_dict(), "clusters": self.state_of(r.number)} for r in self.revisions]}


async def history(registry: ClusterRegistry, control_plane: str, members: Sequence[str], app: str,
                  namespace: str) -> History:
    error = ""
    try:
        infos = await RevisionStore(registry[control_plane], app).entries()
    except ClusterUnreachable as exc:
        infos, error = [], exc.reason
    return History(app, tuple(infos), await member_revisions(registry, members, app, namespace), control_plane,
                   error)


__all__ += ["History", "chunk_name", "history", "index_name", "manifests_doc", "member_record_name", "member_revisions"]
