"""Sticky percentage rollouts: a documented hash of (flag, salt, targeting key) into 10,000 buckets.

Powertools' ``MODULO_RANGE`` takes the context value modulo a base and does no hashing, so
sequential ids would land in sequential buckets and a rollout would follow id order. We hash
instead::

    digest = sha256(f"{flag}:{salt}:{targeting_key}".encode("utf-8", "surrogatepass"))
    bucket = int.from_bytes(digest[:8], "big") % 10_000          # 0 .. 9999

A rollout of ``P`` percent (0 ≤ P ≤ 100, at most two decimals) includes exactly the buckets
``bucket < P * 100``. A key that is not valid Unicode text (a lone surrogate, which no JSON
event can carry but a Python caller can) is encoded with ``surrogatepass``, so it still has one
fixed bucket instead of raising. The bucket of a key never changes (until the salt does), so
raising ``P`` only adds keys and never moves one back. The test vectors in ``docs/flags.md`` are
asserted in ``tests/unit/flags/test_bucketing.py``.

A *switchback* flag (``"switchback"`` in its document) buckets a unit instead of the targeting
key: ``unit_key(collection, now, window_seconds)`` is ``f"{collection}@{window}"`` (or
``f"@{window}"`` when not by collection) with ``window = floor(now / window_seconds)``, so every
execution on one collection in one time window gets the same bucket, and the next window draws
again.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal, InvalidOperation
from typing import Final

BUCKETS: Final = 10_000


def bucket_of(flag: str, salt: str, targeting_key: str) -> int:
    """The bucket (0..9999) of ``targeting_key`` for ``flag`` salted with ``salt``."""
    text = f"{flag}:{salt}:{targeting_key}"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def window_of(now: float, window_seconds: int) -> int:
    """The index of the time window holding ``now`` (epoch seconds): ``floor(now / window)``."""
    return int(now // window_seconds)


def unit_key(collection: str | None, now: float, window_seconds: int) -> str:
    """The switchback unit of ``collection`` at ``now``; ``collection=None`` for a unit that
    spans every collection of the window."""
    return f"{collection or ''}@{window_of(now, window_seconds)}"


def threshold_for(percent: float | str | Decimal) -> int:
    """The bucket threshold of a rollout of ``percent`` %: buckets below it are included.

    Accepts at most two decimals (``12.5`` → 1250, ``0.01`` → 1); anything finer, negative or
    above 100 is refused rather than rounded, so a threshold always means exactly one percentage.
    """
    try:
        value = Decimal(str(percent))
    except InvalidOperation:
        raise ValueError(f"rollout percentage {percent!r} is not a number") from None
    scaled = value * 100
    if not value.is_finite() or scaled != scaled.to_integral_value():
        raise ValueError(f"rollout percentage {percent!r} has more than two decimals")
    if not 0 <= value <= 100:
        raise ValueError(f"rollout percentage {percent!r} is outside 0..100")
    return int(scaled)


def percent_of(threshold: int) -> Decimal:
    """The percentage a threshold stands for (the inverse of :func:`threshold_for`)."""
    return Decimal(threshold) / 100


def in_rollout(flag: str, salt: str, targeting_key: str, percent: float | str | Decimal) -> bool:
    return bucket_of(flag, salt, targeting_key) < threshold_for(percent)
