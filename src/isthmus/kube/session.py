"""What this process learnt from one API server: the session a :class:`~isthmus.kube.ClusterConnection` carries.

A session holds hints that save round trips, never a source of truth: every decision based on
one ends in a compare-and-swap or is confirmed by a read (:mod:`.records` says how each is used).

- ``namespaces``: namespaces known to exist (:func:`~isthmus.kube.ensure_namespace` asks once);
- ``config_maps``: for each ConfigMap read or written through :mod:`.records`, its version and data;
- ``released_leases``: each Lease as this process last released it (the rollout lock takes it
  again with one write against that version);
- :meth:`Session.part`: a store of a module above this package, under that module's name (the
  rollout's revisions, which never change once written).

Every connection is created with a session of its own (or is handed one), so it lives exactly as
long as the connection: in the CLI, one command; in the operator, until the member's connection
is replaced. The same code path reads and writes it in both, through the connection it was given,
instead of a process-global table keyed by connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from .leases import LeaseRecord

__all__ = ["SeenConfigMap", "Session"]

T = TypeVar("T")


@dataclass
class SeenConfigMap:
    """A ConfigMap as last read or written here: its version and data (``None`` data: it did not exist)."""

    version: str
    data: dict[str, str] | None


@dataclass
class Session:
    namespaces: set[str] = field(default_factory=set)
    config_maps: dict[tuple[str, str], SeenConfigMap] = field(default_factory=dict)
    """By (namespace, name)."""
    released_leases: dict[tuple[str, str], LeaseRecord] = field(default_factory=dict)
    """By (namespace, name): the Lease as this process released it last."""

    _parts: dict[str, Any] = field(default_factory=dict)

    def part(self, key: str, factory: Callable[[], T]) -> T:
        """The store kept under ``key`` (the owning module's name), made by ``factory`` at first use."""
        found = self._parts.get(key)
        if found is None:
            found = self._parts[key] = factory()
        return cast(T, found)

    def clear(self) -> None:
        """Forget everything (tests; a server that was rebuilt)."""
        self.namespaces.clear()
        self.config_maps.clear()
        self.released_leases.clear()
        self._parts.clear()
