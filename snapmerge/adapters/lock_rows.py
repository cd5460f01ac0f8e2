"""What a lock row says, whoever wrote it: snapmerge or the original pipeline's lock manager.

Both lease tables (DynamoDB and the in-memory fake) decide from this one reading, so they cannot
drift apart on the formats of a row written by another program (ADR 0002):

* **Expiry.** snapmerge writes ``expires_ms`` (epoch ms) beside an ISO ``expires``. The original
  writes only ``expires``, as ``datetime.isoformat()`` (``T`` separator, ``+00:00`` or no zone,
  microseconds dropped when zero), and its entity accepts any string, so ``str(datetime)`` with a
  space separator and ``Z`` suffixes occur too. Every one of those parses here; a value without
  a zone is UTC. When both fields are present the *later* instant counts (a writer that changed
  one field and not the other must not shorten a lease). An expiry that cannot be read makes the
  row **busy**: taking a row we cannot understand could give the lock to two holders.
* **Released.** The original's tools refuse a row without an ``owner`` that is a UUIDv4, so a
  snapmerge release writes :data:`RELEASED_OWNER` (UUIDv4-shaped, never handed out to a holder)
  and an ``expires`` of "now". A row without ``owner`` (an earlier snapmerge release) is released
  too.
* **Fence.** A row's own ``fence`` is only a copy: the high-water mark lives in a separate item
  (``SK=FENCE``) that the original never reads, replaces or deletes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

from snapmerge.errors import LockBusyError

RELEASED_OWNER = "00000000-0000-4000-8000-000000000000"
"""The ``owner`` of a released row: a valid UUIDv4 for the original's parser, never a holder."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_expiry(raw: str) -> datetime | None:
    """An ``expires`` value as an aware UTC instant, or ``None`` when it cannot be read.

    Accepts ``T`` or space separators, fractional seconds of any length (truncated to µs),
    ``Z`` / ``+HH:MM`` / no zone (read as UTC).
    """
    text = raw.strip()
    if not text or len(text) > 64:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000.0, tz=UTC)


@dataclass(frozen=True)
class RowView:
    """A lock row reduced to what a grant decision needs."""

    owner: str | None  # None: released (owner missing or RELEASED_OWNER)
    expires: datetime | None  # None: unreadable
    raw_expires: str
    fence: int  # the row's copy of the fence; 0 when the row carries none

    @classmethod
    def of(
        cls, owner: str | None, expires: str | None, expires_ms: int | None, fence: int
    ) -> RowView:
        moments = []
        if expires_ms is not None:
            moments.append(from_epoch_ms(expires_ms))
        parsed = parse_expiry(expires) if expires is not None else None
        if parsed is not None:
            moments.append(parsed)
        readable = bool(moments) and (expires is None or parsed is not None)
        holder = None if owner in (None, RELEASED_OWNER) else owner
        return cls(
            owner=holder,
            expires=max(moments) if readable else None,
            raw_expires=expires if expires is not None else "",
            fence=fence,
        )

    def refuse_if_held(self, lock_id: str, now: datetime) -> None:
        """Raise :class:`LockBusyError` unless the row may be granted at ``now``."""
        if self.owner is None:
            return
        if self.expires is None:
            raise LockBusyError(
                lock_id,
                self.owner,
                f"{self.raw_expires!r} (an expiry snapmerge cannot read: the row is treated as "
                "held; fix or delete it by hand once its writer is stopped)",
            )
        if self.expires > now:
            raise LockBusyError(lock_id, self.owner, self.raw_expires or iso(self.expires))


def iso(moment: datetime) -> str:
    """snapmerge's own timestamp format: UTC, ``T``, always microseconds (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def view_of_item(item: Mapping[str, Mapping[str, str]] | None) -> RowView | None:
    """A DynamoDB item (low-level attribute values) as a :class:`RowView`; ``None`` if missing."""
    if not item:
        return None
    owner = item.get("owner", {}).get("S")
    if "owner" in item and owner is None:
        owner = repr(dict(item["owner"]))  # some other type: a holder we cannot name
    expires = item.get("expires", {}).get("S")
    if "expires" in item and expires is None:
        expires = repr(dict(item["expires"]))  # NULL / a number: unreadable
    ms_raw = item.get("expires_ms", {}).get("N")
    fence_raw = item.get("fence", {}).get("N")
    return RowView.of(
        owner,
        expires,
        _whole(ms_raw) if ms_raw is not None else None,
        _whole(fence_raw) if fence_raw is not None else 0,
    )


def _whole(raw: str) -> int:
    """A DynamoDB number as a whole number, rounded up: any number another writer may store
    (``3.0``, ``4070908800000.5``) reads, a later expiry errs on the side of busy, and a fence
    rounded up never lets the next grant's fence fall back."""
    return int(Decimal(raw).to_integral_value(rounding=ROUND_CEILING))
