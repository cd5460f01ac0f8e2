"""The lock's two DynamoDB items as snapmerge writes them (the schema: ``dynamodb_lock``).

Their keys, what each write sets (the grant, a renewal, a release) and on what condition, and
the :class:`~snapmerge.ports.LeaseGrant` a stored row stands for. Reading a row written by
anyone, the original's lock manager included, is :mod:`snapmerge.adapters.lock_rows`; making
the calls and translating their errors is
:class:`~snapmerge.adapters.dynamodb_lock.DynamoLeaseTable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from snapmerge.adapters.lock_rows import RELEASED_OWNER, epoch_ms, iso, view_of_item
from snapmerge.errors import LockError
from snapmerge.ports import LeaseGrant

ROW_TYPE = "COMPACTION_LOCK"
SORT_KEY = "LOCK"
FENCE_SORT_KEY = "FENCE"
DEFAULT_TTL_MARGIN = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def row_key(lock_id: str, collection: str) -> dict[str, Any]:
    return {"PK": {"S": f"LOCK#{collection}#{lock_id}"}, "SK": {"S": SORT_KEY}}


def fence_key(lock_id: str, collection: str) -> dict[str, Any]:
    return {"PK": {"S": f"LOCK#{collection}#{lock_id}"}, "SK": {"S": FENCE_SORT_KEY}}


# Acquire: read the row (consistent), decide in Python (RowView.refuse_if_held), then one
# transaction; either both updates land or neither does:
#
#   read row R (owner o, expires e) ... decide: free ... TransactWriteItems
#     FENCE: SET fence = :next      IF fence is missing or below :next   (never backwards)
#     LOCK:  SET owner, fence, ...  IF the row is still R                (nobody moved first)
#   a refused condition -> somebody moved between the read and the write -> read again.
FENCE_RISES = "attribute_not_exists(#fence) OR #fence < :next"

# Renew: only the same grant (owner AND fence) and only before it expired. An expired holder can
# never revive its lease, even if nobody took it over: it must acquire again (and get a new fence).
# A row replaced by the original's writer has no fence, so the renew is refused.
_IS_OUR_GRANT = "#owner = :owner AND #fence = :fence"
_NOT_EXPIRED = "#expires_ms > :now_ms"
RENEW_CONDITION = f"{_IS_OUR_GRANT} AND {_NOT_EXPIRED}"

# Release: only our own grant; expiry does not matter (releasing an expired row we still own is
# harmless, releasing someone else's is refused and ignored).
RELEASE_CONDITION = _IS_OUR_GRANT

# What each write sets. Every attribute goes through a placeholder (dynamodb_expr.names_for).
GRANT_UPDATE = (
    "SET #owner = :owner, #collection = :collection, #gsi1pk = :gsi1pk, "
    "#type = :type, #acquired = :now_iso, #heartbeat = :now_iso, "
    "#expires = :expires, #expires_ms = :expires_ms, #gsi1sk = :gsi1sk, "
    "#ttl = :ttl, #fence = :next"
)
FENCE_UPDATE = "SET #fence = :next"
_NEW_EXPIRY = (
    "#heartbeat = :now_iso, #expires = :expires, #expires_ms = :expires_ms, "
    "#gsi1sk = :gsi1sk, #ttl = :ttl"
)
RENEW_UPDATE = f"SET {_NEW_EXPIRY}"
RELEASE_UPDATE = f"SET {_NEW_EXPIRY}, #owner = :released"


def expiry_values(expires: datetime, ttl_margin: timedelta) -> dict[str, Any]:
    """The values of a new expiry: ISO and epoch ms, the GSI sort key, the TTL after the margin."""
    ttl = int((expires + ttl_margin - _EPOCH).total_seconds())
    return {
        ":expires": {"S": iso(expires)},
        ":expires_ms": {"N": str(epoch_ms(expires))},
        ":gsi1sk": {"S": f"EXPIRES#{iso(expires)}"},
        ":ttl": {"N": str(ttl)},
    }


def grant_values(grant: LeaseGrant, now: datetime, ttl_margin: timedelta) -> dict[str, Any]:
    """The values :data:`GRANT_UPDATE` writes into the row (``:next`` also lifts the fence)."""
    return {
        ":owner": {"S": grant.owner},
        ":collection": {"S": grant.collection},
        ":gsi1pk": {"S": f"LOCK#{grant.collection}"},
        ":type": {"S": ROW_TYPE},
        ":next": {"N": str(grant.fence)},
        ":now_iso": {"S": iso(now)},
        **expiry_values(grant.expires, ttl_margin),
    }


def renew_values(
    grant: LeaseGrant, now: datetime, duration: timedelta, ttl_margin: timedelta
) -> dict[str, Any]:
    """The values of :data:`RENEW_UPDATE` and :data:`RENEW_CONDITION`."""
    return {
        ":owner": {"S": grant.owner},
        ":fence": {"N": str(grant.fence)},
        ":now_ms": {"N": str(epoch_ms(now))},
        ":now_iso": {"S": iso(now)},
        **expiry_values(now + duration, ttl_margin),
    }


def release_values(grant: LeaseGrant, now: datetime, ttl_margin: timedelta) -> dict[str, Any]:
    """The values of :data:`RELEASE_UPDATE` and :data:`RELEASE_CONDITION`: expired now, and
    the owner :data:`~snapmerge.adapters.lock_rows.RELEASED_OWNER`."""
    return {
        ":owner": {"S": grant.owner},
        ":fence": {"N": str(grant.fence)},
        ":now_iso": {"S": iso(now)},
        ":released": {"S": RELEASED_OWNER},
        **expiry_values(now, ttl_margin),
    }


def grant_of(lock_id: str, item: Mapping[str, Any]) -> LeaseGrant:
    view = view_of_item(item)
    if view is None or view.expires is None:
        raw = view.raw_expires if view is not None else ""
        raise LockError(f"lock row {lock_id!r} has an unreadable expires {raw!r}")
    return LeaseGrant(
        lock_id=lock_id,
        collection=_s(item, "collection") or "",
        owner=view.owner or "",
        fence=view.fence,
        expires=view.expires,
    )


def collection_of(lock_id: str) -> str:
    """The collection a snapmerge lock id names (``chroma-{collection}-update``), else ``""``."""
    prefix, suffix = "chroma-", "-update"
    if lock_id.startswith(prefix) and lock_id.endswith(suffix):
        return lock_id[len(prefix) : -len(suffix)]
    return ""


def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name, {}).get("S")
    return str(value) if value is not None else None
