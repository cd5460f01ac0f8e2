"""A settable UTC wall clock for lease tests (the lock tables take ``clock=``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Wall:
    """Starts at ``start`` (default off a whole second, so microseconds are exercised)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
