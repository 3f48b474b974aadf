"""What a member's API server is: its Kubernetes version and the API group/versions it serves.

Helm's ``.Capabilities`` (``KubeVersion``, ``APIVersions.Has``) are filled from this, so a chart
rendered for a cluster picks the API versions that cluster serves (``helm template --kube-version
--api-versions``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .connection import ClusterConnection
from .errors import ApiFailure

__all__ = ["Capabilities", "capabilities"]


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
            raise ApiFailure(conn.name, f"GET {path}", response.status_code, response.reason_phrase,
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
