"""What a member's API server is: its Kubernetes version and the API group/versions it serves.

Helm's ``.Capabilities`` (``KubeVersion``, ``APIVersions.Has``) are filled from this, so a chart
rendered for a cluster picks the API versions that cluster serves (``helm template --kube-version
--api-versions``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import generic_resource

from .connection import ClusterConnection
from .errors import NotFound, api_failure
from .objects import KubeObject, resource_class

__all__ = ["Capabilities", "capabilities", "register_custom_kinds"]


@dataclass(frozen=True)
class Capabilities:
    kube_version: str
    """``v1.36.3``: the server's gitVersion."""
    api_versions: tuple[str, ...]
    """Every group/version served, core ``v1`` included, sorted."""


async def _get_json(conn: ClusterConnection, path: str) -> Any:
    async def do(client: Any) -> Any:
        # lightkube has no discovery call: its HTTP client (already configured for the cluster) asks directly.
        http = client._client._client
        response = await http.get(path)
        if response.status_code != 200:
            raise api_failure(conn.name, f"GET {path}", response.status_code, response.reason_phrase,
                              response.text[:200])
        return response.json()

    return await conn.call("get", f"discovery {path}", do)


async def capabilities(conn: ClusterConnection) -> Capabilities:
    """The member's version and served API versions: three GETs, concurrently."""
    version, core, groups = await asyncio.gather(_get_json(conn, "/version"), _get_json(conn, "/api"),
                                                 _get_json(conn, "/apis"))
    served = set(core.get("versions") or [])
    for group in groups.get("groups") or []:
        for v in group.get("versions") or []:
            if v.get("groupVersion"):
                served.add(str(v["groupVersion"]))
    return Capabilities(str(version.get("gitVersion", "")), tuple(sorted(served)))


async def register_custom_kinds(conn: ClusterConnection, objects: Sequence[KubeObject]) -> list[str]:
    """Teach the client every kind among ``objects`` it has no class for (a chart's custom resources), from the
    member's discovery of its group/version (plural, scope); returns the kinds the member does not serve
    (``apiVersion/Kind``), which cannot be applied there."""
    unknown: dict[str, set[str]] = {}
    for obj in objects:
        api, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        try:
            resource_class(api, kind)
        except ValueError:
            unknown.setdefault(api, set()).add(kind)
    absent: list[str] = []
    for api, kinds in sorted(unknown.items()):
        try:
            listing = await _get_json(conn, f"/apis/{api}" if "/" in api else f"/api/{api}")
        except NotFound:
            absent += [f"{api}/{k}" for k in sorted(kinds)]
            continue
        served = {r["kind"]: r for r in listing.get("resources") or [] if "/" not in str(r.get("name", ""))}
        group, _, version = api.rpartition("/")
        for kind in sorted(kinds):
            res = served.get(kind)
            if res is None:
                absent.append(f"{api}/{kind}")
                continue
            make = generic_resource.create_namespaced_resource if res.get("namespaced") else \
                generic_resource.create_global_resource
            make(group, version, kind, str(res["name"]))
    return absent
