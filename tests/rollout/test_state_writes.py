"""The engine's rollout-state writer: concurrent saves are grouped, none is lost, a refusal is not swallowed.

Time is a :class:`FakeClock`: a save "takes" 50 ms of it, and a test says when those pass, so "a write is
in flight" and "nothing was written" are conditions, never a real sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from fixtures.labspecs import app_doc, fleet_doc, load
from isthmus.rollout import EngineStats, FakeClock, Fenced, RolloutState, plan_rollout
from isthmus.rollout.recording import StateWriter

T = TypeVar("T")


class SlowStore:
    """Stands in for the ConfigMap store: each save takes a while, and what was saved is kept."""

    def __init__(self, clock: FakeClock, fail_with: BaseException | None = None) -> None:
        self.clock = clock
        self.conn = SimpleNamespace(name="c1")
        self.saved: list[dict[str, Any]] = []
        self.fail_with = fail_with

    async def save(self, state: RolloutState) -> None:
        document = state.to_dict()
        await self.clock.sleep(0.05)
        if self.fail_with is not None:
            raise self.fail_with
        self.saved.append(document)


def fresh_state() -> RolloutState:
    _, app = load(fleet_doc(), app_doc("wr"))
    return RolloutState.new(app="wr", kind="apply", revision=1, previous=None, plan=plan_rollout(app))


def writer(store: SlowStore, state: RolloutState) -> StateWriter:
    return StateWriter(store, state, lambda _c, _m: None, EngineStats(), 0.01, store.clock)  # type: ignore[arg-type]


async def driven(clock: FakeClock, work: Awaitable[T]) -> T:
    """Run ``work`` to the end, moving the clock on whenever everything is waiting for it."""
    task = asyncio.ensure_future(work)
    while not task.done():
        if clock.sleepers():
            await clock.advance(0.05)
        else:
            await asyncio.sleep(0)
    return task.result()


async def test_ten_lanes_saving_at_once_cost_two_writes_and_the_last_holds_every_change() -> None:
    clock = FakeClock()
    store, state = SlowStore(clock), fresh_state()
    w = writer(store, state)

    async def lane(i: int) -> None:
        state.event(f"lane {i} done")
        await w.save()

    await driven(clock, asyncio.gather(*(lane(i) for i in range(10))))
    assert len(store.saved) == 2
    assert all(f"lane {i} done" in " ".join(store.saved[-1]["log"]) for i in range(10))


async def test_a_change_made_while_a_background_write_is_in_flight_is_written_too() -> None:
    clock = FakeClock()
    store, state = SlowStore(clock), fresh_state()
    w = writer(store, state)
    state.event("first")
    await w.save(wait=False)
    await clock.until_sleeping()  # the write of "first" is in flight
    state.event("second")
    await w.save(wait=False)
    await driven(clock, w.close())
    assert len(store.saved) == 2 and "second" in " ".join(store.saved[-1]["log"])
    state.event("third")
    w.changed()  # noted: written by the next save, not on its own
    await clock.advance(1.0)  # a second passes, and nothing is started or waiting to be written
    assert not w.writing and clock.sleepers() == 0
    assert len(store.saved) == 2
    await driven(clock, w.flush())
    assert len(store.saved) == 3 and "third" in " ".join(store.saved[-1]["log"])


async def test_a_refused_background_write_is_raised_by_the_next_waiting_save() -> None:
    refusal = Fenced("c1", "wr", 1, 2)
    clock = FakeClock()
    store, state = SlowStore(clock, fail_with=refusal), fresh_state()
    w = writer(store, state)
    await w.save(wait=False)
    await driven(clock, w.close())
    assert w.error is refusal
    with pytest.raises(Fenced):
        await w.save()


async def test_writing_what_is_pending_writes_only_when_something_is() -> None:
    clock = FakeClock()
    store, state = SlowStore(clock), fresh_state()
    w = writer(store, state)
    w.write_pending()
    assert not w.writing
    await w.close()
    assert store.saved == []
    state.event("prepare done")
    w.changed()
    w.write_pending()
    await driven(clock, w.close())
    assert len(store.saved) == 1 and "prepare done" in " ".join(store.saved[0]["log"])
    w.write_pending()
    await driven(clock, w.close())
    assert len(store.saved) == 1
