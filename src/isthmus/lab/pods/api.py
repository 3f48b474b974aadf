"""The pod runtime's client of its cluster's API server: async, certificate-authenticated, with timeouts.

Owns: the few verbs a kubelet uses (get, list, watch, merge-patch of a status, create, delete with
preconditions, events). Must not: be used by product code (that talks to Kubernetes through
:mod:`isthmus.kube`); this is the lab's node side.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx

from ..pki import Credential

__all__ = ["JSON", "RuntimeApi"]

JSON = dict[str, Any]


class RuntimeApi:
    def __init__(self, server: str, ca: Path, cred: Credential, *, timeout: float = 10.0) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cred.cert), str(cred.key))
        self._timeout = timeout
        self._client = httpx.AsyncClient(base_url=server, verify=ctx, timeout=timeout)

    async def close(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON | None:
        r = await self._client.get(path, params=params)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return cast(JSON, r.json())

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        found = await self.get(path, params)
        return found if found is not None else {"items": [], "metadata": {}}

    async def watch(self, path: str, resource_version: str, params: Mapping[str, str] | None = None,
                    *, seconds: int = 240) -> AsyncIterator[JSON]:
        """Watch events (dicts with ``type`` and ``object``) until the server ends the watch."""
        query = {**(params or {}), "watch": "1", "resourceVersion": resource_version,
                 "timeoutSeconds": str(seconds), "allowWatchBookmarks": "true"}
        timeout = httpx.Timeout(self._timeout, read=seconds + 30.0)
        async with self._client.stream("GET", path, params=query, timeout=timeout) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.strip():
                    yield cast(JSON, json.loads(line))

    async def merge_patch(self, path: str, body: JSON) -> JSON | None:
        r = await self._client.patch(path, content=json.dumps(body),
                                     headers={"Content-Type": "application/merge-patch+json"})
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return cast(JSON, r.json())

    async def create(self, path: str, body: JSON) -> int:
        r = await self._client.post(path, json=body)
        if r.status_code not in (200, 201, 202, 409):
            r.raise_for_status()
        return r.status_code

    async def put(self, path: str, body: JSON) -> int:
        r = await self._client.put(path, json=body)
        if r.status_code not in (200, 201, 404, 409):
            r.raise_for_status()
        return r.status_code

    async def delete(self, path: str, body: JSON | None = None) -> int:
        r = await self._client.request("DELETE", path, json=body)
        if r.status_code not in (200, 202, 404, 409):
            r.raise_for_status()
        return r.status_code
