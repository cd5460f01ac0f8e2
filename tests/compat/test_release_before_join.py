"""A lease releases its row before joining its heartbeat thread (issue 12, perf round): a renew
that was in flight when the release went out must not revive the row, neither over the original
writer that took the lock next (a zombie holder) nor as a fence that goes back.

The interleaving is forced, not hoped for: the heartbeat's renew is held at the table's door until
the release has been applied and the original writer has taken the row; then it goes through.
Real DynamoDB API (embedded server).
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.lock import LeaseLock
from snapmerge.ports import LeaseGrant
from tests.compat.original_lock import OriginalLockManager

COLLECTION = "words"
LOCK = f"chroma-{COLLECTION}-update"


class HeldRenew(DynamoLeaseTable):
    """The first renew waits (after it was sent, as far as the lease knows) for ``go``."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.renewing, self.go = threading.Event(), threading.Event()
        self.outcomes: list[str] = []

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        if not self.renewing.is_set():
            self.renewing.set()
            assert self.go.wait(30)
            try:
                out = super().renew(grant, duration)
            except Exception as exc:
                self.outcomes.append(type(exc).__name__)
                raise
            self.outcomes.append("renewed")
            return out
        return super().renew(grant, duration)


def _zombies(table: DynamoLeaseTable, theirs: OriginalLockManager, owner: str) -> list[str]:
    """What the check demands after the late renew: the row is the original writer's, as it
    wrote it."""
    found = []
    row = theirs.get_compaction_lock(LOCK, COLLECTION)
    if row is None or row.owner != owner:
        found.append(f"the row is not the original writer's: {row}")
    raw = table.read_raw(LOCK, COLLECTION) or {}
    if "expires_ms" in raw or "fence" in raw:
        found.append(f"our renew wrote into the original writer's row: {sorted(raw)}")
    return found


def test_a_renew_in_flight_at_the_release_never_revives_the_row(aws: Any) -> None:
    table = HeldRenew(aws.table)
    lock = LeaseLock(
        table, duration=timedelta(seconds=30), heartbeat_interval=timedelta(seconds=0.05)
    )
    theirs = OriginalLockManager(aws.table)

    lease = lock.acquire(LOCK, COLLECTION)
    ours = lease.fence
    assert table.renewing.wait(30)  # the heartbeat's renew is in flight

    releasing = threading.Thread(target=lease.release)
    releasing.start()  # releases the row, then joins the heartbeat (held at the door)
    for _ in range(3000):  # the release reaches the table without waiting for the heartbeat
        if table.read(LOCK, COLLECTION) is None:
            break
        threading.Event().wait(0.01)
    assert table.read(LOCK, COLLECTION) is None, "the release waited for the heartbeat"
    owner = theirs.acquire(LOCK, COLLECTION, timedelta(minutes=1))  # the original writer is next
    table.go.set()  # now the late renew reaches the table
    releasing.join(30)

    assert not releasing.is_alive()
    assert table.outcomes == ["LeaseLostError"]  # the fault fired: a renew after the release
    assert lease.lost.is_set() and lease.released
    assert _zombies(table, theirs, owner) == []

    theirs.release(LOCK, COLLECTION, owner)
    with LeaseLock(
        DynamoLeaseTable(aws.table),
        duration=timedelta(seconds=30),
        heartbeat_interval=timedelta(seconds=10),
    ).acquire(LOCK, COLLECTION) as after:
        assert after.fence > ours  # the fence never goes back


def test_negative_control_a_renew_that_rewrote_the_row_is_caught(aws: Any) -> None:
    table = DynamoLeaseTable(aws.table)
    theirs = OriginalLockManager(aws.table)
    owner = theirs.acquire(LOCK, COLLECTION, timedelta(minutes=1))
    assert _zombies(table, theirs, owner) == []
    # what an unconditional renew would do: our expiry fields on their row
    table._update(
        LOCK,
        COLLECTION,
        update="SET #expires_ms = :expires_ms",
        condition="attribute_exists(PK)",
        values={":expires_ms": {"N": "1"}},
    )
    assert _zombies(table, theirs, owner) != []
