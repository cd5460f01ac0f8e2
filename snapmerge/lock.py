"""The lease lock as workers use it: acquire with backoff, a heartbeat, a fence, and ``verify``.

The lock only keeps writers from wasting work (DESIGN §2); correctness comes from conditional
writes. So a :class:`Lease` is honest about what it knows:

* ``check()`` is local and cheap: it fails once the heartbeat saw the lease lost or the *local*
  deadline passed. The local deadline is measured on the monotonic clock from the moment the
  acquire/renew request was *sent*, so it always falls before the table's own expiry.
* ``verify()`` asks the table: a conditional renew right now (owner, fence, not expired), then
  requires ``min_remaining`` of lease left. Call it immediately before a pointer write so a
  holder that was paused past its expiry cannot publish.
* The heartbeat renews conditionally on owner and fence (the original rewrote the row without
  checking, so a stale holder took the lock back). A refused renew sets ``lost`` at once;
  ``max_heartbeat_failures`` consecutive errors of another kind set it too.

A grant may carry its own lease (``acquire(duration=...)``): the two-phase path's phase locks
use seconds, so a holder killed inside a phase blocks its collection for seconds, not for the
whole-merge lease; the heartbeat then beats at least three times per lease.

Busy and broken stay apart: ``acquire`` retries :class:`LockBusyError` with jittered exponential
backoff (:class:`~snapmerge.backoff.Backoff`) until its deadline, but gives a failing table
(:class:`LockError`) only a couple of tries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType

from snapmerge.backoff import Backoff
from snapmerge.errors import InvalidEventError, LeaseLostError, LockBusyError, LockError
from snapmerge.ports import LeaseGrant, LeaseTable

log = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0


class LeaseLock:
    """Hands out :class:`Lease` objects on one :class:`~snapmerge.ports.LeaseTable`."""

    def __init__(
        self,
        table: LeaseTable,
        *,
        duration: timedelta,
        heartbeat_interval: timedelta,
        max_heartbeat_failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if duration <= timedelta(0) or heartbeat_interval <= timedelta(0):
            raise InvalidEventError("lease duration and heartbeat interval must be positive")
        if max_heartbeat_failures < 1:
            raise InvalidEventError("max_heartbeat_failures must be at least 1")
        self.table = table
        self.duration = duration
        self.heartbeat_interval = heartbeat_interval
        self.max_heartbeat_failures = max_heartbeat_failures
        self.clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = backoff or Backoff()

    @property
    def backoff(self) -> Backoff:
        """The delays between tries of a busy lock, unless an acquire names its own."""
        return self._backoff

    def acquire(
        self,
        lock_id: str,
        collection: str,
        *,
        wait: timedelta | None = None,
        duration: timedelta | None = None,
        backoff: Backoff | None = None,
    ) -> Lease:
        """Take the lease, waiting up to ``wait`` (``None``: one try, no waiting).

        ``duration`` overrides the lock's lease for this grant and its renewals (the two-phase
        path's short phase locks); the heartbeat then beats at least three times per lease.
        Raises the last :class:`LockBusyError` when the deadline passes, or :class:`LockError`
        when the table itself fails ``backoff.error_attempts`` times.
        """
        lease_for = self.duration if duration is None else duration
        backoff = backoff or self._backoff
        if lease_for <= timedelta(0):
            raise InvalidEventError(f"lease duration must be positive, got {lease_for}")
        owner = str(uuid.uuid4())  # one owner per acquire: an SDK retry of our write stays ours
        started = self.clock()
        deadline = started + (wait.total_seconds() if wait else 0.0)
        contention = errors = attempt = 0
        while True:
            sent = self.clock()
            try:
                grant = self.table.try_acquire(lock_id, collection, owner, lease_for)
            except LockBusyError as busy:
                contention += 1
                failure: LockError = busy
            except LockError as broken:
                errors += 1
                if errors >= backoff.error_attempts:
                    raise
                failure = broken
            else:
                wait_ms = (self.clock() - started) * 1000.0
                return Lease(
                    self,
                    grant,
                    sent_at=sent,
                    wait_ms=wait_ms,
                    contention=contention,
                    duration=lease_for,
                )
            pause = backoff.delay(attempt, self._rng)
            if isinstance(failure, LockBusyError):
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise failure
                pause = min(pause, remaining)
            self._sleep(pause)
            attempt += 1


class Lease:
    """One grant, held until :meth:`release` (or the end of a ``with`` block)."""

    def __init__(
        self,
        lock: LeaseLock,
        grant: LeaseGrant,
        *,
        sent_at: float,
        wait_ms: float,
        contention: int,
        duration: timedelta | None = None,
    ) -> None:
        self._lock = lock
        self._grant = grant
        self.duration = lock.duration if duration is None else duration
        self.heartbeat_interval = min(lock.heartbeat_interval, self.duration / 3)
        self._deadline = sent_at + self.duration.total_seconds()
        self._confirmed_at = sent_at  # when the table last confirmed the grant (send time)
        self._granted_at = lock.clock()
        self._released_ms: float | None = None
        self._renewing = threading.Lock()  # heartbeat and verify renew one at a time
        self._releasing = threading.Lock()
        self._stop = threading.Event()
        self.wait_ms = wait_ms
        self.contention = contention
        self.lost = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat,
            name=f"lease-heartbeat-{grant.lock_id}-{grant.fence}",
            daemon=True,
        )
        self._thread.start()

    # -- what callers read ---------------------------------------------------------------------
    @property
    def grant(self) -> LeaseGrant:
        return self._grant

    @property
    def fence(self) -> int:
        return self._grant.fence

    @property
    def hold_ms(self) -> float:
        """Milliseconds since the grant; frozen at the release."""
        if self._released_ms is not None:
            return self._released_ms
        return (self._lock.clock() - self._granted_at) * 1000.0

    @property
    def released(self) -> bool:
        return self._released_ms is not None

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease is lost, released or locally expired."""
        if self.lost.is_set():
            raise LeaseLostError(f"lease {self._grant.lock_id!r} was lost (heartbeat)")
        if self.released:
            raise LeaseLostError(f"lease {self._grant.lock_id!r} was released")
        if self._lock.clock() >= self._deadline:
            raise LeaseLostError(f"lease {self._grant.lock_id!r} passed its local deadline")

    def verify(
        self,
        min_remaining: timedelta = timedelta(seconds=30),
        *,
        trust_recent: timedelta = timedelta(0),
    ) -> None:
        """Renew right now and require ``min_remaining`` left; else :class:`LeaseLostError`.

        With ``trust_recent``, a grant the table confirmed less than that long ago (by our
        monotonic clock, from the request's send time) is not renewed again: nobody can take a
        lease before it expires, so a conditional write that granted it a moment ago proves as
        much as a renewal would. This keeps a two-phase publish at one table write (the acquire)
        plus the pointer PUT; a lease held for minutes is always renewed.

        A table failure also refuses (we cannot prove we still hold the lease) but does not set
        ``lost``: the heartbeat may still recover.
        """
        self.check()
        now = self._lock.clock()
        fresh = now - self._confirmed_at < trust_recent.total_seconds()
        if fresh and self._deadline - now >= min_remaining.total_seconds():
            return
        try:
            self._renew()
        except LeaseLostError:
            self.lost.set()
            raise
        except LockError as exc:
            raise LeaseLostError(f"could not confirm lease {self._grant.lock_id!r}: {exc}") from exc
        remaining = self._deadline - self._lock.clock()
        if remaining < min_remaining.total_seconds():
            raise LeaseLostError(
                f"lease {self._grant.lock_id!r} has {remaining:.3f}s left, "
                f"less than the {min_remaining.total_seconds():.3f}s required"
            )

    def release(self) -> float:
        """Stop the heartbeat and release the row if it is still ours; return the hold in ms.

        Idempotent. A table failure here is logged, not raised: the lease expires on its own,
        and raising would hide the outcome of the work done under it.
        """
        with self._releasing:
            if self._released_ms is not None:
                return self._released_ms
            self._stop.set()
            # The row first, then the heartbeat thread: joining it first kept the lock held
            # until that thread had been scheduled to exit (milliseconds on a loaded machine).
            # A renew racing the release is refused by the table (owner and fence) and only
            # marks this already released lease lost.
            grant = self._grant
            try:
                self._lock.table.release(grant)
            except LockError as exc:
                log.warning("release of %s failed (it will expire): %s", grant.lock_id, exc)
            self._released_ms = (self._lock.clock() - self._granted_at) * 1000.0
            if self._thread is not threading.current_thread():
                self._thread.join(_JOIN_TIMEOUT_S)
            return self._released_ms

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- heartbeat -----------------------------------------------------------------------------
    def _renew(self) -> None:
        with self._renewing:
            sent = self._lock.clock()
            self._grant = self._lock.table.renew(self._grant, self.duration)
            self._deadline = sent + self.duration.total_seconds()
            self._confirmed_at = sent

    def _heartbeat(self) -> None:
        failures = 0
        interval = self.heartbeat_interval.total_seconds()
        while not self._stop.wait(interval):
            try:
                self._renew()
            except LeaseLostError as exc:
                log.warning("lease %s lost: %s", self._grant.lock_id, exc)
                self.lost.set()
                return
            except Exception as exc:  # any failure counts; the thread must not die silently
                failures += 1
                log.warning("heartbeat %d of %s failed: %s", failures, self._grant.lock_id, exc)
                expired = self._lock.clock() >= self._deadline
                if failures >= self._lock.max_heartbeat_failures or expired:
                    self.lost.set()
                    return
            else:
                failures = 0


def lease_timings(lease: Lease) -> dict[str, float]:
    """The figures a metrics sink records for one lease (DESIGN §5 names them)."""
    return {
        "LockWaitTime": lease.wait_ms,
        "LockHoldTime": lease.hold_ms,
        "LockContention": float(lease.contention),
    }
