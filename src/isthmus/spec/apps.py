"""Application kinds and their registry.

A new application kind (say, a ScyllaCluster or a Kafka) is a new module that subclasses
:class:`App` and decorates itself with :func:`register_kind`; nothing here or in
``cassandra.py`` changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import Field

from ._base import SpecModel
from .fleet import Metadata

__all__ = ["KINDS", "App", "AppDatacenter", "register_kind"]


class AppDatacenter(SpecModel):
    """The part of a datacenter-like placement every app kind shares."""

    name: str
    cluster: str = Field(description="The Fleet cluster this datacenter runs in")


class App(SpecModel):
    """Common shape of every application document: identity plus the clusters it lands in."""

    api_version: str = Field(alias="apiVersion")
    kind: str
    metadata: Metadata

    def member_clusters(self) -> list[str]:
        raise NotImplementedError

    def fleet_name(self) -> str | None:
        raise NotImplementedError


KINDS: dict[str, type[SpecModel]] = {}
M = TypeVar("M", bound=type[SpecModel])


def register_kind(kind: str) -> Callable[[M], M]:
    def register(model: M) -> M:
        KINDS[kind] = model
        return model

    return register
