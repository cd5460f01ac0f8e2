"""Retention: which versions of a collection may be deleted, and deleting them.

The newest ``keep`` versions stay, and so does every version something may still need: the one
the pointer names, any version with an unexpired in-flight marker (``snapmerge/inflight.py``),
an unconfirmed publish and its base (lineage marks), and a version of ours whose swap may still
come (:func:`_retirable`). :meth:`SnapshotStore.apply_retention
<snapmerge.snapshots.SnapshotStore.apply_retention>` runs it; ``snapmerge gc`` reads the same
grace.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from snapmerge.commit_log import published_key
from snapmerge.domain import Keys, Pointer, VersionId
from snapmerge.errors import SnapshotError
from snapmerge.manifest import EntryState

if TYPE_CHECKING:
    from snapmerge.snapshots import SnapshotStore

# Retention never takes a complete version of ours that is not below the pointer until it is this
# old (``snapmerge gc``'s default grace): its run may still swap the pointer to it.
UNPUBLISHED_GRACE = timedelta(hours=24)


def entry_time(text: str | None, version: VersionId | None = None) -> datetime | None:
    """A log entry's ``created_at``, else the time in its id (``YYYYMMDD_HHMMSS``); None when
    neither can be read (never old enough)."""
    try:
        if text:
            when = datetime.fromisoformat(text)
            return when if when.tzinfo else when.replace(tzinfo=UTC)
        if version is not None:
            return datetime.strptime(version[:15], "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        pass
    return None


def apply_retention(store: SnapshotStore, keep: int = 4) -> list[VersionId]:
    """Delete all but the newest ``keep`` versions of ``store``; return the ids deleted.

    Nothing is deleted while the pointer is missing. Never deleted: the version the pointer
    names, any version with an unexpired
    in-flight marker, an unconfirmed publish and its base (lineage marks), and a version of
    ours that is not below the pointer on its chain unless it is older than
    :data:`UNPUBLISHED_GRACE` (an upload whose swap may still come: its run's marker can
    expire first, for a slow run or a skewed clock, and its swap would then name a deleted
    version). Protection is read before the listing, so a version created after we looked
    is not in the listing at all. Expired markers are removed as garbage.
    """
    now = datetime.now(UTC)
    markers = store._markers()
    protected = {version for _, version, expires in markers if expires > now}
    pointer = store.read_pointer()
    if pointer is None:
        # Deleted by hand (or never written): the top of the published chain is what a
        # rebuild starts from, and nothing here says which version that is. Take nothing.
        return []
    protected.add(pointer.version)
    protected |= _lineage_pending(store)
    versions = store.list_versions()
    doomed = [
        v
        for v in versions[: max(0, len(versions) - keep)]
        if v not in protected and _retirable(store, v, pointer, now)
    ]
    for version in doomed:
        store.delete_version(version)
    expired = [key for key, _, expires in markers if expires <= now]
    if expired:
        store.blobs.delete(expired)
    return doomed


def _retirable(store: SnapshotStore, version: VersionId, pointer: Pointer, now: datetime) -> bool:
    """May retention take ``version``? An original-format version (no entry), an entry
    whose data is already retired or discarded, one with a published mark (its swap
    happened; no CAS can name it again: every CAS expects the pointer's ETag), one older
    than the grace, or one below the pointer on its chain (a publish that died before its
    mark). Anything else may be an upload whose swap is still to come. Cheapest first: the
    walk runs only for young unmarked versions (uploads of killed runs, mostly)."""
    try:
        entry = store.log.entry(version)
    except SnapshotError:
        return False  # an unreadable entry: left for the operator (gc protects it too)
    if entry is None or entry.state in (EntryState.RETIRED, EntryState.DISCARDED):
        return True
    if store.blobs.get(published_key(store.db, version)) is not None:
        return True
    started = entry_time(entry.created_at) or entry_time(None, version)
    if started is not None and now - started >= UNPUBLISHED_GRACE:
        return True
    return store.log.is_ancestor(entry, pointer.version) is True


def _lineage_pending(store: SnapshotStore) -> set[VersionId]:
    """Publishes whose lineage is unconfirmed, and their bases (``snapmerge/lineage.py``):
    a repair needs both."""
    keep: set[VersionId] = set()
    for key in store.blobs.list(Keys.lineage_pending_prefix(store.db)):
        blob = store.blobs.get(key)
        try:
            raw = json.loads(blob.body) if blob is not None else {}
            keep.update(VersionId(str(raw[k])) for k in ("version", "base_version") if raw.get(k))
        except (ValueError, TypeError):
            continue  # an unreadable mark protects nothing
    return keep
