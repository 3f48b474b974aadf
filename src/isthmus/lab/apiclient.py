"""A minimal REST client for the lab's own calls to its API servers (bootstrap and faults).

Owns: an ``httpx`` client per cluster authenticated with the admin certificate, and the
handful of verbs the lab needs (get, create, merge-patch, delete). Must not: be used by product
code; operators and the CLI talk to Kubernetes through :mod:`isthmus.kube`.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import httpx

from .pki import Credential

__all__ = ["LabApi"]

JSON = dict[str, Any]


class LabApi:
    """``with LabApi(server, ca, admin) as api: api.get("/api/v1/nodes")``."""

    def __init__(self, server: str, ca: Path, cred: Credential, *, timeout: float = 5.0) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cred.cert), str(cred.key))
        self._client = httpx.Client(base_url=server, verify=ctx, timeout=timeout)

    def __enter__(self) -> LabApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def status(self, path: str) -> int:
        return self._client.get(path).status_code

    def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        r = self._client.get(path, params=params)
        r.raise_for_status()
        return cast(JSON, r.json())

    def create(self, path: str, body: JSON) -> int:
        """POST ``body``; returns the status code (409 Already Exists is not an error)."""
        r = self._client.post(path, json=body)
        if r.status_code not in (200, 201, 202, 409):
            r.raise_for_status()
        return r.status_code

    def delete(self, path: str) -> int:
        """DELETE ``path``; returns the status code (404 Not Found is not an error)."""
        r = self._client.delete(path)
        if r.status_code not in (200, 202, 404):
            r.raise_for_status()
        return r.status_code

    def merge_patch(self, path: str, body: JSON) -> JSON:
        r = self._client.patch(path, json=body, headers={"Content-Type": "application/merge-patch+json"})
        r.raise_for_status()
        return cast(JSON, r.json())
