"""A lock writer and reader that behave like the original pipeline's lock manager (fixture).

Written from reading the original system (its ``CompactionLock`` entity, its DynamoDB accessor,
its ``LockManager`` and ``cleanup_locks`` tool), not copied from it, and never imported: CI must
not depend on that checkout. What it reproduces, because snapmerge must live beside it:

* **acquire** replaces the *whole* row with a conditional PutItem: allowed when there is no row
  or when the stored ``expires`` is below "now" *as text* (an ISO string comparison);
* the row it writes has ``PK``/``SK``/``GSI1PK``/``GSI1SK``/``TYPE``/``owner`` (a UUIDv4)/
  ``expires``/``collection`` and a ``heartbeat`` string (or NULL); never ``expires_ms``,
  ``fence`` or ``time_to_live``;
* ``expires`` is whatever text its caller produced: ``datetime.isoformat()`` (``T``), a naive
  ``utcnow().isoformat()``, or ``str(datetime)`` with a space separator (:class:`ExpiryFormat`);
* **heartbeat** rewrites the whole row again, checking only that a row exists, not its owner;
* **release** deletes the row, conditionally on the owner;
* **get_compaction_lock** and **cleanup_expired_locks** parse every row they read and raise
  ``Lock item missing keys: {...}`` (or another ``ValueError``) on one they cannot parse.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from snapmerge import aws

_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
COLLECTIONS = ("lines", "words")


class ExpiryFormat(StrEnum):
    """How the original's callers have turned a datetime into the ``expires`` text."""

    ISO_AWARE = "iso_aware"  # datetime.now(timezone.utc).isoformat(): 2026-12-01T22:01:33.5+00:00
    ISO_NAIVE = "iso_naive"  # datetime.utcnow().isoformat(): 2026-12-01T22:01:33.500000
    SPACE = "space"  # str(datetime) without zone, whole seconds: 2026-12-01 22:01:33
    SPACE_AWARE = "space_aware"  # str(aware datetime): 2026-12-01 22:01:33.500000+00:00
    ZULU = "zulu"  # 2026-12-01T22:01:33Z

    def render(self, moment: datetime) -> str:
        utc = moment.astimezone(UTC)
        if self is ExpiryFormat.ISO_AWARE:
            return utc.isoformat()
        if self is ExpiryFormat.ISO_NAIVE:
            return utc.replace(tzinfo=None).isoformat()
        if self is ExpiryFormat.SPACE:
            return str(utc.replace(tzinfo=None, microsecond=0))
        if self is ExpiryFormat.SPACE_AWARE:
            return str(utc)
        return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True)
class OriginalLock:
    """What the original's entity holds after parsing a row."""

    lock_id: str
    owner: str
    expires: str
    collection: str
    heartbeat: str | None


class OriginalLockError(Exception):
    """The original's accessor refused (its ``EntityAlreadyExistsError`` and friends)."""


class OriginalLockManager:
    """The original's lock calls on one table, with an injectable wall clock."""

    def __init__(
        self,
        table: str,
        *,
        clock: Callable[[], datetime] | None = None,
        expiry_format: ExpiryFormat = ExpiryFormat.ISO_AWARE,
        client: Any | None = None,
    ) -> None:
        self.table = table
        self.clock = clock or (lambda: datetime.now(UTC))
        self.expiry_format = expiry_format
        self.client = client or aws.client("dynamodb")

    # -- writes --------------------------------------------------------------------------------
    def acquire(self, lock_id: str, collection: str, duration: timedelta) -> str:
        """Conditional PutItem of a whole new row; returns the new owner."""
        owner = str(uuid.uuid4())
        now = self.clock()
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(lock_id, collection, owner, now + duration, now),
                ConditionExpression="attribute_not_exists(PK) OR expires < :now",
                ExpressionAttributeValues={":now": {"S": now.astimezone(UTC).isoformat()}},
            )
        except ClientError as exc:
            raise OriginalLockError(f"acquire of {lock_id} refused: {exc}") from exc
        return owner

    def heartbeat(self, lock_id: str, collection: str, owner: str, duration: timedelta) -> None:
        """Rewrite the whole row with a new expiry; checks that a row exists, not whose it is."""
        now = self.clock()
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self._item(lock_id, collection, owner, now + duration, now),
                ConditionExpression="attribute_exists(PK) AND attribute_exists(SK)",
            )
        except ClientError as exc:
            raise OriginalLockError(f"heartbeat of {lock_id} refused: {exc}") from exc

    def release(self, lock_id: str, collection: str, owner: str) -> None:
        """Delete the row if ``owner`` still holds it."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=_key(lock_id, collection),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            raise OriginalLockError(f"release of {lock_id} refused: {exc}") from exc

    # -- reads (the clean-up tools) ------------------------------------------------------------
    def get_compaction_lock(self, lock_id: str, collection: str) -> OriginalLock | None:
        reply = self.client.get_item(TableName=self.table, Key=_key(lock_id, collection))
        item = reply.get("Item")
        return parse_original(item) if item else None

    def cleanup_expired_locks(self) -> int:
        """Query GSI1 for rows whose ``GSI1SK`` sorts below ``EXPIRES#now``, parse, delete."""
        now = self.clock().astimezone(UTC).isoformat()
        expired: list[OriginalLock] = []
        for collection in COLLECTIONS:
            reply = self.client.query(
                TableName=self.table,
                IndexName="GSI1",
                KeyConditionExpression="GSI1PK = :pk AND GSI1SK < :sk",
                ExpressionAttributeValues={
                    ":pk": {"S": f"LOCK#{collection}"},
                    ":sk": {"S": f"EXPIRES#{now}"},
                },
            )
            expired.extend(parse_original(item) for item in reply.get("Items", []))
        for lock in expired:
            self.client.delete_item(TableName=self.table, Key=_key(lock.lock_id, lock.collection))
        return len(expired)

    def _item(
        self, lock_id: str, collection: str, owner: str, expires: datetime, now: datetime
    ) -> dict[str, Any]:
        text = self.expiry_format.render(expires)
        return {
            **_key(lock_id, collection),
            "GSI1PK": {"S": f"LOCK#{collection}"},
            "GSI1SK": {"S": f"EXPIRES#{text}"},
            "TYPE": {"S": "COMPACTION_LOCK"},
            "owner": {"S": owner},
            "expires": {"S": text},
            "collection": {"S": collection},
            "heartbeat": {"S": now.astimezone(UTC).isoformat()},
        }


def parse_original(item: dict[str, Any]) -> OriginalLock:
    """The original's item-to-entity conversion: the checks it makes, in its order."""
    missing = {"PK", "SK", "owner", "expires", "collection"} - set(item)
    if missing:
        raise ValueError(f"Lock item missing keys: {missing}")
    parts = item["PK"]["S"].split("#")
    if len(parts) < 3 or parts[0] != "LOCK":
        raise ValueError(f"Invalid lock PK format: {item['PK']['S']}")
    collection, lock_id = parts[1], "#".join(parts[2:])
    if collection not in COLLECTIONS:
        raise ValueError(f"Invalid collection in item: {collection}")
    owner = item["owner"]["S"]
    if not isinstance(owner, str) or not _UUID4.match(owner):
        raise ValueError("uuid must be a valid UUIDv4")
    expires = item["expires"]["S"]
    if not isinstance(expires, str):
        raise ValueError("expires must be datetime or ISO-8601 string")
    return OriginalLock(lock_id, owner, expires, collection, item.get("heartbeat", {}).get("S"))


def original_expiry(lock: OriginalLock) -> datetime:
    """How the original's ownership check reads ``expires`` (``Z`` replaced, then fromisoformat)."""
    moment = datetime.fromisoformat(lock.expires.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _key(lock_id: str, collection: str) -> dict[str, Any]:
    return {"PK": {"S": f"LOCK#{collection}#{lock_id}"}, "SK": {"S": "LOCK"}}
