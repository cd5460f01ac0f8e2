"""``snapmerge gc``: what crashed merges leave on S3, listed — and deleted only when asked.

A merge killed mid-upload leaves a version prefix with no complete manifest (its log entry is
still ``uploading``, or it has none); a merge killed before it cleared its marker leaves an
in-flight marker that has expired. Retention removes expired markers as it runs, and the newest
versions by count; it never looks at an orphan that is newer than the ones it keeps. ``gc`` does.

Never collected: the version the pointer names, a version an unexpired marker protects (a merge
in flight is based on it or is uploading it), a complete version (retention's business), and
anything younger than the grace period (its upload may still be running). Age is the log entry's
``created_at`` when there is one, else the time in the version id (``YYYYMMDD_HHMMSS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from snapmerge.commit_log import EntryState
from snapmerge.domain import VersionId
from snapmerge.snapshots import SnapshotStore

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class GcPlan:
    database: str
    orphans: tuple[VersionId, ...]
    expired_markers: tuple[str, ...]

    def describe(self, store: SnapshotStore, *, applied: bool) -> list[str]:
        verb = "deleted" if applied else "would delete"
        lines = [
            f"{verb} {store.version_prefix(v)} (orphan: no complete manifest)" for v in self.orphans
        ]
        lines += [f"{verb} {key} (expired in-flight marker)" for key in self.expired_markers]
        return lines or [f"{self.database}: nothing to collect"]


def plan(
    store: SnapshotStore, *, grace: timedelta = DEFAULT_GRACE, now: datetime | None = None
) -> GcPlan:
    """What ``apply`` would delete; reads only."""
    at = now or datetime.now(UTC)
    protected = store.inflight_versions(at)
    pointer = store.read_pointer()
    if pointer is not None:
        protected.add(pointer.version)
    orphans = []
    for version in store.list_versions():
        if version in protected or store.is_complete(version):
            continue
        started = _started(store, version)
        if started is not None and at - started >= grace:
            orphans.append(version)
    return GcPlan(store.db.value, tuple(orphans), tuple(store.expired_markers(at)))


def apply(store: SnapshotStore, gc_plan: GcPlan) -> None:
    """Delete what ``gc_plan`` lists (each orphan's log entry is marked discarded first)."""
    for version in gc_plan.orphans:
        store.delete_version(version, EntryState.DISCARDED)
    if gc_plan.expired_markers:
        store.blobs.delete(list(gc_plan.expired_markers))


def _started(store: SnapshotStore, version: VersionId) -> datetime | None:
    entry = store.log.entry(version)
    text = entry.created_at if entry is not None else None
    try:
        if text:
            when = datetime.fromisoformat(text)
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        return datetime.strptime(version[:15], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None  # an age we cannot tell: never collected
