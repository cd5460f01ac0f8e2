"""snapmerge's lease lock beside the original's lock manager, on one DynamoDB table (embedded).

The original side is :mod:`tests.compat.original_lock`: a writer and reader that act on the row
exactly as the original does (whole-row PutItem acquire and heartbeat, DeleteItem release, its
item parser). Each interleaving below failed before snapmerge read foreign rows itself:

* a live original row with a space-separated ``expires`` was taken (two holders at once);
* the original replacing or deleting the row restarted snapmerge's fence at 1;
* after a snapmerge release the original's ``get_compaction_lock`` and ``cleanup_expired_locks``
  raised ``Lock item missing keys: {'owner'}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.errors import LeaseLostError, LockBusyError
from snapmerge.lock import LeaseLock
from tests.clocks import Wall
from tests.compat.original_lock import (
    ExpiryFormat,
    OriginalLockError,
    OriginalLockManager,
    original_expiry,
)

COLLECTION = "words"
LOCK = f"chroma-{COLLECTION}-update"
ORIGINAL_LEASE = timedelta(minutes=1)  # the stream compactor's LOCK_DURATION_MINUTES default
PHASE = timedelta(seconds=45)


@pytest.fixture
def wall() -> Wall:
    return Wall(datetime(2026, 12, 1, 22, 0, 33, 250000, tzinfo=UTC))


@pytest.fixture
def table(aws: Any, wall: Wall) -> DynamoLeaseTable:
    return DynamoLeaseTable(aws.table, clock=wall)


@pytest.fixture
def lock(table: DynamoLeaseTable) -> LeaseLock:
    return LeaseLock(table, duration=timedelta(minutes=16), heartbeat_interval=timedelta(hours=1))


def original(
    aws: Any, wall: Wall, fmt: ExpiryFormat = ExpiryFormat.ISO_AWARE
) -> OriginalLockManager:
    return OriginalLockManager(aws.table, clock=wall, expiry_format=fmt)


@pytest.mark.parametrize("fmt", list(ExpiryFormat))
def test_a_live_original_holder_is_never_taken_over(
    aws: Any, wall: Wall, lock: LeaseLock, table: DynamoLeaseTable, fmt: ExpiryFormat
) -> None:
    theirs = original(aws, wall, fmt)
    owner = theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)
    stored = table.read_raw(LOCK, COLLECTION)
    assert stored is not None and "expires_ms" not in stored  # the original's shape

    wall.advance(timedelta(seconds=59))
    with pytest.raises(LockBusyError) as caught:
        lock.acquire(LOCK, COLLECTION, duration=PHASE)
    assert caught.value.holder == owner
    assert theirs.get_compaction_lock(LOCK, COLLECTION) is not None  # still theirs, untouched

    wall.advance(timedelta(seconds=2))  # now past their expiry (whole seconds for SPACE/ZULU)
    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as lease:
        assert lease.grant.owner != owner


def test_the_space_separated_row_of_the_issue_is_busy(
    aws: Any, wall: Wall, lock: LeaseLock
) -> None:
    """``2026-12-01 22:01:33`` held at 22:00:33: text comparison called it expired."""
    original(aws, wall, ExpiryFormat.SPACE).acquire(LOCK, COLLECTION, ORIGINAL_LEASE)

    with pytest.raises(LockBusyError) as caught:
        lock.acquire(LOCK, COLLECTION)
    assert caught.value.expires == "2026-12-01 22:01:33"


def test_the_fence_rises_when_the_original_deletes_the_row(
    aws: Any, wall: Wall, lock: LeaseLock, table: DynamoLeaseTable
) -> None:
    theirs = original(aws, wall)
    fences = []
    for _ in range(3):
        with lock.acquire(LOCK, COLLECTION, duration=PHASE) as lease:
            fences.append(lease.fence)
        wall.advance(timedelta(seconds=1))
        owner = theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)  # takes our released row
        theirs.release(LOCK, COLLECTION, owner)  # and deletes it
        assert table.read_raw(LOCK, COLLECTION) is None

    assert fences == [1, 2, 3]


def test_the_fence_rises_when_the_original_replaces_the_row(
    aws: Any, wall: Wall, lock: LeaseLock
) -> None:
    theirs = original(aws, wall, ExpiryFormat.SPACE)
    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as first:
        pass
    wall.advance(timedelta(seconds=1))
    theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)  # its whole row: no fence in it
    wall.advance(ORIGINAL_LEASE + timedelta(seconds=1))  # its lease lapsed, row left behind

    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as second:
        assert second.fence == first.fence + 1


def test_after_a_snapmerge_release_the_original_tools_read_and_clean_the_row(
    aws: Any, wall: Wall, lock: LeaseLock, table: DynamoLeaseTable
) -> None:
    theirs = original(aws, wall)
    with lock.acquire(LOCK, COLLECTION, duration=PHASE):
        pass

    row = theirs.get_compaction_lock(LOCK, COLLECTION)  # raised "missing keys: {'owner'}"
    assert row is not None
    assert original_expiry(row) <= wall.now  # not a live holder to the original either

    wall.advance(timedelta(seconds=1))
    assert theirs.cleanup_expired_locks() == 1  # parses every expired row, then deletes it
    assert table.read_raw(LOCK, COLLECTION) is None
    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as lease:
        assert lease.fence == 2


def test_the_original_can_acquire_right_after_a_snapmerge_release(
    aws: Any, wall: Wall, lock: LeaseLock, table: DynamoLeaseTable
) -> None:
    theirs = original(aws, wall)
    with lock.acquire(LOCK, COLLECTION, duration=PHASE):
        pass
    wall.advance(timedelta(milliseconds=1))

    owner = theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)
    held = theirs.get_compaction_lock(LOCK, COLLECTION)
    assert held is not None and held.owner == owner
    with pytest.raises(LockBusyError):
        lock.acquire(LOCK, COLLECTION)


def test_while_snapmerge_holds_the_original_is_refused(
    aws: Any, wall: Wall, lock: LeaseLock
) -> None:
    theirs = original(aws, wall)
    with lock.acquire(LOCK, COLLECTION, duration=PHASE):
        wall.advance(timedelta(seconds=30))
        with pytest.raises(OriginalLockError):
            theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)
        held = theirs.get_compaction_lock(LOCK, COLLECTION)
        assert held is not None and original_expiry(held) > wall.now


def test_the_original_heartbeat_over_our_row_makes_our_publish_check_fail(
    aws: Any, wall: Wall, lock: LeaseLock
) -> None:
    """Its lease lapsed, we took the row, its heartbeat rewrote it: we must not publish."""
    theirs = original(aws, wall)
    stale = theirs.acquire(LOCK, COLLECTION, ORIGINAL_LEASE)
    wall.advance(ORIGINAL_LEASE + timedelta(seconds=1))
    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as lease:
        theirs.heartbeat(LOCK, COLLECTION, stale, ORIGINAL_LEASE)  # no owner check
        with pytest.raises(LeaseLostError):
            lease.verify(timedelta(seconds=30))
    held = theirs.get_compaction_lock(LOCK, COLLECTION)
    assert held is not None and held.owner == stale  # our release left their row alone
