"""The lease table in memory: the DynamoDB adapter's contract, for unit tests and local runs.

Same rules as :mod:`snapmerge.adapters.dynamodb_lock` (the contract tests run one suite against
both): acquire only when the row is missing, released or expired (expired means
``expires <= now``, whatever format the expiry was written in; an unreadable one is busy); the
fence rises by one on every grant and is kept apart from the row, so it survives release and a
foreign writer replacing or deleting the row; renew needs the same owner and fence and an
unexpired lease; release by anybody else is a no-op and leaves a row with ``RELEASED_OWNER``.

Test aids: an injectable ``clock`` (advance it to expire leases without sleeping),
:meth:`MemoryLeaseTable.fail_next`, which makes the next calls of one operation raise a given
error, the way a throttled or missing table would, and :meth:`~MemoryLeaseTable.put_foreign_row`
/ :meth:`~MemoryLeaseTable.delete_row`, which do what the original's lock manager does to a row.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from snapmerge.adapters.lock_rows import RELEASED_OWNER, RowView, epoch_ms, iso
from snapmerge.errors import LeaseLostError, LockError
from snapmerge.ports import LeaseGrant

OPERATIONS = ("try_acquire", "renew", "release", "read")


@dataclass(frozen=True)
class _Row:
    collection: str
    owner: str | None
    fence: int | None  # None: written by another program (no fence)
    expires: str  # as stored, in whatever format its writer used
    expires_ms: int | None  # None: written by another program
    heartbeat: datetime | None

    def view(self) -> RowView:
        return RowView.of(self.owner, self.expires, self.expires_ms, self.fence or 0)


class MemoryLeaseTable:
    """:class:`~snapmerge.ports.LeaseTable` in a dict, behind one lock (thread-safe)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._now = clock or (lambda: datetime.now(UTC))
        self._rows: dict[str, _Row] = {}
        self._fences: dict[str, int] = {}
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

    def put_foreign_row(
        self, lock_id: str, collection: str, owner: str, expires: str, *, if_exists: bool = False
    ) -> None:
        """Replace the whole row the way the original's lock manager does (no fence, no ms)."""
        with self._lock:
            if if_exists and lock_id not in self._rows:
                raise LockError(f"no row {lock_id!r} to rewrite")
            self._rows[lock_id] = _Row(collection, owner, None, expires, None, self._now())

    def delete_row(self, lock_id: str) -> None:
        """Delete the row (the original's release and its clean-up tools); the fence stays."""
        with self._lock:
            self._rows.pop(lock_id, None)

    # -- LeaseTable ----------------------------------------------------------------------------
    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        with self._lock:
            self._enter("try_acquire")
            now = self._now()
            row = self._rows.get(lock_id)
            if row is not None:
                view = row.view()
                if view.owner == owner and row.fence is not None:  # an earlier attempt of ours
                    return _grant(lock_id, row)
                view.refuse_if_held(lock_id, now)
            fence = max(self._fences.get(lock_id, 0), (row.fence or 0) if row else 0) + 1
            expires = now + duration
            new = _Row(collection, owner, fence, iso(expires), epoch_ms(expires), now)
            self._rows[lock_id] = new
            self._fences[lock_id] = fence
            return _grant(lock_id, new)

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        with self._lock:
            self._enter("renew")
            now = self._now()
            row = self._rows.get(grant.lock_id)
            if row is None or not _is_grant(row, grant) or (row.expires_ms or 0) <= epoch_ms(now):
                raise LeaseLostError(
                    f"lease {grant.lock_id!r} (fence {grant.fence}) expired or was taken over"
                )
            expires = now + duration
            new = replace(row, expires=iso(expires), expires_ms=epoch_ms(expires), heartbeat=now)
            self._rows[grant.lock_id] = new
            return _grant(grant.lock_id, new)

    def release(self, grant: LeaseGrant) -> None:
        with self._lock:
            self._enter("release")
            row = self._rows.get(grant.lock_id)
            if row is None or not _is_grant(row, grant):
                return
            now = self._now()
            self._rows[grant.lock_id] = replace(
                row, owner=RELEASED_OWNER, expires=iso(now), expires_ms=epoch_ms(now), heartbeat=now
            )

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        """The current holder (possibly expired), or ``None`` when missing or released."""
        with self._lock:
            self._enter("read")
            row = self._rows.get(lock_id)
            if row is None or row.view().owner is None:
                return None
            return _grant(lock_id, row)

    def fence_of(self, lock_id: str) -> int:
        """The fence high-water mark, also after release or deletion (0 if never granted)."""
        with self._lock:
            return self._fences.get(lock_id, 0)

    def raw_row(self, lock_id: str) -> dict[str, str] | None:
        """The row's stored text fields (what the original's parser would see), for tests."""
        with self._lock:
            row = self._rows.get(lock_id)
            if row is None:
                return None
            fields = {"collection": row.collection, "expires": row.expires}
            if row.owner is not None:
                fields["owner"] = row.owner
            return fields


def _is_grant(row: _Row, grant: LeaseGrant) -> bool:
    return row.owner == grant.owner and row.fence == grant.fence


def _grant(lock_id: str, row: _Row) -> LeaseGrant:
    view = row.view()
    if view.expires is None:
        raise LockError(f"lock row {lock_id!r} has an unreadable expires {row.expires!r}")
    return LeaseGrant(
        lock_id=lock_id,
        collection=row.collection,
        owner=view.owner or "",
        fence=view.fence,
        expires=view.expires,
    )
