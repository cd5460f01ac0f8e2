"""The lease table in memory: the DynamoDB adapter's contract, for unit tests and local runs.

Same rules as :mod:`snapmerge.adapters.dynamodb_lock` (the contract tests run one suite against
both): acquire only when the row is missing, released or expired (expired means
``expires <= now``); the fence rises by one on every grant and survives release; renew needs the
same owner and fence and an unexpired lease; release by anybody else is a no-op.

Two test aids: an injectable ``clock`` (advance it to expire leases without sleeping) and
:meth:`MemoryLeaseTable.fail_next`, which makes the next calls of one operation raise a given
error, the way a throttled or missing table would.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from snapmerge.errors import LeaseLostError, LockBusyError
from snapmerge.ports import LeaseGrant

OPERATIONS = ("try_acquire", "renew", "release", "read")


@dataclass(frozen=True)
class _Row:
    collection: str
    owner: str | None
    fence: int
    expires: datetime
    heartbeat: datetime


class MemoryLeaseTable:
    """:class:`~snapmerge.ports.LeaseTable` in a dict, behind one lock (thread-safe)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._now = clock or (lambda: datetime.now(UTC))
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._faults: dict[str, deque[Exception]] = {op: deque() for op in OPERATIONS}
        self.calls: Counter[str] = Counter()
        """How often each operation was called (faults included), for tests that wait on beats."""

    # -- test aids -----------------------------------------------------------------------------
    def fail_next(self, op: str, error: Exception, count: int = 1) -> None:
        """Make the next ``count`` calls of ``op`` raise ``error`` without touching the row."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}: expected one of {OPERATIONS}")
        with self._lock:
            self._faults[op].extend([error] * count)

    def _enter(self, op: str) -> None:
        """Count the call and raise a pending fault; the caller holds the lock."""
        self.calls[op] += 1
        if self._faults[op]:
            raise self._faults[op].popleft()

    # -- LeaseTable ----------------------------------------------------------------------------
    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        with self._lock:
            self._enter("try_acquire")
            now = self._now()
            row = self._rows.get(lock_id)
            if row is not None and row.owner is not None and row.expires > now:
                if row.owner == owner:  # an earlier attempt of ours already won
                    return _grant(lock_id, row)
                raise LockBusyError(lock_id, row.owner, _iso(row.expires))
            fence = (row.fence if row is not None else 0) + 1
            new = _Row(collection, owner, fence, now + duration, now)
            self._rows[lock_id] = new
            return _grant(lock_id, new)

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        with self._lock:
            self._enter("renew")
            now = self._now()
            row = self._rows.get(grant.lock_id)
            if row is None or not _is_grant(row, grant) or row.expires <= now:
                raise LeaseLostError(
                    f"lease {grant.lock_id!r} (fence {grant.fence}) expired or was taken over"
                )
            new = replace(row, expires=now + duration, heartbeat=now)
            self._rows[grant.lock_id] = new
            return _grant(grant.lock_id, new)

    def release(self, grant: LeaseGrant) -> None:
        with self._lock:
            self._enter("release")
            row = self._rows.get(grant.lock_id)
            if row is None or not _is_grant(row, grant):
                return
            now = self._now()
            self._rows[grant.lock_id] = replace(row, owner=None, expires=now, heartbeat=now)

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        """The current holder (possibly expired), or ``None`` when missing or released."""
        with self._lock:
            self._enter("read")
            row = self._rows.get(lock_id)
            if row is None or row.owner is None:
                return None
            return _grant(lock_id, row)

    def fence_of(self, lock_id: str) -> int:
        """The counter as stored, also after release (0 if the lock was never granted)."""
        with self._lock:
            row = self._rows.get(lock_id)
            return row.fence if row is not None else 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _is_grant(row: _Row, grant: LeaseGrant) -> bool:
    return row.owner == grant.owner and row.fence == grant.fence


def _grant(lock_id: str, row: _Row) -> LeaseGrant:
    return LeaseGrant(
        lock_id=lock_id,
        collection=row.collection,
        owner=row.owner or "",
        fence=row.fence,
        expires=row.expires,
    )
