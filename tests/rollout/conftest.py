"""Rollout tests use short timeouts, so that faults show fast."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fixtures.labspecs import lab_registry
from isthmus.kube import ClusterRegistry, ConnectionSettings
from isthmus.lab import Lab


@pytest.fixture
async def registry(lab3: Lab) -> AsyncIterator[ClusterRegistry]:
    async with lab_registry(lab3, ConnectionSettings(timeout=3.0, breaker_cooldown=2.0)) as connections:
        yield connections
