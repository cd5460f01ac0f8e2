"""LeaseLock on the in-memory table: backoff, heartbeat, fencing, verify, and mutual exclusion.

Time is fake (one object drives the lock's monotonic clock, its sleep and the table's wall clock)
except where a heartbeat thread must run: those tests wait on events, never on durations.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapmerge.adapters.lock_rows import RELEASED_OWNER, RowView, parse_expiry
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.backoff import Backoff
from snapmerge.errors import InvalidEventError, LeaseLostError, LockBusyError, LockError
from snapmerge.lock import Lease, LeaseLock, lease_timings
from snapmerge.ports import LeaseGrant
from tests.compat.original_lock import ExpiryFormat

LOCK, COLLECTION = "chroma-words-update", "words"
HOUR = timedelta(hours=1)
EVENT_TIMEOUT_S = 10.0


class FakeTime:
    """Monotonic seconds, a wall clock and a sleep that only advances them (records each sleep)."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.epoch = datetime(2025, 1, 2, tzinfo=UTC)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.seconds)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def table(fake: FakeTime) -> MemoryLeaseTable:
    return MemoryLeaseTable(clock=fake.wall)


def make_lock(
    table: MemoryLeaseTable,
    fake: FakeTime,
    *,
    duration: timedelta = timedelta(seconds=60),
    heartbeat: timedelta = HOUR,
    failures: int = 3,
) -> LeaseLock:
    return LeaseLock(
        table,
        duration=duration,
        heartbeat_interval=heartbeat,
        max_heartbeat_failures=failures,
        clock=fake.monotonic,
        sleep=fake.sleep,
        rng=random.Random(7),
        backoff=Backoff(base=timedelta(milliseconds=100), cap=timedelta(seconds=2)),
    )


def hold_by_other(table: MemoryLeaseTable, duration: timedelta) -> LeaseGrant:
    return table.try_acquire(LOCK, COLLECTION, "other", duration)


# -- acquire -----------------------------------------------------------------------------------


def test_free_lock_is_granted_at_once(table: MemoryLeaseTable, fake: FakeTime) -> None:
    with make_lock(table, fake).acquire(LOCK, COLLECTION) as lease:
        assert (lease.fence, lease.contention, lease.wait_ms) == (1, 0, 0.0)
        assert table.read(LOCK) == lease.grant
    assert table.read(LOCK) is None
    assert fake.sleeps == []


def test_busy_without_wait_raises_at_once(table: MemoryLeaseTable, fake: FakeTime) -> None:
    hold_by_other(table, HOUR)

    with pytest.raises(LockBusyError) as caught:
        make_lock(table, fake).acquire(LOCK, COLLECTION)

    assert caught.value.holder == "other"
    assert fake.sleeps == []


def test_backs_off_until_the_deadline_then_raises_busy(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    hold_by_other(table, HOUR)

    with pytest.raises(LockBusyError) as caught:
        make_lock(table, fake).acquire(LOCK, COLLECTION, wait=timedelta(seconds=10))

    assert caught.value.holder == "other"
    assert sum(fake.sleeps) == pytest.approx(10.0)  # waited exactly up to the deadline
    assert table.calls["try_acquire"] == len(fake.sleeps) + 2  # the holder's + ours
    bounds = [min(2.0, 0.1 * 2**i) for i in range(len(fake.sleeps))]
    for slept, ceiling in zip(fake.sleeps[:-1], bounds, strict=False):
        assert ceiling / 2 <= slept <= ceiling  # jittered, exponential, capped


def test_waits_for_expiry_and_measures_wait_and_contention(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    hold_by_other(table, timedelta(seconds=5))

    lease = make_lock(table, fake).acquire(LOCK, COLLECTION, wait=timedelta(seconds=30))

    assert lease.fence == 2
    assert lease.contention == len(fake.sleeps) == table.calls["try_acquire"] - 2
    assert lease.wait_ms == pytest.approx(sum(fake.sleeps) * 1000)
    assert 5000 <= lease.wait_ms <= 5000 + 2000
    fake.advance(2.5)
    assert lease.hold_ms == pytest.approx(2500)
    assert lease.release() == pytest.approx(2500)
    fake.advance(10)
    assert lease.hold_ms == pytest.approx(2500)  # frozen at release
    assert lease_timings(lease) == {
        "LockWaitTime": lease.wait_ms,
        "LockHoldTime": pytest.approx(2500),
        "LockContention": float(lease.contention),
    }


def test_a_transient_table_error_is_retried_once(table: MemoryLeaseTable, fake: FakeTime) -> None:
    table.fail_next("try_acquire", LockError("throttled"))

    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)

    assert lease.fence == 1
    assert lease.contention == 0  # a broken table is not contention
    lease.release()


def test_a_failing_table_propagates_lock_error(table: MemoryLeaseTable, fake: FakeTime) -> None:
    table.fail_next("try_acquire", LockError("AccessDenied"), count=10)

    with pytest.raises(LockError) as caught:
        make_lock(table, fake).acquire(LOCK, COLLECTION, wait=timedelta(minutes=5))

    assert not isinstance(caught.value, LockBusyError)
    assert table.calls["try_acquire"] == 2  # Backoff.error_attempts, not until the deadline


# -- check, verify, release --------------------------------------------------------------------


def test_check_fails_after_the_local_deadline(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    fake.advance(59.9)
    lease.check()

    fake.advance(0.1)
    with pytest.raises(LeaseLostError):
        lease.check()
    lease.release()
    with pytest.raises(LeaseLostError):
        lease.check()


def test_verify_renews_and_requires_time_left(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    fake.advance(40)

    lease.verify(timedelta(seconds=30))  # renewed to t+100: 60 s left
    fake.advance(40)  # beyond the original expiry
    lease.check()
    with pytest.raises(LeaseLostError):
        lease.verify(timedelta(seconds=61))  # renewed, but a 60 s lease cannot leave 61 s
    assert not lease.lost.is_set()
    lease.release()


def test_verify_refuses_a_holder_whose_lease_expired_in_the_table(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    """A paused holder: its local clock says fine, the table's says expired and taken over."""
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    fake.epoch += timedelta(minutes=2)  # only the wall clock jumps
    taker = table.try_acquire(LOCK, COLLECTION, "taker", HOUR)

    lease.check()  # the local view alone cannot know
    with pytest.raises(LeaseLostError):
        lease.verify()
    assert lease.lost.is_set()
    lease.release()
    assert table.read(LOCK) == taker  # the stale release was conditional: a no-op


def test_verify_refuses_when_the_table_cannot_confirm(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    table.fail_next("renew", LockError("throttled"))

    with pytest.raises(LeaseLostError):
        lease.verify()
    assert not lease.lost.is_set()
    lease.verify()
    lease.release()


def test_release_failure_is_logged_not_raised(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    table.fail_next("release", LockError("throttled"))

    lease.release()

    assert lease.released
    assert table.calls["release"] == 1
    lease.release()  # idempotent: no second call
    assert table.calls["release"] == 1


# -- heartbeat (a real thread, short real interval; time in the table is still fake) ------------

BEAT = timedelta(milliseconds=5)


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def test_heartbeat_keeps_the_lease(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake, heartbeat=BEAT).acquire(LOCK, COLLECTION)

    assert wait_until(lambda: table.calls["renew"] >= 3)
    lease.check()
    assert not lease.lost.is_set()
    lease.release()


def test_heartbeat_detects_a_takeover(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake, duration=timedelta(seconds=10), heartbeat=BEAT).acquire(
        LOCK, COLLECTION
    )
    fake.epoch += timedelta(seconds=11)  # the table sees the lease expire (the holder stalled)
    taker = table.try_acquire(LOCK, COLLECTION, "taker", HOUR)

    assert lease.lost.wait(EVENT_TIMEOUT_S)
    with pytest.raises(LeaseLostError):
        lease.check()
    lease.release()
    assert table.read(LOCK) == taker


def test_heartbeat_gives_up_after_consecutive_failures(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    table.fail_next("renew", LockError("throttled"), count=3)
    lease = make_lock(table, fake, heartbeat=BEAT, failures=3).acquire(LOCK, COLLECTION)

    assert lease.lost.wait(EVENT_TIMEOUT_S)
    assert table.calls["renew"] == 3
    lease.release()


def test_heartbeat_recovers_from_fewer_failures(table: MemoryLeaseTable, fake: FakeTime) -> None:
    table.fail_next("renew", LockError("throttled"), count=2)
    lease = make_lock(table, fake, heartbeat=BEAT, failures=3).acquire(LOCK, COLLECTION)

    assert wait_until(lambda: table.calls["renew"] >= 6)  # two failures, then successes
    assert not lease.lost.is_set()
    table.fail_next("renew", LockError("throttled"), count=2)  # the count was reset
    assert wait_until(lambda: table.calls["renew"] >= 10)
    assert not lease.lost.is_set()
    lease.release()


def test_release_stops_the_heartbeat_promptly(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake, heartbeat=HOUR).acquire(LOCK, COLLECTION)
    name = f"lease-heartbeat-{LOCK}-{lease.fence}"
    assert name in {t.name for t in threading.enumerate()}

    lease.release()  # an hour-long sleep here would hang the test

    assert name not in {t.name for t in threading.enumerate()}
    assert table.calls["renew"] == 0


# -- mutual exclusion: generator, checker, and a negative control --------------------------------


@dataclass(frozen=True)
class Interval:
    fence: int
    enter: int
    exit: int


def violations(intervals: list[Interval]) -> list[str]:
    """Holders in the order they entered: fences strictly rise and no two intervals overlap."""
    found = []
    ordered = sorted(intervals, key=lambda i: i.enter)
    for before, after in itertools.pairwise(ordered):
        if after.fence <= before.fence:
            found.append(f"fence {after.fence} entered after fence {before.fence}")
        if after.enter < before.exit:
            found.append(f"fence {after.fence} entered while fence {before.fence} held")
    return found


class Recorder:
    """A shared counter incremented non-atomically under the lock, and the holders' intervals."""

    def __init__(self) -> None:
        self.ticks = itertools.count()  # next() is atomic: a total order of events
        self.counter = 0
        self.intervals: list[Interval] = []
        self._append = threading.Lock()

    def critical(self, lease: Lease, pause: Callable[[], None] = lambda: time.sleep(0)) -> None:
        enter = next(self.ticks)
        value = self.counter
        pause()  # let another thread in, if the lock allows it
        self.counter = value + 1
        exit_ = next(self.ticks)
        with self._append:
            self.intervals.append(Interval(lease.fence, enter, exit_))


def test_checker_accepts_disjoint_and_reports_overlap() -> None:
    good = [Interval(1, 0, 1), Interval(2, 2, 3), Interval(3, 4, 5)]
    assert violations(good) == []
    assert violations([Interval(1, 0, 3), Interval(2, 1, 2)]) == [
        "fence 2 entered while fence 1 held"
    ]
    assert violations([Interval(2, 0, 1), Interval(1, 2, 3)]) == ["fence 1 entered after fence 2"]


def test_no_two_holders_overlap() -> None:
    table = MemoryLeaseTable()
    lock = LeaseLock(
        table,
        duration=timedelta(seconds=60),
        heartbeat_interval=timedelta(seconds=60),
        backoff=Backoff(base=timedelta(microseconds=200), cap=timedelta(milliseconds=2)),
    )
    recorder = Recorder()
    threads, rounds = 6, 25
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(rounds):
                with lock.acquire(LOCK, COLLECTION, wait=timedelta(seconds=60)) as lease:
                    recorder.critical(lease, pause=lambda: time.sleep(0.0005))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    assert errors == []
    assert table.calls["try_acquire"] > threads * rounds  # the workload did contend
    assert violations(recorder.intervals) == []
    assert recorder.counter == threads * rounds
    assert sorted(i.fence for i in recorder.intervals) == list(range(1, threads * rounds + 1))


class NoConditionTable(MemoryLeaseTable):
    """A broken lock for the negative control: acquire evicts whoever holds the lease."""

    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        holder = self.read(lock_id)
        if holder is not None:
            self.release(holder)
        return super().try_acquire(lock_id, collection, owner, duration)


def test_negative_control_the_checker_catches_a_lock_without_its_condition() -> None:
    """The same harness on a lock that skips the condition reports the overlap and lost update."""
    lock = LeaseLock(NoConditionTable(), duration=timedelta(seconds=60), heartbeat_interval=HOUR)
    recorder = Recorder()
    first_inside, second_done = threading.Event(), threading.Event()

    def first() -> None:
        def pause() -> None:
            first_inside.set()
            second_done.wait(EVENT_TIMEOUT_S)

        with lock.acquire(LOCK, COLLECTION) as lease:
            recorder.critical(lease, pause)

    def second() -> None:
        first_inside.wait(EVENT_TIMEOUT_S)
        with lock.acquire(LOCK, COLLECTION) as lease:  # must be refused; the broken lock grants
            recorder.critical(lease)
        second_done.set()

    pool = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()

    assert violations(recorder.intervals) == ["fence 2 entered while fence 1 held"]
    assert recorder.counter == 1  # one increment lost


def test_verify_trusts_a_grant_the_table_confirmed_a_moment_ago(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    lease = make_lock(table, fake).acquire(LOCK, COLLECTION)
    renews = table.calls["renew"]
    fake.advance(0.2)
    lease.verify(timedelta(seconds=30), trust_recent=timedelta(seconds=1))
    assert table.calls["renew"] == renews  # the grant itself was the conditional write

    fake.advance(1.0)  # no longer recent: the table is asked again
    lease.verify(timedelta(seconds=30), trust_recent=timedelta(seconds=1))
    assert table.calls["renew"] == renews + 1
    lease.release()


def test_a_trusted_grant_still_needs_the_time_left(table: MemoryLeaseTable, fake: FakeTime) -> None:
    lease = make_lock(table, fake, duration=timedelta(seconds=20)).acquire(LOCK, COLLECTION)
    with pytest.raises(LeaseLostError):  # 20 s lease cannot leave the 30 s margin, fresh or not
        lease.verify(timedelta(seconds=30), trust_recent=timedelta(seconds=1))
    lease.release()


# -- short phase leases ----------------------------------------------------------------------

PHASE = timedelta(seconds=45)


def test_a_duration_override_sets_the_grant_and_every_renewal(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    lock = make_lock(table, fake, duration=timedelta(minutes=16), heartbeat=timedelta(seconds=60))

    with lock.acquire(LOCK, COLLECTION, duration=PHASE) as lease:
        assert lease.grant.expires == fake.wall() + PHASE
        assert lease.duration == PHASE
        assert lease.heartbeat_interval == PHASE / 3  # at least three beats per lease
        fake.advance(20)
        lease.verify(timedelta(seconds=30))  # 25 s left < 30 s: renews, for 45 s again
        assert lease.grant.expires == fake.wall() + PHASE
        fake.advance(46)
        with pytest.raises(LeaseLostError):
            lease.check()  # the local deadline follows the phase lease, not the 16 minutes

    with lock.acquire(LOCK, COLLECTION) as lease:
        assert lease.grant.expires == fake.wall() + timedelta(minutes=16)
        assert lease.heartbeat_interval == timedelta(seconds=60)


def test_a_non_positive_duration_override_is_refused(
    table: MemoryLeaseTable, fake: FakeTime
) -> None:
    with pytest.raises(InvalidEventError):
        make_lock(table, fake).acquire(LOCK, COLLECTION, duration=timedelta(0))
    assert table.calls["try_acquire"] == 0


@pytest.mark.parametrize(
    ("lease", "blocked_at_most"),
    [(PHASE, 45 + 2), (timedelta(minutes=16), 16 * 60 + 2)],
    ids=["phase-lease", "whole-merge-lease"],
)
def test_a_killed_phase_one_holder_blocks_the_collection_for_its_lease_only(
    table: MemoryLeaseTable, fake: FakeTime, lease: timedelta, blocked_at_most: float
) -> None:
    """A Lambda killed inside phase 1 leaves its row; the next writer waits out that lease.

    The holder takes the lock the way phase 1 does and dies (no release, no heartbeat). The
    waiter's wait is the collection's blocked time: the lease, plus at most one backoff step
    (2 s cap here). Fake time: no durations are measured.
    """
    holder = make_lock(table, fake, duration=timedelta(minutes=16))
    dead = holder.acquire(LOCK, COLLECTION, duration=lease)
    dead._stop.set()  # the process is gone: its heartbeat thread with it, and no release

    waiter = make_lock(table, fake).acquire(
        LOCK, COLLECTION, wait=timedelta(minutes=30), duration=PHASE
    )

    assert lease.total_seconds() <= waiter.wait_ms / 1000 <= blocked_at_most
    assert waiter.fence == dead.fence + 1
    waiter.release()


# -- reading the expiry of any writer's row ----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    fmt=st.sampled_from(list(ExpiryFormat)),
)
def test_every_expiry_text_the_original_writes_reads_back_as_its_instant(
    moment: datetime, fmt: ExpiryFormat
) -> None:
    whole_seconds = fmt in (ExpiryFormat.SPACE, ExpiryFormat.ZULU)
    expected = moment.replace(microsecond=0) if whole_seconds else moment

    assert parse_expiry(fmt.render(moment)) == expected


@pytest.mark.parametrize(
    "text", ["", "  ", "soon", "12/01/2026 22:01:33", "2026-13-01T00:00:00", "1767225600", "x" * 99]
)
def test_an_expiry_text_that_is_no_instant_is_unreadable(text: str) -> None:
    assert parse_expiry(text) is None


def test_a_row_with_both_expiries_counts_the_later() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    view = RowView.of("x", late.isoformat(), int(early.timestamp() * 1000), 3)
    assert view.expires == late
    with pytest.raises(LockBusyError):
        view.refuse_if_held(LOCK, early + timedelta(hours=1))
    assert RowView.of(RELEASED_OWNER, late.isoformat(), None, 3).owner is None
