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
from snapmerge.adapters.lock_rows import RELEASED_OWNER, iso
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.errors import LeaseLostError, LockBusyError, LockError
from snapmerge.ports import LeaseGrant, LeaseTable
from tests.clocks import Wall
from tests.compat.original_lock import OriginalLockManager

LOCK = "chroma-words-update"
COLLECTION = "words"
MINUTE = timedelta(minutes=1)


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


# -- another writer on the same row: the original's lock manager ---------------------------------


FOREIGN_OWNER = "5b1f0c1e-2f7a-4c1e-9d3b-0a1b2c3d4e5f"


class Foreign:
    """Does to the row what the original's lock manager does, on either table."""

    def __init__(self, table: LeaseTable, wall: Wall, aws_env: Any | None) -> None:
        self.table = table
        self.original = (
            OriginalLockManager(aws_env.table, clock=wall) if aws_env is not None else None
        )

    def put(self, expires: str, owner: str = FOREIGN_OWNER, *, heartbeat: bool = False) -> None:
        """Replace the whole row (its acquire; with ``heartbeat`` only if a row exists)."""
        if isinstance(self.table, MemoryLeaseTable):
            self.table.put_foreign_row(LOCK, COLLECTION, owner, expires, if_exists=heartbeat)
            return
        assert self.original is not None
        item = {
            "PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"},
            "SK": {"S": "LOCK"},
            "GSI1PK": {"S": f"LOCK#{COLLECTION}"},
            "GSI1SK": {"S": f"EXPIRES#{expires}"},
            "TYPE": {"S": "COMPACTION_LOCK"},
            "owner": {"S": owner},
            "expires": {"S": expires},
            "collection": {"S": COLLECTION},
            "heartbeat": {"NULL": True},
        }
        condition = {"ConditionExpression": "attribute_exists(PK)"} if heartbeat else {}
        self.original.client.put_item(TableName=self.original.table, Item=item, **condition)

    def delete(self) -> None:
        if isinstance(self.table, MemoryLeaseTable):
            self.table.delete_row(LOCK)
            return
        assert self.original is not None
        self.original.client.delete_item(
            TableName=self.original.table,
            Key={"PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"}, "SK": {"S": "LOCK"}},
        )


@pytest.fixture
def foreign(request: pytest.FixtureRequest, table: LeaseTable, wall: Wall) -> Foreign:
    env = None if isinstance(table, MemoryLeaseTable) else request.getfixturevalue("aws")
    return Foreign(table, wall, env)


# wall.now is 2025-01-02 03:04:05.123456 UTC; each text names 03:10:00 (or 03:10:00.5) UTC.
LIVE_EXPIRIES = [
    "2025-01-02 03:10:00",  # str(naive datetime): a space, and sorts below any "T" text
    "2025-01-02 03:10:00.500000+00:00",
    "2025-01-02T03:10:00",
    "2025-01-02T03:10:00.500000",
    "2025-01-02T03:10:00+00:00",
    "2025-01-02T03:10:00Z",
    "2025-01-02T05:10:00+02:00",
]


@pytest.mark.parametrize("expires", LIVE_EXPIRIES)
def test_a_live_row_of_the_original_is_busy_in_every_format_it_writes(
    table: LeaseTable, foreign: Foreign, wall: Wall, expires: str
) -> None:
    foreign.put(expires)

    with pytest.raises(LockBusyError) as caught:
        table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    assert caught.value.holder == FOREIGN_OWNER
    held = table.read(LOCK)
    assert held is not None
    assert (held.owner, held.fence) == (FOREIGN_OWNER, 0)
    assert held.expires in (
        datetime(2025, 1, 2, 3, 10, tzinfo=UTC),
        datetime(2025, 1, 2, 3, 10, 0, 500000, tzinfo=UTC),
    )

    wall.now = datetime(2025, 1, 2, 3, 10, 0, 500000, tzinfo=UTC)
    taken = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    assert taken.owner == "a"


@pytest.mark.parametrize("expires", ["soon", "", "12/01/2026 22:01:33", "1767225600"])
def test_a_row_whose_expiry_cannot_be_read_is_busy_forever(
    table: LeaseTable, foreign: Foreign, wall: Wall, expires: str
) -> None:
    foreign.put(expires)
    wall.advance(timedelta(days=3650))

    with pytest.raises(LockBusyError) as caught:
        table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    assert "cannot read" in str(caught.value)


def test_the_fence_rises_after_the_original_replaces_the_row(
    table: LeaseTable, foreign: Foreign, wall: Wall
) -> None:
    table.release(table.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    table.release(table.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    foreign.put("2025-01-02T03:04:06+00:00")  # its acquire replaced our whole row: no fence
    wall.advance(timedelta(seconds=1))

    assert table.try_acquire(LOCK, COLLECTION, "b", MINUTE).fence == 3


def test_the_fence_rises_after_the_original_deletes_the_row(
    table: LeaseTable, foreign: Foreign
) -> None:
    table.release(table.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    foreign.delete()  # its release or its clean-up tool

    assert table.read(LOCK) is None
    assert table.try_acquire(LOCK, COLLECTION, "b", MINUTE).fence == 2


def test_a_heartbeat_of_the_original_over_our_row_loses_our_lease(
    table: LeaseTable, foreign: Foreign
) -> None:
    """Its heartbeat rewrites the row without an owner check: our renew must then be refused."""
    grant = table.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    foreign.put("2025-01-02T03:06:05+00:00", heartbeat=True)

    with pytest.raises(LeaseLostError):
        table.renew(grant, MINUTE)
    table.release(grant)  # not ours any more: a no-op
    with pytest.raises(LockBusyError):
        table.try_acquire(LOCK, COLLECTION, "b", MINUTE)


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


def test_released_row_keeps_an_owner_that_is_no_holder_and_the_fence(
    dynamo: DynamoLeaseTable, wall: Wall
) -> None:
    dynamo.release(dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    row = _plain(dynamo.read_raw(LOCK, COLLECTION))

    assert row["owner"] == RELEASED_OWNER  # the original's tools need an owner (a UUIDv4)
    assert row["expires"] == iso(wall.now)
    assert row["fence"] == "1"
    assert dynamo.read_fence(LOCK, COLLECTION) == 1
    assert row["TYPE"] == "COMPACTION_LOCK"
    assert dynamo.read(LOCK) is None


def test_a_row_released_by_earlier_snapmerge_code_is_free(
    aws: Any, dynamo: DynamoLeaseTable
) -> None:
    """Releases before this version removed ``owner`` and kept ``fence`` in the row only."""
    dynamo.release(dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    client = aws_dynamodb()
    client.update_item(
        TableName=aws.table,
        Key={"PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"}, "SK": {"S": "LOCK"}},
        UpdateExpression="REMOVE #o SET #f = :seven",
        ExpressionAttributeNames={"#o": "owner", "#f": "fence"},
        ExpressionAttributeValues={":seven": {"N": "7"}},
    )
    client.delete_item(
        TableName=aws.table, Key={"PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"}, "SK": {"S": "FENCE"}}
    )

    assert dynamo.read(LOCK) is None
    assert dynamo.try_acquire(LOCK, COLLECTION, "b", MINUTE).fence == 8


def test_unknown_attributes_of_a_row_are_kept(aws: Any, dynamo: DynamoLeaseTable) -> None:
    """We write with UpdateItem SET only: what another program stored in the row stays."""
    dynamo.release(dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE))
    client = aws_dynamodb()
    client.update_item(
        TableName=aws.table,
        Key={"PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"}, "SK": {"S": "LOCK"}},
        UpdateExpression="SET note = :n",
        ExpressionAttributeValues={":n": {"S": "written by someone else"}},
    )
    grant = dynamo.try_acquire(LOCK, COLLECTION, "b", MINUTE)
    dynamo.renew(grant, MINUTE)
    dynamo.release(grant)

    assert _plain(dynamo.read_raw(LOCK, COLLECTION))["note"] == "written by someone else"


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


@pytest.mark.parametrize("op", ["get_item", "transact_write_items"])
@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "AccessDeniedException", "ValidationException"],
)
def test_acquire_errors_become_lock_error_with_the_cause(aws: Any, op: str, code: str) -> None:
    client = aws_dynamodb()
    table = DynamoLeaseTable(aws.table, client)
    with Stubber(client) as stub:
        if op == "transact_write_items":
            stub.add_response("get_item", {})
            stub.add_response("get_item", {})
        stub.add_client_error(op, service_error_code=code, http_status_code=400)
        with pytest.raises(LockError) as caught:
            table.try_acquire(LOCK, COLLECTION, "a", MINUTE)

    assert type(caught.value) is LockError
    assert code in str(caught.value)
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "AccessDeniedException", "ValidationException"],
)
def test_service_errors_become_lock_error_with_the_cause(aws: Any, code: str) -> None:
    client = aws_dynamodb()
    table = DynamoLeaseTable(aws.table, client)
    grant = LeaseGrant(LOCK, COLLECTION, "a", 1, datetime.now(UTC) + MINUTE)
    with Stubber(client) as stub:
        stub.add_client_error("update_item", service_error_code=code, http_status_code=400)
        with pytest.raises(LockError) as caught:
            table.renew(grant, MINUTE)

    assert type(caught.value) is LockError
    assert code in str(caught.value)
    assert caught.value.__cause__ is not None


def aws_dynamodb() -> Any:
    return aws_clients.client("dynamodb")


def _plain(item: dict[str, Any] | None) -> dict[str, str]:
    assert item is not None
    return {name: next(iter(value.values())) for name, value in item.items()}


def test_a_row_with_fractional_numbers_reads_instead_of_raising(
    aws: Any, dynamo: DynamoLeaseTable
) -> None:
    """Another writer may store ``fence`` or ``expires_ms`` as any DynamoDB number (``3.0``, a
    float through Decimal): the row still reads — a live one as busy — and the fence still rises.
    Found by the adversarial review: ``int("3.0")`` raised a bare ValueError out of acquire."""
    grant = dynamo.try_acquire(LOCK, COLLECTION, "a", MINUTE)
    client = aws_dynamodb()
    client.update_item(
        TableName=aws.table,
        Key={"PK": {"S": f"LOCK#{COLLECTION}#{LOCK}"}, "SK": {"S": "LOCK"}},
        UpdateExpression="SET fence = :f, expires_ms = :e",
        ExpressionAttributeValues={":f": {"N": f"{grant.fence}.5"}, ":e": {"N": "4070908800000.5"}},
    )
    with pytest.raises(LockBusyError):
        dynamo.try_acquire(LOCK, COLLECTION, "b", MINUTE)
    view = dynamo.read(LOCK, COLLECTION)
    assert view is not None and view.fence == grant.fence + 1
