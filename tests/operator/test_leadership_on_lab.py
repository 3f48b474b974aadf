"""Lease-based leadership against a real API server: one leader, a standby that takes over after the lease."""

from __future__ import annotations

import asyncio
import time

import pytest

from fixtures.opharness import NAMESPACE, apply_doc
from isthmus.kube.members import control_plane_connection
from isthmus.lab import Lab
from isthmus.operator.leadership import Leadership, LeadershipLost
from isthmus.operator.settings import LeadershipSettings

pytestmark = pytest.mark.lab


async def test_one_leads_the_standby_takes_over_and_the_deposed_one_knows(lab3: Lab) -> None:
    apply_doc(lab3, "c1", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    settings = LeadershipSettings(lease_name="test-leadership", lease_duration=3.0, renew_interval=1.0,
                                  retry_interval=0.2)
    conns = [control_plane_connection(kubeconfig=lab3.kubeconfig, context=lab3.context("c1")) for _ in range(2)]
    a, b = (Leadership(c, NAMESPACE, ident, settings) for c, ident in zip(conns, ("a", "b"), strict=True))
    try:
        await asyncio.wait_for(a.acquire(), 10)
        assert a.is_leader
        assert not await b.try_acquire_or_renew() and b.holder == "a" and not b.is_leader

        # a stops renewing (a pause, a partition): b takes over one lease duration after it last saw a renew.
        started = time.monotonic()
        await asyncio.wait_for(b.acquire(), 10)
        took = time.monotonic() - started
        assert took > 2.0, took  # not before a's lease ran out (how soon after: wait_for's bound, not a measure)
        assert b.is_leader and not a.is_leader, "a's own clock tells it its term is over"
        with pytest.raises(LeadershipLost):
            await asyncio.wait_for(a.keep(), 10)

        await b.release()  # a clean shutdown hands over at once
        started = time.monotonic()
        await asyncio.wait_for(a.acquire(), 10)
        assert time.monotonic() - started < 2.0 and a.transitions >= 1
    finally:
        for conn in conns:
            await conn.close()
