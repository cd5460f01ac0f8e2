"""LockMeter: each released lease adds its hold under ``<phase>`` and its wait under
``<phase>_wait``, and the totals are the sums over every phase (fake clock, in-memory table)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.lock import Lease, LeaseLock
from snapmerge.lock_meter import LockMeter, wait_key


class Clock:
    """Monotonic seconds and a wall clock that move only when told; ``sleep`` moves them and
    then runs ``on_sleep`` once (another holder letting go while we back off)."""

    def __init__(self) -> None:
        self.seconds = 500.0
        self.on_sleep: list[Lease] = []
        self.meter: LockMeter | None = None

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return datetime(2025, 3, 1, tzinfo=UTC) + timedelta(seconds=self.seconds)

    def sleep(self, seconds: float) -> None:
        self.seconds += seconds
        while self.on_sleep:
            assert self.meter is not None
            self.meter.release(self.on_sleep.pop(), "phase1")


def _lock(clock: Clock, rng: random.Random | None = None) -> LeaseLock:
    """A lease lock on an in-memory table whose time is ``clock``'s (no heartbeat in a test)."""
    return LeaseLock(
        MemoryLeaseTable(clock=clock.wall),
        duration=timedelta(seconds=60),
        heartbeat_interval=timedelta(hours=1),
        clock=clock.monotonic,
        sleep=clock.sleep,
        rng=rng,
    )


def test_each_phase_gets_its_hold_and_its_wait_and_the_totals_are_their_sums() -> None:
    clock = Clock()
    lock = _lock(clock, rng=random.Random(3))
    meter = LockMeter()
    clock.meter = meter
    first = lock.acquire("words", "words")
    clock.seconds += 2.0
    clock.on_sleep.append(first)  # released (as phase1) while the second acquire backs off
    second = lock.acquire("words", "words", wait=timedelta(seconds=30))
    clock.seconds += 3.0
    meter.release(second, "phase3")

    assert first.released and second.released
    assert second.contention >= 1 and second.wait_ms > 0.0  # the second one did wait
    assert meter.phases_ms == pytest.approx(
        {
            "phase1": first.hold_ms,
            "phase1_wait": 0.0,
            "phase3": 3000.0,
            "phase3_wait": second.wait_ms,
        }
    )
    assert first.hold_ms == pytest.approx(2000.0 + second.wait_ms)  # held until it let go
    stats = meter.stats(cas_failures=2, fallback=True)
    assert stats["lock_hold_ms"] == pytest.approx(first.hold_ms + 3000.0)
    assert stats["lock_wait_ms"] == pytest.approx(second.wait_ms)
    assert stats["lock_contention"] == second.contention
    counts = (stats["cas_failures"], stats["cas_retries"], stats["fallback_to_legacy"])
    assert counts == (2, 2, True)


def test_a_phase_taken_twice_is_summed_under_one_key() -> None:
    clock = Clock()
    lock = _lock(clock)
    meter = LockMeter()
    for held in (1.0, 4.0):  # phase 1 again on a rebase
        lease = lock.acquire("lines", "lines")
        clock.seconds += held
        assert meter.release(lease, "phase1") == pytest.approx(held * 1000.0)

    assert meter.phases_ms == pytest.approx({"phase1": 5000.0, wait_key("phase1"): 0.0})
    assert meter.hold_ms == pytest.approx(5000.0)
