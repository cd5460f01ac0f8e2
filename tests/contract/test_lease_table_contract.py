"""One suite, two lease tables: the in-memory fake and DynamoDB (on the embedded moto server).

Both take the same injected wall clock, so leases expire by moving the clock, never by sleeping,
and the boundary (a lease is expired when ``expires <= now``) is checked to the millisecond.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from snapmerge import aws as aws_clients
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.errors import LeaseLostError, LockBusyError, LockError
from snapmerge.ports import LeaseGrant, LeaseTable

LOCK = "chroma-words-update"
COLLECTION = "words"
MINUTE = timedelta(minutes=1)


class Wall:
    """A settable UTC clock; starts off a whole second so microseconds are exercised."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def wall() -> Wall:
    return Wall()


@pytest.fixture(params=["memory", "dynamodb"])
def make_table(request: pytest.FixtureRequest, wall: Wall) -> Callable[[], LeaseTable]:
    """A factory, so a test can have two clients on one table (Dynamo) or one shared fake."""
    if request.param == "memory":
        table = MemoryLeaseTable(clock=wall)
        return lambda: table
    env = request.getfixturevalue("aws")
    return lambda: DynamoLeaseTable(env.table, clock=wall)


@pytest.fixture
def table(make_table: Callable[[], LeaseTable]) -> LeaseTable:
    return make_table()


def test_grant_when_free(table: LeaseTable, wall: Wall) -> None:
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)

    assert (grant.lock_id, grant.collection, grant.owner, grant.fence) == (LOCK, COLLECTION, "a", 1)
    assert grant.expires == wall.now + MINUTE
    assert table.read(LOCK) == grant


def test_read_of_an_unknown_lock_is_none(table: LeaseTable) -> None:
    assert table.read(LOCK) is None


def test_busy_raises_with_the_holder(make_table: Callable[[], LeaseTable]) -> None:
    first, second = make_table(), make_table()
    held = first.try_acquire(LOCK, COLLECTION, "a", MINUTE)

    with pytest.raises(LockBusyError) as caught:
        second.try_acquire(LOCK, COLLECTION, "b", MINUTE)

    assert caught.value.lock_id == LOCK
    assert caught.value.holder == "a"
    assert caught.value.expires is not None
    assert datetime.fromisoformat(caught.value.expires) == held.expires
    assert second.read(LOCK) == held


def test_busy_until_the_last_millisecond_then_expired(table: LeaseTable, wall: Wall) -> None:
    table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    wall.advance(MINUTE - timedelta(milliseconds=1))
    with pytest.raises(LockBusyError):
        table.try_acquire(LOCK, COLLECTION, "b", MINUTE)

    wall.advance(timedelta(milliseconds=1))
    taken = table.try_acquire(LOCK, COLLECTION, "b", MINUTE)

    assert (taken.owner, taken.fence) == ("b", 2)


def test_expired_lease_is_taken_over_and_the_fence_rises(table: LeaseTable, wall: Wall) -> None:
    fences = []
    for owner in ("a", "b", "c"):
        fences.append(table.try_acquire(LOCK, COLLECTION, owner, MINUTE).fence)
        wall.advance(2 * MINUTE)

    assert fences == [1, 2, 3]


def test_release_frees_the_lock_and_keeps_the_fence(table: LeaseTable) -> None:
    first = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    table.release(first)

    assert table.read(LOCK) is None
    second = table.try_acquire(LOCK, COLLECTION, "b", MINUTE)
    assert second.fence == first.fence + 1


def test_an_earlier_attempt_of_the_same_owner_is_recognised(table: LeaseTable) -> None:
    """A retried acquire whose first write landed (reply lost) returns that grant, not busy."""
    first = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)

    assert table.try_acquire(LOCK, COLLECTION, "a", MINUTE) == first


def test_renew_extends_our_lease(table: LeaseTable, wall: Wall) -> None:
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    wall.advance(timedelta(seconds=50))

    renewed = table.renew(grant, MINUTE)

    assert (renewed.owner, renewed.fence) == ("a", grant.fence)
    assert renewed.expires == wall.now + MINUTE
    wall.advance(timedelta(seconds=30))  # past the first expiry, inside the renewed one
    with pytest.raises(LockBusyError):
        table.try_acquire(LOCK, COLLECTION, "b", MINUTE)


def test_renew_by_a_stale_owner_raises_lease_lost(table: LeaseTable, wall: Wall) -> None:
    stale = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    wall.advance(2 * MINUTE)
    current = table.try_acquire(LOCK, COLLECTION, "b", MINUTE)

    with pytest.raises(LeaseLostError):
        table.renew(stale, MINUTE)
    assert table.read(LOCK) == current


def test_an_expired_lease_cannot_be_revived_even_if_nobody_took_it(
    table: LeaseTable, wall: Wall
) -> None:
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    wall.advance(MINUTE)

    with pytest.raises(LeaseLostError):
        table.renew(grant, MINUTE)


def test_renew_needs_the_same_fence(table: LeaseTable) -> None:
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    forged = LeaseGrant(LOCK, COLLECTION, "a", grant.fence - 1, grant.expires)

    with pytest.raises(LeaseLostError):
        table.renew(forged, MINUTE)


def test_release_by_a_non_owner_is_a_no_op(table: LeaseTable, wall: Wall) -> None:
    stale = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    wall.advance(2 * MINUTE)
    current = table.try_acquire(LOCK, COLLECTION, "b", MINUTE)

    table.release(stale)
    table.release(LeaseGrant(LOCK, COLLECTION, "nobody", 99, wall.now))

    assert table.read(LOCK) == current
    with pytest.raises(LockBusyError):
        table.try_acquire(LOCK, COLLECTION, "c", MINUTE)


def test_release_is_idempotent(table: LeaseTable) -> None:
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    table.release(grant)
    table.release(grant)

    assert table.read(LOCK) is None


def test_locks_are_independent(table: LeaseTable) -> None:
    table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    other = table.try_acquire("chroma-lines-update", "lines", "b", MINUTE)

    assert (other.owner, other.fence) == ("b", 1)


@pytest.fixture
def failing_table(request: pytest.FixtureRequest, make_table: Callable[[], LeaseTable]) -> Any:
    """A table whose every operation fails for a reason other than contention."""
    if isinstance(make_table(), MemoryLeaseTable):
        table = MemoryLeaseTable()
        for op in ("try_acquire", "renew", "release", "read"):
            table.fail_next(op, LockError("ResourceNotFoundException"))
        return table
    request.getfixturevalue("aws")
    return DynamoLeaseTable("no-such-table")


def test_a_failing_table_raises_lock_error_not_busy(failing_table: LeaseTable) -> None:
    grant = LeaseGrant(LOCK, COLLECTION, "a", 1, datetime.now(UTC) + MINUTE)
    calls: list[Callable[[], object]] = [
        lambda: failing_table.try_acquire(LOCK, COLLECTION, "a", MINUTE),
        lambda: failing_table.renew(grant, MINUTE),
        lambda: failing_table.release(grant),
        lambda: failing_table.read(LOCK),
    ]
    for call in calls:
        with pytest.raises(LockError) as caught:
            call()
        assert type(caught.value) is LockError  # neither busy nor lost: broken


# -- DynamoDB only: the row as stored, and error translation -----------------------------------


@pytest.fixture
def dynamo(aws: Any, wall: Wall) -> DynamoLeaseTable:
    return DynamoLeaseTable(aws.table, clock=wall)


def test_row_schema(dynamo: DynamoLeaseTable, wall: Wall) -> None:
    grant = dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    row = _plain(dynamo.read_raw(LOCK, COLLECTION))

    expires = "2025-01-02T03:05:05.123456+00:00"
    assert row == {
        "PK": f"LOCK#{COLLECTION}#{LOCK}",
        "SK": "LOCK",
        "GSI1PK": f"LOCK#{COLLECTION}",
        "GSI1SK": f"EXPIRES#{expires}",
        "TYPE": "COMPACTION_LOCK",
        "owner": "a",
        "expires": expires,
        "heartbeat": "2025-01-02T03:04:05.123456+00:00",
        "acquired": "2025-01-02T03:04:05.123456+00:00",
        "collection": COLLECTION,
        "fence": "1",
        "expires_ms": str(int(grant.expires.timestamp() * 1000)),
        "time_to_live": str(int((grant.expires + timedelta(days=1)).timestamp())),
    }


def test_released_row_keeps_the_fence_and_drops_the_owner(dynamo: DynamoLeaseTable) -> None:
    dynamo.release(dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    row = _plain(dynamo.read_raw(LOCK, COLLECTION))

    assert "owner" not in row
    assert row["fence"] == "1"
    assert row["TYPE"] == "COMPACTION_LOCK"


def test_a_row_left_by_the_original_code_is_honoured(
    aws: Any, dynamo: DynamoLeaseTable, wall: Wall
) -> None:
    """The original wrote no ``expires_ms``: its ISO ``expires`` decides, held then expired."""
    item = {
        "PK": f"LOCK#{COLLECTION}#{LOCK}",
        "SK": "LOCK",
        "GSI1PK": f"LOCK#{COLLECTION}",
        "GSI1SK": "EXPIRES#2025-01-02T03:10:00+00:00",
        "TYPE": "COMPACTION_LOCK",
        "owner": "original",
        "expires": "2025-01-02T03:10:00+00:00",
        "heartbeat": "2025-01-02T03:00:00+00:00",
        "collection": COLLECTION,
    }
    aws_dynamodb().put_item(TableName=aws.table, Item={k: {"S": v} for k, v in item.items()})

    with pytest.raises(LockBusyError) as caught:
        dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    assert caught.value.holder == "original"

    wall.now = datetime(2025, 1, 2, 3, 10, 0, 1, tzinfo=UTC)
    taken = dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    assert (taken.owner, taken.fence) == ("a", 1)


@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "AccessDeniedException", "ValidationException"],
)
def test_service_errors_become_lock_error_with_the_cause(aws: Any, code: str) -> None:
    client = aws_dynamodb()
    table = DynamoLeaseTable(aws.table, client)
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=400)
        with pytest.raises(LockError) as caught:
            table.try_acquire(LOCK, COLLECTION, "a", MINUTE)

    assert type(caught.value) is LockError
    assert code in str(caught.value)
    assert caught.value.__cause__ is not None


def aws_dynamodb() -> Any:
    return aws_clients.client("dynamodb")


def _plain(item: dict[str, Any] | None) -> dict[str, str]:
    assert item is not None
    return {name: next(iter(value.values())) for name, value in item.items()}
