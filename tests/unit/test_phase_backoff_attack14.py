"""Attacks on the phase locks' backoff (issue 12/14: ``PHASE_BACKOFF``, 25 ms → 100 ms).

Driven through ``MergeKit.acquire`` as the two-phase path calls it (a short ``duration``), on
the in-memory lease table with a fake clock and sleep: a waiter behind a holder gives up at
``lock_wait_timeout`` having slept at most the phase cap at a time, a failing table stops after
the lock's ``error_attempts``, and the legacy lock (and the fallback) keeps the lock's backoff.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.backoff import PHASE_BACKOFF, Backoff
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.errors import LockBusyError, LockError
from snapmerge.lock import LeaseLock
from snapmerge.merging import MergeKit
from tests.unit.test_lock import FakeTime

WAIT = timedelta(seconds=3)
REQUEST = FinalMergeRequest("b1", Database.WORDS, ("intermediate/b1/chunk-0/",))


def _kit(tmp_path: Path, fake: FakeTime, backoff: Backoff | None = None) -> MergeKit:
    table = MemoryLeaseTable(clock=fake.wall)
    lock = LeaseLock(
        table,
        duration=timedelta(minutes=1),
        heartbeat_interval=timedelta(hours=1),
        clock=fake.monotonic,
        sleep=fake.sleep,
        rng=random.Random(4),
        backoff=backoff,
    )
    settings = Settings(
        bucket="memory", table="memory", chroma_root=tmp_path, lock_wait_timeout=WAIT
    )
    return MergeKit(MemoryBlobStore(), MemoryIndex(), table, settings, lock=lock)


def _hold(kit: MergeKit) -> None:
    kit.lock.table.try_acquire(  # another writer's legacy merge, for longer than we wait
        kit.lock_id(REQUEST), REQUEST.collection, "other", timedelta(hours=1)
    )


@pytest.mark.parametrize("phase", [True, False])
def test_a_waiter_gives_up_at_lock_wait_timeout(tmp_path: Path, phase: bool) -> None:
    fake = FakeTime()
    kit = _kit(tmp_path, fake)
    _hold(kit)
    started = fake.seconds
    with pytest.raises(LockBusyError):
        kit.acquire(REQUEST, duration=timedelta(seconds=5) if phase else None)

    assert fake.seconds - started == pytest.approx(WAIT.total_seconds())  # not a sleep past it
    cap = (PHASE_BACKOFF if phase else Backoff()).cap.total_seconds()
    assert max(fake.sleeps) <= cap
    assert max(fake.sleeps) > cap / 2  # reached its own cap: the phase's, or the lock's 400 ms


@pytest.mark.parametrize("phase", [True, False])
@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_a_failing_table_stops_after_the_locks_error_attempts(
    tmp_path: Path, phase: bool, attempts: int
) -> None:
    fake = FakeTime()
    kit = _kit(tmp_path, fake, Backoff(error_attempts=attempts))
    table = kit.lock.table
    assert isinstance(table, MemoryLeaseTable)
    table.fail_next("try_acquire", LockError("AccessDenied"), count=10)

    with pytest.raises(LockError) as caught:
        kit.acquire(REQUEST, duration=timedelta(seconds=5) if phase else None)

    assert not isinstance(caught.value, LockBusyError)
    assert table.calls["try_acquire"] == attempts


def test_a_phase_lock_never_polls_slower_than_the_locks_own_backoff(tmp_path: Path) -> None:
    fake = FakeTime()
    quick = Backoff(base=timedelta(milliseconds=2), cap=timedelta(milliseconds=10))
    kit = _kit(tmp_path, fake, quick)
    _hold(kit)
    with pytest.raises(LockBusyError):
        kit.acquire(REQUEST, duration=timedelta(seconds=5))
    assert max(fake.sleeps) <= quick.cap.total_seconds()
