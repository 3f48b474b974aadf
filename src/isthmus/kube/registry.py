"""Member clusters by name: which kubeconfig context reaches each, and one connection apiece."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ConfigError

from ..spec import Fleet
from .connection import ClusterConnection, ConnectionSettings
from .errors import UnknownContext

__all__ = ["ClusterRegistry", "default_kubeconfig"]


def default_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(first) if first else Path.home() / ".kube" / "config"


class ClusterRegistry(Mapping[str, ClusterConnection]):
    """Connections to the Fleet's clusters, checked up front: a missing context fails before any write."""

    def __init__(self, connections: Iterable[ClusterConnection]) -> None:
        self._connections = {c.name: c for c in connections}

    @classmethod
    def from_fleet(
        cls,
        fleet: Fleet,
        kubeconfig: Path | None = None,
        *,
        only: Iterable[str] | None = None,
        settings: ConnectionSettings | None = None,
    ) -> ClusterRegistry:
        path = kubeconfig or default_kubeconfig()
        try:
            config = KubeConfig.from_file(str(path))
        except (ConfigError, OSError, ValueError) as exc:
            raise UnknownContext(f"cannot read kubeconfig {path}: {exc}; set KUBECONFIG or --kubeconfig") from exc
        wanted = set(only) if only is not None else None
        connections = []
        for cluster in fleet.spec.clusters:
            if wanted is not None and cluster.name not in wanted:
                continue
            context = cluster.kube_context
            if context not in config.contexts:
                known = ", ".join(sorted(config.contexts)) or "none"
                raise UnknownContext(
                    f"cluster {cluster.name!r} uses kube context {context!r}, which {path} does not have "
                    f"(contexts: {known}); fix spec.clusters[].context or the kubeconfig"
                )
            single = config.get(context_name=context)
            if single is None:
                raise UnknownContext(f"kube context {context!r} in {path} has no cluster or user")
            connections.append(ClusterConnection(cluster.name, single, settings))
        return cls(connections)

    def __getitem__(self, name: str) -> ClusterConnection:
        return self._connections[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._connections)

    def __len__(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        for conn in self._connections.values():
            await conn.close()
