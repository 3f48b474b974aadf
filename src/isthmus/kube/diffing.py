"""What an apply would change: a server-side dry-run apply of each object against the live one.

The server computes the result (defaults, admission, field ownership), so the diff shows what
would really land, including fields someone changed by hand. Secret values are masked: a change
shows as ``*** (changed)``, never as the value.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .connection import ClusterConnection
from .errors import NotFound
from .fetching import get_object
from .objects import KubeObject, ObjectRef, clean_for_compare, resource_class, to_resource

__all__ = ["ObjectDiff", "diff_objects", "mask_secret", "meaningful"]

MASK = "***"


@dataclass(frozen=True)
class ObjectDiff:
    ref: ObjectRef
    text: str
    """A unified diff; empty when nothing would change."""

    @property
    def changed(self) -> bool:
        return bool(self.text)


def mask_secret(obj: KubeObject | None, other: KubeObject | None) -> KubeObject | None:
    """Replace a Secret's values by a mask that still tells whether each one differs from ``other``.

    With ``other`` None every value becomes the plain mask (the "before" side of a diff).
    """
    if obj is None or obj.get("kind") != "Secret":
        return obj
    out = dict(obj)
    theirs = {**(other or {}).get("data", {}), **(other or {}).get("stringData", {})} if other else {}
    for section in ("data", "stringData"):
        values = obj.get(section)
        if isinstance(values, dict):
            out[section] = {k: MASK if theirs.get(k) == v or other is None else f"{MASK} (changed)"
                            for k, v in values.items()}
    return out


def _yaml(obj: KubeObject | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(obj, sort_keys=True).splitlines(keepends=True)


def unified(ref: ObjectRef, live: KubeObject | None, merged: KubeObject | None) -> str:
    before = mask_secret(clean_for_compare(live), None) if live else None
    after = mask_secret(clean_for_compare(merged), live and clean_for_compare(live)) if merged else None
    name = str(ref).replace(" ", "/")
    lines = difflib.unified_diff(_yaml(before), _yaml(after), f"live/{name}", f"desired/{name}")
    return "".join(lines)


async def _diff_one(conn: ClusterConnection, obj: KubeObject, force: bool) -> ObjectDiff:
    ref = ObjectRef.of(obj)
    res = resource_class(ref.api_version, ref.kind)

    async def dry_run(client: Any) -> KubeObject:
        return dict((await client.apply(to_resource(obj), force=force, dry_run=True)).to_dict())

    found = await get_object(conn, res, ref.name, ref.namespace or None)
    live: KubeObject | None = dict(found.to_dict()) if found is not None else None
    try:
        merged = await conn.call("dry-run", str(ref), dry_run)
    except NotFound:
        if live is not None:
            raise
        merged = obj  # its namespace does not exist yet, so the server cannot dry-run it
    return ObjectDiff(ref, unified(ref, live, merged))


def meaningful(text: str, ignore: Iterable[str]) -> bool:
    """Whether a unified diff changes a line other than those mentioning one of ``ignore``."""
    skip = tuple(ignore)
    for line in text.splitlines():
        if line[:1] in "+-" and line[:3] not in ("---", "+++") and not any(s in line for s in skip):
            return True
    return False


async def diff_objects(conn: ClusterConnection, objects: Sequence[KubeObject], *, force_conflicts: bool = False,
                       ignore: Iterable[str] = ()) -> list[ObjectDiff]:
    """What applying each of ``objects`` would change (a server-side dry run). ``ignore``: text of diff lines
    that are no change (an annotation only the applier stamps): an object whose diff changes only such lines
    would not change."""
    skip = tuple(ignore)
    diffs = await asyncio.gather(*(_diff_one(conn, o, force_conflicts) for o in objects))
    return [d if not skip or meaningful(d.text, skip) else ObjectDiff(d.ref, "") for d in diffs]


