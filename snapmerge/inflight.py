"""In-flight markers: a run's claim on a version that retention must spare.

A merge marks its base (and a publish the version it is uploading) under
``{db}/snapshot/inflight/{version}/{owner}.json`` with an expiry; retention keeps every version
with an unexpired marker and removes expired markers as garbage. A marker that cannot be read
protects nothing and counts as expired. :class:`~snapmerge.snapshots.SnapshotStore` carries
these methods.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from snapmerge.domain import Database, Keys, VersionId
from snapmerge.ports import BlobStore


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class InflightMarkers:
    """The in-flight markers of one database's snapshots in one bucket."""

    blobs: BlobStore
    db: Database

    def _marker_key(self, version: VersionId, owner: str) -> str:
        return f"{Keys.inflight_prefix(self.db)}{version}/{quote(owner, safe='')}.json"

    def mark_inflight(self, version: VersionId, owner: str, ttl: timedelta) -> None:
        """Protect ``version`` from retention until ``ttl`` from now (call again to extend)."""
        expires = (datetime.now(UTC) + ttl).isoformat()
        body = json.dumps({"version": version, "owner": owner, "expires": expires})
        self.blobs.put(self._marker_key(version, owner), body.encode())

    def clear_inflight(self, version: VersionId, owner: str) -> None:
        self.blobs.delete([self._marker_key(version, owner)])

    def _markers(self) -> list[tuple[str, VersionId, datetime]]:
        found = []
        for key in self.blobs.list(Keys.inflight_prefix(self.db)):
            blob = self.blobs.get(key)
            if blob is None:  # cleared since we listed
                continue
            try:
                raw = json.loads(blob.body)
                expires = datetime.fromisoformat(raw["expires"])
                version = VersionId(str(raw["version"]))
            except (ValueError, KeyError, TypeError):
                expires, version = datetime.min.replace(tzinfo=UTC), VersionId("")
            # an unreadable marker protects nothing and counts as expired (retention removes it)
            aware = expires if expires.tzinfo is not None else expires.replace(tzinfo=UTC)
            found.append((key, version, aware))
        return found

    def expired_markers(self, now: datetime | None = None) -> list[str]:
        at = _now(now)
        return [key for key, _, expires in self._markers() if expires <= at]

    def inflight_versions(self, now: datetime | None = None) -> set[VersionId]:
        """Versions with at least one unexpired marker."""
        at = _now(now)
        return {version for _, version, expires in self._markers() if expires > at}
