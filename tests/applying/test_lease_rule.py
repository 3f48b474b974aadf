"""The one expiry rule of Leases (isthmus.kube.leases), shared by the rollout lock and leader election.

Pure: records are built in memory and both clocks are fakes, so "time passes" without sleeping.
"""

from __future__ import annotations

from isthmus.kube.leases import LeaseObserver, LeaseRecord, Term, lease_object
from isthmus.rollout.locking import LeaseState


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def record(holder: str | None, renewed: float | None, duration: float = 10.0) -> LeaseRecord:
    return LeaseRecord(name="l", namespace="ns", holder=holder, acquired_at=renewed, renewed_at=renewed,
                       duration=duration)


def observer(mono: float = 100.0, wall: float = 5000.0) -> tuple[LeaseObserver, Clock, Clock]:
    m, w = Clock(mono), Clock(wall)
    return LeaseObserver(monotonic=m, wall=w), m, w


def test_a_record_found_at_the_first_read_counts_from_its_renew_time() -> None:
    obs, mono, _ = observer()
    assert obs.observe(record("a", renewed=4997.0)) == 7.0  # renewed 3 s ago by the wall clock
    mono.now += 7.0
    assert obs.observe(record("a", renewed=4997.0)) == 0.0  # unchanged since: expired right then


def test_a_holder_dead_for_longer_than_a_duration_is_expired_at_the_first_read() -> None:
    obs, _, _ = observer()
    assert obs.observe(record("a", renewed=4000.0)) < 0


def test_a_renew_time_in_the_future_counts_as_now() -> None:
    obs, _, _ = observer()
    assert obs.observe(record("a", renewed=9000.0)) == 10.0  # a clock far ahead buys no extra time


def test_a_renewal_seen_between_reads_counts_from_the_read_that_saw_it_whatever_the_clocks_say() -> None:
    obs, mono, wall = observer()
    obs.observe(record("a", renewed=4999.0))
    mono.now += 8.0
    wall.now += 500.0  # our wall clock jumps: it must not matter any more
    assert obs.observe(record("a", renewed=4000.0)) == 10.0  # a changed record: a full duration from now
    mono.now += 9.5
    assert obs.observe(record("a", renewed=4000.0)) == 0.5
    mono.now += 1.0
    assert obs.observe(record("a", renewed=4000.0)) < 0


def test_a_new_holder_after_a_free_lease_counts_from_the_read_that_saw_it() -> None:
    obs, mono, _ = observer()
    assert obs.observe(None) == 0.0
    mono.now += 1.0
    assert obs.observe(record("b", renewed=1.0)) == 10.0  # seen appear: not judged by its (odd) renewTime
    assert obs.observe(record(None, renewed=None)) == 0.0


def test_our_own_term_runs_from_the_start_of_the_call_that_confirmed_it() -> None:
    mono = Clock(50.0)
    term = Term(15.0, monotonic=mono)
    assert not term.valid
    term.confirmed(48.0)
    assert term.valid and term.remaining() == 13.0
    mono.now = 63.0
    assert not term.valid
    term.confirmed(62.0)
    term.end()
    assert not term.valid


def test_the_lock_reads_its_lease_by_the_same_rule() -> None:
    obj = lease_object("isthmus-lock-x", "isthmus-system", holder="me", acquired=1000.0, renewed=1010.0,
                       duration=15, transitions=2, labels={}, annotations={"isthmus.dev/fencing-token": "7"},
                       resource_version="9")
    obj["spec"]["renewTime"] = "1970-01-01T00:16:50.000000Z"  # as the server returns it: a MicroTime string
    state = LeaseState.of("x", obj)
    assert (state.holder, state.token, state.renewed_at, state.duration, state.transitions) == ("me", 7, 1010.0,
                                                                                                15.0, 2)
    assert state.live(1024.9) and not state.live(1025.0)
    assert state.live(900.0)  # a reader whose clock is behind the holder's sees it live, not live longer
    released = lease_object("l", "ns", holder=None, acquired=None, renewed=1.0, duration=15, transitions=3,
                            labels={})
    assert "holderIdentity" not in released["spec"] and LeaseRecord.of(released, default_duration=1).holder is None
