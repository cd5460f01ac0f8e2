"""The lease table on DynamoDB: one row per lock id, written only by conditional updates.

Row (DESIGN §1, compatible with the original plus ``fence``, ``expires_ms`` and ``time_to_live``)::

    PK=LOCK#{collection}#{lock_id}  SK=LOCK  GSI1PK=LOCK#{collection}  GSI1SK=EXPIRES#{iso}
    TYPE=COMPACTION_LOCK  owner  expires  heartbeat  acquired  collection
    fence (N)  expires_ms (N, epoch ms)  time_to_live (N, epoch s)

Why these choices:

* **The expiry comparison is numeric** (``expires_ms``): the ISO fields stay for readers of the
  original schema, but string comparison of ISO timestamps breaks on format drift
  (``isoformat()`` drops ``.000000`` when microseconds are zero). A row left by the original code
  has no ``expires_ms``; the condition then falls back to comparing its ISO ``expires``.
* **Release keeps the row.** It removes ``owner`` and moves ``expires`` to "now", conditionally on
  owner and fence, so the ``fence`` counter survives: the next grant is ``fence + 1``. The row is
  only deleted by DynamoDB TTL ``ttl_margin`` (default one day) after its last expiry; a fence
  restarting at 1 after that is harmless because every lease of the earlier sequence ended long
  before (the owner check, not the fence, is what refuses a stale renew).
* **Busy and broken never look alike:** a refused condition is :class:`LockBusyError` (acquire) or
  :class:`LeaseLostError` (renew); anything else (throttled after the SDK's retries, missing table,
  access denied, validation, no connection) is :class:`LockError` with the cause chained.
* **The caller's wall clock is the "now" of every condition**, passed as a value, so an injected
  clock makes leases expire in tests without sleeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from snapmerge import aws
from snapmerge.errors import LeaseLostError, LockBusyError, LockError
from snapmerge.ports import LeaseGrant

ROW_TYPE = "COMPACTION_LOCK"
SORT_KEY = "LOCK"
DEFAULT_TTL_MARGIN = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONDITION_FAILED = "ConditionalCheckFailedException"

# Every attribute goes through a placeholder: TYPE, owner and others are DynamoDB reserved words.
_NAMES = {
    "#pk": "PK",
    "#owner": "owner",
    "#expires": "expires",
    "#expires_ms": "expires_ms",
    "#heartbeat": "heartbeat",
    "#acquired": "acquired",
    "#collection": "collection",
    "#gsi1pk": "GSI1PK",
    "#gsi1sk": "GSI1SK",
    "#type": "TYPE",
    "#fence": "fence",
    "#ttl": "time_to_live",
}


def iso(moment: datetime) -> str:
    """The one timestamp format of the row: UTC, always with microseconds (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def row_key(lock_id: str, collection: str) -> dict[str, Any]:
    return {"PK": {"S": f"LOCK#{collection}#{lock_id}"}, "SK": {"S": SORT_KEY}}


# Acquire: one conditional write, allowed only when nobody holds a live lease.
#
#   t0 holder A granted ........ t0+duration (A's expires_ms) ........
#   |-- B refused (busy) -------|-- B granted (expired), fence+1 -----
#   A releases early at t1 -> owner removed -> B granted at once.
_ACQUIRE_ROW_MISSING = "attribute_not_exists(#pk)"
_ACQUIRE_RELEASED = "attribute_not_exists(#owner)"
_ACQUIRE_EXPIRED = "#expires_ms <= :now_ms"
_ACQUIRE_EXPIRED_ORIGINAL_ROW = "(attribute_not_exists(#expires_ms) AND #expires <= :now_iso)"
_ACQUIRE_CONDITION = " OR ".join(
    (_ACQUIRE_ROW_MISSING, _ACQUIRE_RELEASED, _ACQUIRE_EXPIRED, _ACQUIRE_EXPIRED_ORIGINAL_ROW)
)

# Renew: only the same grant (owner AND fence) and only before it expired. An expired holder can
# never revive its lease, even if nobody took it over: it must acquire again (and get a new fence).
_IS_OUR_GRANT = "#owner = :owner AND #fence = :fence"
_NOT_EXPIRED = "#expires_ms > :now_ms"
_RENEW_CONDITION = f"{_IS_OUR_GRANT} AND {_NOT_EXPIRED}"

# Release: only our own grant; expiry does not matter (releasing an expired row we still own is
# harmless, releasing someone else's is refused and ignored).
_RELEASE_CONDITION = _IS_OUR_GRANT


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
        now = self._now()
        expires = now + duration
        values = {
            ":owner": {"S": owner},
            ":collection": {"S": collection},
            ":gsi1pk": {"S": f"LOCK#{collection}"},
            ":type": {"S": ROW_TYPE},
            ":one": {"N": "1"},
            ":now_ms": {"N": str(epoch_ms(now))},
            ":now_iso": {"S": iso(now)},
            **self._expiry_values(expires),
        }
        try:
            reply = self._update(
                lock_id,
                collection,
                update=(
                    "SET #owner = :owner, #collection = :collection, #gsi1pk = :gsi1pk, "
                    "#type = :type, #acquired = :now_iso, #heartbeat = :now_iso, "
                    "#expires = :expires, #expires_ms = :expires_ms, #gsi1sk = :gsi1sk, "
                    "#ttl = :ttl ADD #fence :one"
                ),
                condition=_ACQUIRE_CONDITION,
                values=values,
            )
        except ClientError as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise _lock_error("acquire", lock_id, exc) from exc
            current: dict[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
            current = current or self.read_raw(lock_id, collection)
            if current and _s(current, "owner") == owner:
                # Our own earlier attempt landed and its reply was lost (the SDK retried).
                return _grant(lock_id, current)
            holder = _s(current, "owner") if current else None
            until = _s(current, "expires") if current else None
            raise LockBusyError(lock_id, holder, until) from None
        return _grant(lock_id, reply["Attributes"])

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        now = self._now()
        values = {
            ":owner": {"S": grant.owner},
            ":fence": {"N": str(grant.fence)},
            ":now_ms": {"N": str(epoch_ms(now))},
            ":now_iso": {"S": iso(now)},
            **self._expiry_values(now + duration),
        }
        try:
            reply = self._update(
                grant.lock_id,
                grant.collection,
                update=(
                    "SET #heartbeat = :now_iso, #expires = :expires, #expires_ms = :expires_ms, "
                    "#gsi1sk = :gsi1sk, #ttl = :ttl"
                ),
                condition=_RENEW_CONDITION,
                values=values,
            )
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                raise LeaseLostError(
                    f"lease {grant.lock_id!r} (fence {grant.fence}) expired or was taken over"
                ) from None
            raise _lock_error("renew", grant.lock_id, exc) from exc
        return _grant(grant.lock_id, reply["Attributes"])

    def release(self, grant: LeaseGrant) -> None:
        now = self._now()
        values = {
            ":owner": {"S": grant.owner},
            ":fence": {"N": str(grant.fence)},
            ":now_iso": {"S": iso(now)},
            **self._expiry_values(now),
        }
        try:
            self._update(
                grant.lock_id,
                grant.collection,
                update=(
                    "SET #heartbeat = :now_iso, #expires = :expires, #expires_ms = :expires_ms, "
                    "#gsi1sk = :gsi1sk, #ttl = :ttl REMOVE #owner"
                ),
                condition=_RELEASE_CONDITION,
                values=values,
            )
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
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
        if not item or "owner" not in item:
            return None
        return _grant(lock_id, item)

    # -- helpers -------------------------------------------------------------------------------
    def read_raw(self, lock_id: str, collection: str) -> dict[str, Any] | None:
        """The row exactly as stored (strongly consistent), for diagnostics and tests."""
        try:
            reply = self._client.get_item(
                TableName=self.table_name, Key=row_key(lock_id, collection), ConsistentRead=True
            )
        except ClientError as exc:
            raise _lock_error("read", lock_id, exc) from exc
        except BotoCoreError as exc:
            raise LockError(f"lock table read of {lock_id!r} failed: {exc}") from exc
        item: dict[str, Any] | None = reply.get("Item")
        return item

    def _expiry_values(self, expires: datetime) -> dict[str, Any]:
        ttl = int((expires + self._ttl_margin - _EPOCH).total_seconds())
        return {
            ":expires": {"S": iso(expires)},
            ":expires_ms": {"N": str(epoch_ms(expires))},
            ":gsi1sk": {"S": f"EXPIRES#{iso(expires)}"},
            ":ttl": {"N": str(ttl)},
        }

    def _update(
        self,
        lock_id: str,
        collection: str,
        *,
        update: str,
        condition: str,
        values: Mapping[str, Any],
    ) -> dict[str, Any]:
        placeholders = set(re.findall(r"#\w+", f"{update} {condition}"))
        used = {k: v for k, v in _NAMES.items() if k in placeholders}
        try:
            reply: dict[str, Any] = self._client.update_item(
                TableName=self.table_name,
                Key=row_key(lock_id, collection),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=used,
                ExpressionAttributeValues=dict(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except BotoCoreError as exc:  # no connection, timeouts after retries, bad parameters
            raise LockError(f"lock table update of {lock_id!r} failed: {exc}") from exc
        return reply


def collection_of(lock_id: str) -> str:
    """The collection a snapmerge lock id names (``chroma-{collection}-update``), else ``""``."""
    prefix, suffix = "chroma-", "-update"
    if lock_id.startswith(prefix) and lock_id.endswith(suffix):
        return lock_id[len(prefix) : -len(suffix)]
    return ""


def _grant(lock_id: str, item: Mapping[str, Any]) -> LeaseGrant:
    raw = _s(item, "expires") or ""
    try:
        expires = datetime.fromisoformat(raw)
    except ValueError:
        raise LockError(f"lock row {lock_id!r} has an unreadable expires {raw!r}") from None
    expires = expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires.astimezone(UTC)
    return LeaseGrant(
        lock_id=lock_id,
        collection=_s(item, "collection") or "",
        owner=_s(item, "owner") or "",
        fence=int(item.get("fence", {}).get("N", "0")),
        expires=expires,
    )


def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _lock_error(op: str, lock_id: str, exc: ClientError) -> LockError:
    return LockError(f"lock table {op} of {lock_id!r} failed: {_code(exc)}: {exc}")
