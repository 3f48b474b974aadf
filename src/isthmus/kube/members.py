"""Member clusters registered as kubeconfig Secrets, and the control-plane cluster the operator runs in.

A member cluster is a Secret in the operator's namespace, labelled ``isthmus.dev/cluster=<name>``,
whose ``kubeconfig`` key holds a self-contained kubeconfig (certificates and keys inline, as
``kubectl config view --minify --flatten`` writes it). This module reads and watches those
Secrets on the control-plane cluster and turns one into a :class:`ClusterConnection`;
deciding what the set of members *is* (add, rotate, remove) is the operator's job.

Owns: the calls that list and watch the Secrets, the reachability probe, parsing a kubeconfig
into a connection. Must not: keep state about members between calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.resources.core_v1 import Namespace, Secret

from ..errors import UserError
from .connection import ClusterConnection, ConnectionSettings
from .errors import ApiFailure

__all__ = [
    "KUBECONFIG_KEY",
    "MEMBER_LABEL",
    "InvalidKubeconfig",
    "MemberSecret",
    "connection_from_kubeconfig",
    "control_plane_connection",
    "list_member_secrets",
    "ping",
    "watch_member_secrets",
]

MEMBER_LABEL: Final = "isthmus.dev/cluster"
KUBECONFIG_KEY: Final = "kubeconfig"
log = logging.getLogger(__name__)


class InvalidKubeconfig(UserError):
    """A member Secret's kubeconfig cannot be used (missing key, bad YAML, no context, file paths)."""


@dataclass(frozen=True)
class MemberSecret:
    """One member registration as read from the control plane: the cluster name and its kubeconfig."""

    cluster: str
    secret: str
    kubeconfig: str
    error: str = ""

    @property
    def digest(self) -> str:
        """Changes when the credentials are rotated, so the member's connection is rebuilt."""
        return hashlib.sha256(self.kubeconfig.encode()).hexdigest()[:16]


def connection_from_kubeconfig(
    name: str, text: str, settings: ConnectionSettings | None = None, *, context: str | None = None
) -> ClusterConnection:
    """A connection from a kubeconfig's text (its current context, or its only one, unless ``context``)."""
    try:
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise InvalidKubeconfig(f"member {name}: the kubeconfig is not a YAML mapping")
        config = KubeConfig.from_dict(doc)
        contexts = list(config.contexts)
        chosen = context or doc.get("current-context") or (contexts[0] if len(contexts) == 1 else None)
        if not chosen or chosen not in config.contexts:
            raise InvalidKubeconfig(
                f"member {name}: the kubeconfig names no usable context (contexts: {', '.join(contexts) or 'none'}); "
                "set current-context")
        single = config.get(context_name=chosen)
    except (ConfigError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise InvalidKubeconfig(f"member {name}: cannot read the kubeconfig: {exc}") from exc
    if single is None:
        raise InvalidKubeconfig(f"member {name}: context {chosen!r} has no cluster or user")
    return ClusterConnection(name, single, settings)


def control_plane_connection(
    *, kubeconfig: Path | None, context: str | None, settings: ConnectionSettings | None = None,
    name: str = "control-plane",
) -> ClusterConnection:
    """The cluster the operator runs in: a kubeconfig file and context, else the pod's service account."""
    try:
        config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig is not None else KubeConfig.from_env()
        single = config.get(context_name=context)
    except (ConfigError, OSError, KeyError, ValueError) as exc:
        raise InvalidKubeconfig(f"control plane: cannot read {kubeconfig or 'the in-cluster config'}: {exc}") from exc
    if single is None:
        raise InvalidKubeconfig(f"control plane: kubeconfig {kubeconfig} has no context {context!r}")
    return ClusterConnection(name, single, settings)


def _member(secret: Any) -> MemberSecret | None:
    meta = secret.metadata
    cluster = (meta.labels or {}).get(MEMBER_LABEL, "")
    if not cluster:
        return None
    encoded = (secret.data or {}).get(KUBECONFIG_KEY)
    if not encoded:
        return MemberSecret(cluster, meta.name, "", error=f"Secret {meta.name} has no {KUBECONFIG_KEY!r} key")
    try:
        text = base64.b64decode(encoded).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        return MemberSecret(cluster, meta.name, "", error=f"Secret {meta.name}: {KUBECONFIG_KEY} is not text: {exc}")
    return MemberSecret(cluster, meta.name, text)


async def list_member_secrets(conn: ClusterConnection, namespace: str) -> list[MemberSecret]:
    """Every member registration in ``namespace`` (one LIST); sorted by cluster then Secret name."""

    async def do(client: Any) -> list[Any]:
        return [s async for s in client.list(Secret, namespace=namespace, labels={MEMBER_LABEL: None})]

    secrets = await conn.call("list", f"list Secret in {namespace} -l {MEMBER_LABEL}", do)
    found = [m for m in (_member(s) for s in secrets) if m is not None]
    return sorted(found, key=lambda m: (m.cluster, m.secret))


async def watch_member_secrets(
    conn: ClusterConnection, namespace: str, changed: Callable[[], Awaitable[None]], *, backoff: float = 1.0
) -> None:
    """Call ``changed()`` whenever a member Secret is added, modified or deleted; runs until cancelled.

    Events are only wake-ups: the caller re-lists (level-based), so a missed event or a
    reconnect can never leave a stale member behind.
    """
    while True:
        client = conn.stream_client()  # a long-lived stream never shares the connection's HTTP/2 client
        try:
            stream = client.watch(Secret, namespace=namespace, labels={MEMBER_LABEL: None}, server_timeout=60)
            async for _op, _obj in stream:
                await changed()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any transport or API error: reconnect; the re-list is the source of truth
            log.debug("watch of member Secrets in %s broke: %s", namespace, exc)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await client.close()
        await asyncio.sleep(backoff)
        await changed()


async def ping(conn: ClusterConnection) -> None:
    """One cheap call; returns if the API server answered at all (even 403/404), else raises ClusterUnreachable."""

    async def do(client: Any) -> None:
        await client.get(Namespace, "default")

    try:
        await conn.call("get", "Namespace default", do)
    except ApiFailure:
        return
