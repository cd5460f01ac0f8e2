"""The lease table on DynamoDB: one row per lock id, beside one fence item per lock id.

Rows (DESIGN §1; readable by the original's lock tools at every moment; keys, writes and their
conditions in :mod:`snapmerge.adapters.lock_items`)::

    PK=LOCK#{collection}#{lock_id}  SK=LOCK  GSI1PK=LOCK#{collection}  GSI1SK=EXPIRES#{iso}
    TYPE=COMPACTION_LOCK  owner  expires  heartbeat  acquired  collection
    fence (N, a copy)  expires_ms (N, epoch ms)  time_to_live (N, epoch s)

    PK=LOCK#{collection}#{lock_id}  SK=FENCE  fence (N, the high-water mark)

Why these choices (ADR 0002):

* **The grant decision is made in Python on a strongly consistent read**, then written with a
  condition that the row is still exactly as read. The original writes ``expires`` in several
  text formats (``T`` or space separator, with or without zone) and no ``expires_ms``: a
  DynamoDB string comparison took a live ``2026-12-01 22:01:33`` row for expired. Every format
  is parsed (:mod:`snapmerge.adapters.lock_rows`); one that cannot be parsed is busy.
* **The fence lives in its own item** (``SK=FENCE``), which the original never touches: its
  acquire replaces the whole lock row and its release deletes it, so a fence kept only in the row
  started again at 1. A grant is one transaction of two conditional updates: the fence item
  rises to ``next`` (only if it is below ``next``) and the lock row takes ``owner`` and
  ``fence = next`` (only if it is still as read). Transactions of updates need no IAM action
  beyond ``dynamodb:UpdateItem``; the code calls only GetItem, UpdateItem and TransactWriteItems.
* **Release keeps a row the original can parse.** It writes ``owner`` = :data:`RELEASED_OWNER`
  (a UUIDv4 that is never a holder) and ``expires`` = now, conditionally on owner and fence; the
  row goes by DynamoDB TTL ``ttl_margin`` after its last expiry, or by the original's
  ``cleanup_expired_locks``. Attributes we do not know are left as they are (every write is an
  ``UpdateItem`` ``SET``), never dropped.
* **Busy and broken never look alike:** a refused condition is :class:`LockBusyError` (acquire) or
  :class:`LeaseLostError` (renew); anything else (throttled after the SDK's retries, missing table,
  access denied, validation, no connection) is :class:`LockError` with the cause chained.
* **The caller's wall clock is the "now" of every decision**, so an injected clock makes leases
  expire in tests without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from snapmerge import aws
from snapmerge.adapters.dynamodb_expr import names_for, tx_update, unchanged_since_read
from snapmerge.adapters.lock_items import (
    DEFAULT_TTL_MARGIN,
    FENCE_RISES,
    FENCE_UPDATE,
    GRANT_UPDATE,
    RELEASE_CONDITION,
    RELEASE_UPDATE,
    RENEW_CONDITION,
    RENEW_UPDATE,
    collection_of,
    fence_key,
    grant_of,
    grant_values,
    release_values,
    renew_values,
    row_key,
)
from snapmerge.adapters.lock_rows import RowView, view_of_item
from snapmerge.errors import LeaseLostError, LockBusyError, LockError
from snapmerge.ports import LeaseGrant

__all__ = ["DynamoLeaseTable"]

_CONDITION_FAILED = "ConditionalCheckFailedException"
_CANCELLED = "TransactionCanceledException"
_LOST_RACE = {"ConditionalCheckFailed", "TransactionConflict"}
_RACE_ATTEMPTS = 3


class DynamoLeaseTable:
    """:class:`~snapmerge.ports.LeaseTable` on a DynamoDB table with the original lock schema."""

    def __init__(
        self,
        table_name: str,
        client: Any | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        ttl_margin: timedelta = DEFAULT_TTL_MARGIN,
    ) -> None:
        self.table_name = table_name
        self._client = client if client is not None else aws.client("dynamodb")
        self._now = clock or (lambda: datetime.now(UTC))
        self._ttl_margin = ttl_margin
        self._collections: dict[str, str] = {}

    # -- LeaseTable ----------------------------------------------------------------------------
    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        self._collections[lock_id] = collection
        read_fence = False
        view: RowView | None = None
        for _ in range(_RACE_ATTEMPTS):
            now = self._now()
            item = self.read_raw(lock_id, collection)
            view = view_of_item(item)
            if view is not None and view.owner == owner and item is not None:
                # Our own earlier attempt landed and its reply was lost (the SDK retried).
                return grant_of(lock_id, item)
            if view is not None:
                view.refuse_if_held(lock_id, now)
            high = view.fence if view is not None else 0
            if read_fence or high == 0:
                high = max(high, self.read_fence(lock_id, collection))
            grant = LeaseGrant(lock_id, collection, owner, high + 1, now + duration)
            try:
                self._grant_write(grant, now, item)
            except _LostRace as lost:
                read_fence = read_fence or lost.fence_moved
                continue
            return grant
        holder = view.owner if view is not None else None
        raise LockBusyError(lock_id, holder, view.raw_expires if view is not None else None)

    def _grant_write(
        self, grant: LeaseGrant, now: datetime, seen: Mapping[str, Any] | None
    ) -> None:
        """The grant transaction; raises :class:`_LostRace` if either condition was refused."""
        lock_id, collection = grant.lock_id, grant.collection
        row_condition, row_values = unchanged_since_read(seen)
        values = {**grant_values(grant, now, self._ttl_margin), **row_values}
        items = [
            tx_update(
                self.table_name,
                fence_key(lock_id, collection),
                FENCE_UPDATE,
                FENCE_RISES,
                {":next": values[":next"]},
            ),
            tx_update(
                self.table_name, row_key(lock_id, collection), GRANT_UPDATE, row_condition, values
            ),
        ]
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if aws.error_code(exc) != _CANCELLED:
                raise _lock_error("acquire", lock_id, exc) from exc
            reasons = [
                str(r.get("Code", "None")) for r in exc.response.get("CancellationReasons", [])
            ]
            if not reasons or any(r not in _LOST_RACE | {"None"} for r in reasons):
                raise _lock_error("acquire", lock_id, exc) from exc
            raise _LostRace(fence_moved=reasons[0] != "None") from None
        except BotoCoreError as exc:
            raise LockError(f"lock table acquire of {lock_id!r} failed: {exc}") from exc

    def read_fence(self, lock_id: str, collection: str) -> int:
        """The fence high-water mark (0 if this lock was never granted)."""
        item = self._get(fence_key(lock_id, collection), "fence read", lock_id) or {}
        return int(item.get("fence", {}).get("N", "0"))

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        values = renew_values(grant, self._now(), duration, self._ttl_margin)
        try:
            reply = self._update(
                grant.lock_id, grant.collection, RENEW_UPDATE, RENEW_CONDITION, values
            )
        except ClientError as exc:
            if aws.error_code(exc) == _CONDITION_FAILED:
                raise LeaseLostError(
                    f"lease {grant.lock_id!r} (fence {grant.fence}) expired or was taken over"
                ) from None
            raise _lock_error("renew", grant.lock_id, exc) from exc
        return grant_of(grant.lock_id, reply["Attributes"])

    def release(self, grant: LeaseGrant) -> None:
        values = release_values(grant, self._now(), self._ttl_margin)
        try:
            self._update(grant.lock_id, grant.collection, RELEASE_UPDATE, RELEASE_CONDITION, values)
        except ClientError as exc:
            if aws.error_code(exc) == _CONDITION_FAILED:
                return  # not ours any more: somebody else's lease is none of our business
            raise _lock_error("release", grant.lock_id, exc) from exc

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        """The current holder (possibly expired), or ``None`` when the row is missing or released.

        The collection is part of the row key but not of the Protocol's arguments: it comes from
        ``collection``, else from an earlier acquire through this table, else from the id
        (``chroma-{collection}-update``); a per-batch id read cold needs ``collection``.
        """
        collection = collection or self._collections.get(lock_id) or collection_of(lock_id)
        if not collection:
            raise LockError(f"cannot read {lock_id!r}: its collection is unknown")
        item = self.read_raw(lock_id, collection)
        view = view_of_item(item)
        if item is None or view is None or view.owner is None:
            return None
        return grant_of(lock_id, item)

    # -- helpers -------------------------------------------------------------------------------
    def read_raw(self, lock_id: str, collection: str) -> dict[str, Any] | None:
        """The row exactly as stored (strongly consistent), for diagnostics and tests."""
        return self._get(row_key(lock_id, collection), "read", lock_id)

    def _get(self, key: Mapping[str, Any], op: str, lock_id: str) -> dict[str, Any] | None:
        """One strongly consistent GetItem; errors as :class:`LockError` naming ``op``."""
        try:
            reply = self._client.get_item(
                TableName=self.table_name, Key=dict(key), ConsistentRead=True
            )
        except ClientError as exc:
            raise _lock_error(op, lock_id, exc) from exc
        except BotoCoreError as exc:
            raise LockError(f"lock table {op} of {lock_id!r} failed: {exc}") from exc
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def _update(
        self,
        lock_id: str,
        collection: str,
        update: str,
        condition: str,
        values: Mapping[str, Any],
    ) -> dict[str, Any]:
        """One conditional UpdateItem of the lock's row. A ``ClientError`` (a refused condition
        among them) is the caller's to translate; a transport failure is :class:`LockError`."""
        try:
            reply: dict[str, Any] = self._client.update_item(
                TableName=self.table_name,
                Key=row_key(lock_id, collection),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names_for(update, condition),
                ExpressionAttributeValues=dict(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except BotoCoreError as exc:  # no connection, timeouts after retries, bad parameters
            raise LockError(f"lock table update of {lock_id!r} failed: {exc}") from exc
        return reply


class _LostRace(Exception):
    """The grant transaction was refused: the row or the fence moved after our read."""

    def __init__(self, *, fence_moved: bool) -> None:
        super().__init__("lost the race for the lock row")
        self.fence_moved = fence_moved


def _lock_error(op: str, lock_id: str, exc: ClientError) -> LockError:
    return LockError(f"lock table {op} of {lock_id!r} failed: {aws.error_code(exc)}: {exc}")
