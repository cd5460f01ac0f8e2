"""``snapmerge gc``: what crashed merges leave on S3, listed — and deleted only when asked.

What it collects (each only once older than the grace period, default 24 h, far longer than
any merge or its retries, and never what an unexpired in-flight marker protects):

- **orphan versions**: a prefix with no complete manifest (a merge killed mid-upload);
- **expired in-flight markers** (a merge killed before it cleared its marker);
- **empty log entries**: ``uploading`` with no file in the prefix (a merge killed between
  claiming its version id and writing its first file); each is discarded first, conditionally
  on the ETag read, so an upload that moves it on meanwhile keeps it;
- **orphan claims**: a claim whose version is not on the published chain (the pointer's
  version and its base links) nor published by a mark: its version is discarded, or its run
  died before its CAS. Such a claim never answers a retry: a claim counts only when its version
  is a base or an ancestor of one, and every later base descends from the pointer;
- **consumed pending batches** (group commit): withdrawn ones, ones their publisher marked
  published (kept as the highest number, then passed), and pending ones whose batch
  has an old enough claim on the published chain with the same inputs digest. Never the highest
  number (numbers are never reused), never a pending batch not yet published: a builder or the
  batch's own execution will apply it, and its number fixes the order of shared writes;
- **change sets** of versions whose data is gone (retired, discarded, no entry: what every
  publish prunes too), and of complete versions off a published chain that is ours all the way
  down (an orphan's change set is on no rebaser's walk).

Never collected: the version the pointer names and its chain's claims, a complete version
(retention's business), anything younger than the grace period. With the pointer missing only
orphan versions, empty entries and expired markers are collected: nothing tells a published
claim from an orphan one. Age is a log entry's or a claim's ``created_at``, else the time in the
version id (``YYYYMMDD_HHMMSS``); an age we cannot tell is never old enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from snapmerge.change_sets import ChangeSets
from snapmerge.commit_log import Claim
from snapmerge.domain import VersionId
from snapmerge.errors import InvalidEventError, SnapshotError
from snapmerge.group_commit import PENDING, PUBLISHED, WITHDRAWN, PendingBatch, PendingQueue
from snapmerge.lineage import walk_chain
from snapmerge.manifest import EntryState, VersionManifest
from snapmerge.retention import entry_time
from snapmerge.snapshots import SnapshotStore

DEFAULT_GRACE = timedelta(hours=24)
# Below this, gc would race live merges: a claim, a change set or an upload of a run whose swap
# is still to come is protected only by its in-flight marker, which a slow run or a skewed clock
# outlives. (A claim gc deletes under a version that then lands lets the batch's retry apply it
# again.)
MIN_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class GcPlan:
    database: str
    orphans: tuple[VersionId, ...]
    expired_markers: tuple[str, ...]
    empty_entries: tuple[VersionId, ...] = ()
    orphan_claims: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    change_sets: tuple[VersionId, ...] = ()

    def describe(self, store: SnapshotStore, *, applied: bool) -> list[str]:
        verb = "deleted" if applied else "would delete"
        lines = [
            f"{verb} {store.version_prefix(v)} (orphan: no complete manifest)" for v in self.orphans
        ]
        lines += [f"{verb} {key} (expired in-flight marker)" for key in self.expired_markers]
        lines += [f"{verb} log entry {v} (uploading, no data)" for v in self.empty_entries]
        lines += [f"{verb} {key} (claim off the published chain)" for key in self.orphan_claims]
        lines += [f"{verb} {key} (pending batch published or withdrawn)" for key in self.pending]
        changes = ChangeSets(store.blobs, store.db)
        lines += [f"{verb} {changes.data_prefix(v)} (change set)" for v in self.change_sets]
        return lines or [f"{self.database}: nothing to collect"]


@dataclass
class _View:
    """What the plan reads once: protection, the published chain, the log entries."""

    store: SnapshotStore
    at: datetime
    grace: timedelta
    protected: set[VersionId]
    chain: frozenset[VersionId] = frozenset()
    chain_complete: bool = False
    pointer: bool = False
    entries: dict[VersionId, VersionManifest | None] = field(default_factory=dict)

    def entry(self, version: VersionId) -> VersionManifest | None:
        if version not in self.entries:
            try:
                self.entries[version] = self.store.log.entry(version)
            except SnapshotError:  # an unreadable entry: treated as present, never collected
                self.entries[version] = None
                self.protected.add(version)
        return self.entries[version]

    def old(self, text: str | None, version: VersionId | None = None) -> bool:
        started = entry_time(text, version)  # None (an age we cannot tell): never collected
        return started is not None and self.at - started >= self.grace


def plan(
    store: SnapshotStore, *, grace: timedelta = DEFAULT_GRACE, now: datetime | None = None
) -> GcPlan:
    """What ``apply`` would delete; reads only. A grace below :data:`MIN_GRACE` is refused."""
    if grace < MIN_GRACE:
        raise InvalidEventError(
            f"gc grace {grace.total_seconds() / 3600:g} h is below the minimum"
            f" {MIN_GRACE.total_seconds() / 3600:g} h: it would collect claims and uploads of"
            " merges still running"
        )
    view = _View(store, now or datetime.now(UTC), grace, store.inflight_versions(now))
    pointer = store.read_pointer()
    if pointer is not None:
        view.protected.add(pointer.version)
        chain = walk_chain(store.log, pointer.version)
        view.chain, view.chain_complete, view.pointer = chain.members, chain.complete, True
        view.chain |= frozenset(store.log.published_marks())
    orphans = []
    for version in store.list_versions():
        if version in view.protected or store.is_complete(version):
            continue
        entry = view.entry(version)
        if view.old(entry.created_at if entry else None, version):
            orphans.append(version)
    claims = store.log.all_claims() if view.pointer else []
    return GcPlan(
        store.db.value,
        tuple(orphans),
        tuple(store.expired_markers(view.at)),
        tuple(_empty_entries(view)),
        tuple(_orphan_claims(view, claims)),
        tuple(_consumed_pending(view, claims)),
        tuple(_dead_change_sets(view)),
    )


def _empty_entries(view: _View) -> list[VersionId]:
    found = []
    for version in view.store.log.versions():
        entry = view.entry(version)
        if entry is None or entry.state != EntryState.UPLOADING or version in view.protected:
            continue
        if view.old(entry.created_at, version) and not view.store.blobs.list(
            view.store.version_prefix(version)
        ):
            found.append(version)
    return found


def _orphan_claims(view: _View, claims: list[tuple[str, Claim | None, str]]) -> list[str]:
    found = []
    for key, claim, created in claims:
        if claim is None or claim.version in view.protected or claim.version in view.chain:
            continue  # unreadable (a retry would refuse it: left for the operator), or needed
        if not view.old(created):
            continue
        entry = view.entry(claim.version)
        if claim.version in view.protected:
            continue
        if entry is None or entry.state == EntryState.DISCARDED or view.chain_complete:
            found.append(key)
    return found


def _consumed_pending(view: _View, claims: list[tuple[str, Claim | None, str]]) -> list[str]:
    if not view.pointer:
        return []
    try:
        batches, highest = PendingQueue(view.store.blobs, view.store.db).listing()
    except SnapshotError:
        return []  # an unreadable pending object: builders refuse it too; left for the operator
    published = [
        c
        for _, c, created in claims
        if c is not None and c.version in view.chain and view.old(created)
    ]
    return [b.key for b in batches if b.seq != highest and _consumed(b, published)]


def _consumed(batch: PendingBatch, published: list[Claim]) -> bool:
    """Withdrawn, marked published, or pending with inputs a claim on the chain names (the same
    digest, or for a batch enqueued by listing, the same listing)."""
    if batch.state in (WITHDRAWN, PUBLISHED):  # PUBLISHED: marked by the batch's publisher
        return True
    return batch.state == PENDING and any(
        c.batch_id == batch.batch_id and batch.same_inputs(c.inputs_digest, c.listing)
        for c in published
    )


def _dead_change_sets(view: _View) -> list[VersionId]:
    changes = ChangeSets(view.store.blobs, view.store.db)
    names = {
        VersionId(key[len(changes.prefix) :].split("/", 1)[0].removesuffix(".json"))
        for key in view.store.blobs.list(changes.prefix)
    }
    found = []
    for version in sorted(names):
        if not version or version in view.protected:
            continue
        entry = view.entry(version)
        if version in view.protected:
            continue
        if entry is None:
            dead = view.old(None, version)  # a change set whose entry is gone (or never was)
        elif entry.state in (EntryState.RETIRED, EntryState.DISCARDED):
            dead = True  # its data is gone: every publish prunes these too
        else:
            dead = (
                entry.state == EntryState.COMPLETE
                and view.pointer
                and view.chain_complete
                and version not in view.chain
                and view.old(entry.created_at, version)
            )
        if dead:
            found.append(version)
    return found


def apply(store: SnapshotStore, gc_plan: GcPlan) -> None:
    """Delete what ``gc_plan`` lists (each orphan's log entry is marked discarded first)."""
    for version in gc_plan.orphans:
        store.delete_version(version, EntryState.DISCARDED)
    if gc_plan.expired_markers:
        store.blobs.delete(list(gc_plan.expired_markers))
    for version in gc_plan.empty_entries:
        found = store.log.read(version)
        if found is None or found[0].state != EntryState.UPLOADING:
            continue  # moved on since the plan: no longer ours to collect
        try:
            store.log.advance(found[0], found[1], EntryState.DISCARDED)
        except SnapshotError:
            continue  # an upload moved it on meanwhile
        store.log.delete_entry(version)
    for keys in (gc_plan.orphan_claims, gc_plan.pending):
        if keys:
            store.blobs.delete(list(keys))
    changes = ChangeSets(store.blobs, store.db)
    for version in gc_plan.change_sets:
        changes.delete(version)
