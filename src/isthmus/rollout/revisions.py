"""Immutable revisions of an app, kept in the control-plane cluster (which one each member runs is
:mod:`.memberrevisions`).

A revision is what one apply (or rollback) meant: the spec, the rendered manifests of every
member (the superuser password replaced by ``SUPERUSER_PASSWORD_PLACEHOLDER``: never stored),
who, when, and a summary of what changed since the previous revision.

Storage, in namespace ``isthmus-system`` of the Fleet's control plane: the revision as gzipped
JSON split into ConfigMaps ``isthmus-rev-<app>-<hash>-<chunk>`` (``binaryData``, at most
:data:`CHUNK_BYTES` each, far below the 1 MiB object limit), named by the hash of their content
so they can be written before the revision has a number (even while the lock is being taken),
and never changed; then the index ConfigMap ``isthmus-revisions-<app>`` (one small entry per
revision), updated by compare-and-swap, which is the commit point: a revision exists once the
index lists it. (Revisions recorded before content naming have chunks
``isthmus-rev-<app>-<n>-<chunk>``; both are read.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..kube import (
    ClusterConnection,
    KubeObject,
    StaleWrite,
    bookkeeping_labels,
    config_map,
    create_record,
    get_record,
    read_config_map,
    remembered_config_map,
    write_config_map,
)
from ..kube.objects import ObjectRef, content_hash
from ..render import SUPERUSER_PASSWORD_PLACEHOLDER, Manifests
from ..render.charts import masked_secret
from .locking import CONTROL_NAMESPACE

__all__ = [
    "CHUNK_BYTES",
    "Revision",
    "RevisionInfo",
    "RevisionNotFound",
    "RevisionStore",
    "Staged",
    "manifests_digest",
    "stage",
    "summarize",
]

CHUNK_BYTES = 512 * 1024
"""Gzipped bytes per chunk ConfigMap; base64 makes it ~683 KiB, under the 1 MiB object limit."""


class RevisionNotFound(UserError):
    pass


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


ManifestsDoc = dict[str, list[KubeObject]]


def _check_masked(doc: ManifestsDoc, canonical: bytes | None = None) -> None:
    text = canonical if canonical is not None else _canonical(doc)
    if SUPERUSER_PASSWORD_PLACEHOLDER.encode() not in text and any(
            o.get("kind") == "Secret" and (o.get("data") or o.get("stringData")) and not masked_secret(o)
            for objs in doc.values() for o in objs):
        raise ValueError("revisions store manifests rendered with the password placeholder, never a password")


def manifests_doc(manifests: Manifests) -> ManifestsDoc:
    doc = {c: [dict(o) for o in manifests.for_cluster(c)] for c in manifests.clusters}
    _check_masked(doc)
    return doc


def manifests_digest(doc: ManifestsDoc) -> str:
    return _digest_of(_canonical(doc))


def _digest_of(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()[:16]


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
    blob: str = ""
    """Hash of the stored blob, which names its chunks; empty for revisions whose chunks are named by number."""

    def to_dict(self) -> dict[str, Any]:
        out = {"number": self.number, "digest": self.digest, "author": self.author, "created": self.created,
               "summary": list(self.summary), "chunks": self.chunks, "size": self.size, "origin": self.origin}
        if self.blob:
            out["blob"] = self.blob
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RevisionInfo:
        return cls(int(d["number"]), str(d["digest"]), str(d["author"]), float(d["created"]),
                   tuple(d.get("summary", ())), int(d["chunks"]), int(d["size"]), str(d.get("origin", "apply")),
                   str(d.get("blob", "")))

    def chunk_names(self, app: str) -> list[str]:
        return [blob_chunk_name(app, self.blob, i) if self.blob else chunk_name(app, self.number, i)
                for i in range(self.chunks)]


@dataclass(frozen=True)
class Staged:
    """A revision's content, serialized and compressed, and (once :meth:`RevisionStore.stage` ran) stored in
    chunks named by its hash, so it can be written before it has a number, even before the lock is taken:
    identical content gets identical names, and nothing lists it until the index does."""

    spec: dict[str, Any]
    manifests: ManifestsDoc = field(repr=False)
    digest: str
    blob: str
    pieces: tuple[bytes, ...] = field(repr=False)
    size: int


def stage(spec: dict[str, Any], manifests: Manifests) -> Staged:
    """Serialize ``manifests`` (rendered with the password placeholder) and ``spec`` once: check, digest, blob."""
    doc = {c: [dict(o) for o in manifests.for_cluster(c)] for c in manifests.clusters}
    canonical = _canonical(doc)
    _check_masked(doc, canonical)
    # == _canonical({"spec": spec, "manifests": doc}): sorted keys put "manifests" first
    blob = gzip.compress(b'{"manifests":' + canonical + b',"spec":' + _canonical(spec) + b"}", mtime=0)
    pieces = tuple(blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)) or (b"",)
    return Staged(spec, doc, _digest_of(canonical + _keyspaces_part(spec)), hashlib.sha256(blob).hexdigest()[:16],
                  pieces, len(blob))


def _keyspaces_part(spec: dict[str, Any]) -> bytes:
    """What of the spec besides the manifests makes a revision: its declared keyspaces (their replication is
    kept by steps of the rollout, not by objects). Nothing when none are declared, so such a spec's digest is
    its manifests' alone, as before keyspaces existed."""
    body = spec.get("spec")
    keyspaces = body.get("keyspaces") if isinstance(body, dict) else None
    return b"\n" + _canonical({"keyspaces": keyspaces}) if keyspaces else b""


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


def blob_chunk_name(app: str, blob: str, chunk: int) -> str:
    return f"isthmus-rev-{app}-{blob}-{chunk}"


@dataclass(frozen=True)
class _Known:
    digest: str
    spec: dict[str, Any]
    manifests: ManifestsDoc


def _latest(conn: ClusterConnection) -> dict[tuple[str, int], _Known]:
    """In the control-plane connection's session, the last revisions of each app this process wrote or read.
    Revisions never change once listed, and the index entry's digest is checked before one is used, so
    the next record (which needs the previous manifests for its summary) reads no chunk."""
    return conn.session.part(__name__, dict[tuple[str, int], _Known])


class _Renumber(Exception):
    """The index moved on while a revision was being written: number it again."""


def _infos(data: dict[str, str] | None) -> list[RevisionInfo]:
    return [RevisionInfo.from_dict(d) for d in json.loads((data or {}).get("index", "[]"))]


class RevisionStore:
    """The revisions of one app in the control-plane cluster ``conn``."""

    def __init__(self, conn: ClusterConnection, app: str) -> None:
        self.conn, self.app = conn, app

    async def _index(self) -> tuple[list[RevisionInfo], KubeObject | None]:
        live = await read_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
        if live is None:
            return [], None
        return _infos(live.get("data")), live

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

    def _remember(self, number: int, known: _Known) -> None:
        """Keep the two latest revisions of the app (the one rolling out and the one it replaces)."""
        cache = _latest(self.conn)
        cache[(self.app, number)] = known
        mine = sorted(k for k in cache if k[0] == self.app)
        for key in mine[:-2]:
            del cache[key]

    async def get(self, number: int) -> Revision:
        return await self.fetch(await self.info(number))

    async def fetch(self, info: RevisionInfo) -> Revision:
        """The revision ``info`` lists (from memory when this process wrote or read it last)."""
        known = _latest(self.conn).get((self.app, info.number))
        if known is not None and known.digest == info.digest:
            return Revision(info, known.spec, known.manifests)

        async def chunk(i: int, name: str) -> bytes:
            live = await get_record(self.conn, "v1", "ConfigMap", name, CONTROL_NAMESPACE)
            if live is None:
                raise RevisionNotFound(f"revision {info.number} of app {self.app} is damaged: chunk {i} is missing")
            return base64.b64decode((live.get("binaryData") or {})["data"])

        blob = b"".join(await asyncio.gather(*(chunk(i, n) for i, n in enumerate(info.chunk_names(self.app)))))
        doc = json.loads(gzip.decompress(blob))
        self._remember(info.number, _Known(info.digest, doc["spec"], doc["manifests"]))
        return Revision(info, doc["spec"], doc["manifests"])

    async def record(self, *, spec: dict[str, Any], manifests: Manifests, author: str, origin: str = "apply",
                     reuse_unchanged: bool = True) -> tuple[RevisionInfo, bool]:
        """Store a new revision (or reuse the latest when nothing changed); returns (info, created)."""
        info, created, _ = await self.record_next(spec=spec, manifests=manifests, author=author, origin=origin,
                                                  reuse_unchanged=reuse_unchanged)
        return info, created

    async def record_next(self, *, spec: dict[str, Any], manifests: Manifests, author: str, origin: str = "apply",
                          reuse_unchanged: bool = True, staged: Staged | None = None
                          ) -> tuple[RevisionInfo, bool, RevisionInfo | None]:
        """:meth:`record`, also returning the latest revision before it (None for the first).

        ``staged``: the content as :meth:`stage` already stored it (else it is staged here). The
        index this process last read or wrote is the starting point: the new entry is written
        against it by compare-and-swap (a revision someone else committed meanwhile makes this one
        take the next number; its chunks, named by content, stay as they are), and reusing the
        latest revision is only decided on a fresh read.
        """
        content = staged or stage(spec, manifests)
        known, data = remembered_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
        fresh = not known
        if fresh:
            live = await read_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
            data = (live or {}).get("data")
        while True:
            infos = _infos(data)
            latest = infos[-1] if infos else None
            if reuse_unchanged and latest is not None and latest.digest == content.digest:
                if not fresh:
                    live = await read_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
                    data, fresh = (live or {}).get("data"), True
                    continue
                return latest, False, latest
            if staged is None:
                await self.store(content)
                staged = content
            previous = (await self.fetch(latest)).manifests if latest is not None else None
            number = latest.number + 1 if latest is not None else 1
            info = RevisionInfo(number, content.digest, author, time.time(), summarize(previous, content.manifests),
                                len(content.pieces), content.size, origin, content.blob)

            def change(current: dict[str, str] | None, expected: int = number - 1,
                       entry: RevisionInfo = info) -> dict[str, str]:
                listed = _infos(current)
                if (listed[-1].number if listed else 0) != expected:
                    raise _Renumber
                return {"index": json.dumps([i.to_dict() for i in [*listed, entry]], indent=1)}

            try:
                await write_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE,
                                       labels=bookkeeping_labels(self.app, "revision-index"), change=change)
            except _Renumber:  # another writer committed a revision first: number again
                _, data = remembered_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
                fresh = True
                continue
            self._remember(number, _Known(content.digest, content.spec, content.manifests))
            return info, True, latest

    def knows_index(self) -> bool:
        """Whether this process has read or written the index (then :meth:`probably_latest` can answer)."""
        return remembered_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)[0]

    async def refresh(self) -> None:
        """Read the index (remembered as a hint for :meth:`probably_latest` and :meth:`record_next`)."""
        await read_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)

    def remembered_latest(self) -> tuple[int, dict[str, Any]] | None:
        """The number and spec of the latest revision as this process last saw the index, if it also holds that
        revision's content (it wrote or read it); a hint."""
        _, data = remembered_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
        infos = _infos(data)
        if not infos:
            return None
        known = _latest(self.conn).get((self.app, infos[-1].number))
        return (infos[-1].number, known.spec) if known is not None and known.digest == infos[-1].digest else None

    def probably_latest(self, digest: str) -> bool:
        """Whether the latest revision, as this process last saw the index, has ``digest`` (a hint)."""
        _, data = remembered_config_map(self.conn, index_name(self.app), CONTROL_NAMESPACE)
        infos = _infos(data)
        return bool(infos) and infos[-1].digest == digest

    async def store(self, content: Staged) -> None:
        """Write ``content``'s chunks (named by its hash; one already there holds the same bytes)."""

        async def one(i: int, piece: bytes) -> None:
            obj = config_map(blob_chunk_name(self.app, content.blob, i), CONTROL_NAMESPACE,
                             {**bookkeeping_labels(self.app, "revision"), "isthmus.dev/blob": content.blob},
                             binary_data={"data": base64.b64encode(piece).decode()})
            with contextlib.suppress(StaleWrite):
                await create_record(self.conn, obj)

        await asyncio.gather(*(one(i, p) for i, p in enumerate(content.pieces)))


__all__ += ["blob_chunk_name", "chunk_name", "index_name", "manifests_doc"]
