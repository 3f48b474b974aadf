"""Shared bits of the rollout lab tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from isthmus.kube import ClusterRegistry
from isthmus.lab import Lab
from isthmus.rollout import (
    DEFAULT_GATES,
    GateContext,
    GateResult,
    GateVerdict,
    Outcome,
    ProgressStore,
    RolloutOptions,
    RolloutState,
)
from isthmus.rollout.gates import overall

FAST = RolloutOptions(poll_interval=0.3)


class Witness:
    """The default gates, watched: it records, per step, each verdict they gave, so a test waits for "the gates
    held this step back N times" (a condition) instead of sleeping and hoping nothing happened meanwhile."""

    name = "witness"

    def __init__(self) -> None:
        self.verdicts: dict[str, list[GateVerdict]] = {}
        self._seen = asyncio.Event()

    def options(self, **kw: Any) -> RolloutOptions:
        return RolloutOptions(poll_interval=0.3, gates=(*DEFAULT_GATES, self), **kw)

    async def check(self, ctx: GateContext) -> GateResult:
        results = [await g.check(ctx) for g in DEFAULT_GATES]
        self.verdicts.setdefault(ctx.step.id, []).append(overall(results))
        self._seen.set()
        return GateResult(self.name, GateVerdict.PASS)

    async def held(self, step: str, times: int, verdict: GateVerdict, within: float = 60.0) -> None:
        """Wait until the gates gave ``step`` ``verdict`` ``times`` times more than when this was called."""
        start = self.verdicts.get(step, []).count(verdict)
        async with asyncio.timeout(within):
            while self.verdicts.get(step, []).count(verdict) < start + times:
                self._seen.clear()
                await self._seen.wait()


def statefulsets(lab: Lab, cluster: str, namespace: str) -> dict[str, dict[str, Any]]:
    out = json.loads(lab.kubectl(cluster, "get", "statefulsets", "-n", namespace, "-o", "json"))
    return {i["metadata"]["name"]: i for i in out["items"]}


def generations(lab: Lab, namespace: str) -> dict[str, int]:
    return {name: int(s["metadata"]["generation"]) for c in ("c1", "c2", "c3")
            for name, s in statefulsets(lab, c, namespace).items()}


def cpu_requests(lab: Lab, namespace: str) -> dict[str, str]:
    return {name: s["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
            for c in ("c1", "c2", "c3") for name, s in statefulsets(lab, c, namespace).items()}


async def wait_state(registry: ClusterRegistry, app: str, check: Callable[[RolloutState], bool],
                     within: float = 120.0) -> RolloutState:
    store = ProgressStore(registry["c1"], app)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        state = await store.load()
        if state is not None and check(state):
            return state
        assert loop.time() < deadline, state.to_dict() if state else "no state"
        await asyncio.sleep(0.3)


def outcome(state: RolloutState, step: str) -> Outcome:
    return state.steps[step].outcome
