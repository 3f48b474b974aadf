"""The registry of the session lab's clusters, for the access test that deploys an app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab


@pytest.fixture
async def registry(lab3: Lab) -> AsyncIterator[ClusterRegistry]:
    fleet, _ = load(fleet_doc(), app_doc())
    reg = ClusterRegistry.from_fleet(fleet, lab3.kubeconfig, settings=ConnectionSettings(timeout=5.0))
    try:
        yield reg
    finally:
        await reg.close()
