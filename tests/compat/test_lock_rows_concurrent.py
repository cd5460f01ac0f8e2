"""snapmerge workers and the original's lock manager hammering one lock row at once (embedded).

Generator: three snapmerge workers take the lease in turns (waiting, real clocks) and increment a
shared counter non-atomically inside it; beside them an "original" thread takes the same row the
original's way whenever it is free and releases by deleting it, and runs the original's
``cleanup_expired_locks`` (which deletes every row snapmerge released).

Checker: in the order holders entered, no two holds overlap (snapmerge's or the original's), and
snapmerge's fences strictly rise; no increment is lost. The fault must fire: the original must
have deleted the row between snapmerge grants. Negative control: the same run with the fence kept
only in the row (as before ADR 0002's addendum) is reported by the checker.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from snapmerge.adapters import dynamodb_lock
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.backoff import Backoff
from snapmerge.lock import LeaseLock
from tests.compat.original_lock import OriginalLockError, OriginalLockManager

COLLECTION = "words"
LOCK = f"chroma-{COLLECTION}-update"
WORKERS, ROUNDS = 3, 6


@dataclass(frozen=True)
class Hold:
    who: str
    fence: int | None  # None: the original's (it has no fence)
    enter: int
    exit: int


def violations(holds: list[Hold]) -> list[str]:
    found = []
    ordered = sorted(holds, key=lambda h: h.enter)
    for before, after in itertools.pairwise(ordered):
        if after.enter < before.exit:
            found.append(f"{after.who} entered while {before.who} held")
    fenced = [h for h in ordered if h.fence is not None]
    for before, after in itertools.pairwise(fenced):
        if after.fence is not None and before.fence is not None and after.fence <= before.fence:
            found.append(f"fence {after.fence} entered after fence {before.fence}")
    return found


@dataclass
class Run:
    ticks: itertools.count[int] = field(default_factory=itertools.count)
    counter: int = 0
    holds: list[Hold] = field(default_factory=list)
    deletions: int = 0
    deleted_at: list[int] = field(default_factory=list)
    original_holds: int = 0
    errors: list[BaseException] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def critical(self, who: str, fence: int | None) -> None:
        enter = next(self.ticks)
        value = self.counter
        time.sleep(0.002)  # let another holder in, if the lock allows it
        self.counter = value + 1
        with self.guard:
            self.holds.append(Hold(who, fence, enter, next(self.ticks)))


def _snapmerge_worker(run: Run, lock: LeaseLock, name: str) -> None:
    try:
        for _ in range(ROUNDS):
            with lock.acquire(LOCK, COLLECTION, wait=timedelta(seconds=60)) as lease:
                run.critical(name, lease.fence)
    except BaseException as exc:
        run.errors.append(exc)


def _original_worker(run: Run, theirs: OriginalLockManager, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            try:
                owner = theirs.acquire(LOCK, COLLECTION, timedelta(minutes=1))
            except OriginalLockError:
                pass
            else:
                run.critical("original", None)
                run.original_holds += 1
                theirs.release(LOCK, COLLECTION, owner)  # deletes the row
                run.deletions += 1
                run.deleted_at.append(next(run.ticks))
            cleaned = theirs.cleanup_expired_locks()
            if cleaned:
                run.deletions += cleaned
                run.deleted_at.append(next(run.ticks))
            time.sleep(0.01)
    except BaseException as exc:
        run.errors.append(exc)


def _hammer(aws: Any) -> Run:
    run = Run()
    lock = LeaseLock(
        DynamoLeaseTable(aws.table),
        duration=timedelta(seconds=45),
        heartbeat_interval=timedelta(seconds=15),
        backoff=Backoff(base=timedelta(milliseconds=20), cap=timedelta(milliseconds=200)),
    )
    stop = threading.Event()
    theirs = OriginalLockManager(aws.table)
    original = threading.Thread(target=_original_worker, args=(run, theirs, stop))
    workers = [
        threading.Thread(target=_snapmerge_worker, args=(run, lock, f"snapmerge-{n}"))
        for n in range(WORKERS)
    ]
    original.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    original.join()
    return run


def deleted_between_grants(run: Run) -> bool:
    """The fault where it matters: the row was deleted after one snapmerge hold, before another."""
    ours = sorted(h.exit for h in run.holds if h.fence is not None)
    starts = sorted(h.enter for h in run.holds if h.fence is not None)
    return any(ours[0] < tick < starts[-1] for tick in run.deleted_at) if ours else False


def test_one_holder_at_a_time_and_rising_fences_beside_the_original(aws: Any) -> None:
    run = _hammer(aws)

    assert run.errors == []
    assert run.original_holds > 0 and deleted_between_grants(run)  # the fault fired
    assert violations(run.holds) == []
    assert run.counter == WORKERS * ROUNDS + run.original_holds


def test_negative_control_a_fence_kept_only_in_the_row_is_caught(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the high-water item out of reach, the fence restarts whenever the row is deleted."""

    def fresh_key(lock_id: str, collection: str) -> dict[str, Any]:
        return {"PK": {"S": f"LOCK#{collection}#{lock_id}"}, "SK": {"S": f"X{uuid.uuid4()}"}}

    monkeypatch.setattr(dynamodb_lock, "fence_key", fresh_key)
    run = _hammer(aws)

    assert run.errors == []
    assert deleted_between_grants(run)
    assert any("fence" in v for v in violations(run.holds))
