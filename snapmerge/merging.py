"""The building blocks both final-merge paths share (DESIGN §2).

Legacy and two-phase differ only in *when* they hold the lock around these steps:

    replay? ─► read pointer ─► fetch intermediates ─► build (base + chunks) ─► upload
            ─► publish (the CAS) ─► finish (receipt, cleanup, retention)

Each step is a method of :class:`MergeKit`; none of them takes or releases a lock. The paths own
the locking, so the difference between them is visible in a few lines each.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from snapmerge.cache import SnapshotCache
from snapmerge.config import Settings
from snapmerge.deltas import fetch_delta
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    FinalMergeResult,
    Keys,
    MergePath,
    MergeStats,
    Pointer,
    VersionId,
    lock_id_for,
    new_version_id,
)
from snapmerge.errors import MergeInputError, PointerConflictError, SnapshotError
from snapmerge.lock import Lease, LeaseLock
from snapmerge.ports import BlobStore, IndexEngine, LeaseTable
from snapmerge.snapshots import SnapshotStore, VersionManifest, scan_files

# How far back a retried batch looks along the published chain for its own publish.
REPLAY_DEPTH = 8

# A lease the table granted or renewed less than this long ago is not renewed again before the
# pointer write (see Lease.verify): the two-phase path's phase-3 lock is milliseconds old.
TRUST_RECENT_GRANT = timedelta(seconds=1)

Hook = Callable[[str], None]
Span = Callable[[str], AbstractContextManager[object]]
"""A named span around a phase (an X-Ray subsegment in the Lambda; nothing by default)."""


def _no_span(name: str) -> AbstractContextManager[object]:
    return nullcontext()


"""Called with a step name as a merge passes it (see :data:`HOOK_STEPS`); fault tests raise or
pause from it. Production passes none."""

HOOK_STEPS = (
    "after_fetch",
    "after_build",
    "after_upload",
    "before_swap",
    "after_swap",
    "after_receipt",
)

# What ``publish`` demands of the lease right before the pointer write (Lease.verify's default).
DEFAULT_VERIFY_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class BuiltVersion:
    """A merged snapshot on local disk, not yet published."""

    version: VersionId
    directory: Path
    manifest: VersionManifest
    stats: MergeStats
    base: Pointer | None
    base_manifest: VersionManifest | None = None  # as read when the build started


class MergeKit:
    """The adapters and settings a final merge needs, and the steps it is made of."""

    def __init__(
        self,
        blobs: BlobStore,
        engine: IndexEngine,
        leases: LeaseTable,
        settings: Settings,
        *,
        lock: LeaseLock | None = None,
        hooks: Hook | None = None,
        verify_margin: timedelta = DEFAULT_VERIFY_MARGIN,
        span: Span | None = None,
    ) -> None:
        self.blobs = blobs
        self.hooks = hooks
        self.span: Span = span or _no_span
        self.verify_margin = verify_margin
        self.engine = engine
        self.settings = settings
        self.lock = lock or LeaseLock(
            leases,
            duration=settings.lock_duration,
            heartbeat_interval=settings.heartbeat_interval,
            max_heartbeat_failures=settings.max_heartbeat_failures,
        )
        self._stores: dict[Database, SnapshotStore] = {}
        self._caches: dict[Database, SnapshotCache] = {}

    def hook(self, step: str) -> None:
        """Named point for fault injection (the concurrency harness's nemesis)."""
        if self.hooks is not None:
            self.hooks(step)

    # -- adapters per database -----------------------------------------------------------------
    def store(self, db: Database) -> SnapshotStore:
        if db not in self._stores:
            self._stores[db] = SnapshotStore(self.blobs, db)
        return self._stores[db]

    def cache(self, db: Database) -> SnapshotCache:
        if db not in self._caches:
            self._caches[db] = SnapshotCache(self.settings.chroma_root / "cache", self.store(db))
        return self._caches[db]

    def lock_id(self, request: FinalMergeRequest) -> str:
        return lock_id_for(request.collection, request.batch_id, self.settings.lock_scope)

    def acquire(self, request: FinalMergeRequest) -> Lease:
        return self.lock.acquire(
            self.lock_id(request), request.collection, wait=self.settings.lock_wait_timeout
        )

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        root = self.settings.chroma_root / "work"
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="merge-", dir=root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # -- idempotent retries --------------------------------------------------------------------
    def replay(self, request: FinalMergeRequest) -> FinalMergeResult | None:
        """The result of this batch's earlier publish, if it already published.

        Step Functions retries a final merge whose Lambda timed out after publishing; that retry
        must return the same result, not fail on deleted intermediates nor publish twice. The
        receipt answers when the first attempt got that far; otherwise the published chain (each
        manifest names the batch it consumed) does.
        """
        store = self.store(request.database)
        receipt = store.read_receipt(request.batch_id)
        if receipt is not None:
            return replace(result_from_json(receipt), replayed=True)
        pointer = store.read_pointer()
        version = pointer.version if pointer else None
        for _ in range(REPLAY_DEPTH):
            if version is None:
                return None
            manifest = store.manifest(version)
            if manifest is None:
                return None
            if manifest.batch_id == request.batch_id:
                return FinalMergeResult(
                    path=MergePath(manifest.path),
                    batch_id=request.batch_id,
                    database=request.database,
                    version=manifest.version,
                    base_version=manifest.base_version,
                    snapshot_key=Keys.version_prefix(request.database, manifest.version),
                    total_embeddings=manifest.record_count,
                    processing_time_seconds=0.0,
                    chunk_count=len(request.intermediate_keys),
                    delta_count=request.delta_count,
                    records_merged=0,
                    lock_wait_ms=0.0,
                    lock_hold_ms=0.0,
                    replayed=True,
                    digest=manifest.digest,
                )
            version = manifest.base_version
        return None

    # -- the steps -----------------------------------------------------------------------------
    def fetch_sources(self, request: FinalMergeRequest, dest: Path) -> list[Path]:
        """Download every intermediate, in chunk order (later wins)."""
        if not request.intermediate_keys:
            raise MergeInputError(f"batch {request.batch_id}: no intermediates to merge")
        paths = []
        for i, key in enumerate(request.intermediate_keys):
            target = dest / f"src-{i:04d}"
            paths.append(
                fetch_delta(self.blobs, key, target, max_bytes=self.settings.max_tarball_bytes)
            )
        self.hook("after_fetch")
        return paths

    def check_base(self, db: Database, base: Pointer | None) -> VersionManifest | None:
        """A pointer naming a missing or incomplete version is an error, never a base.

        Returns the base's manifest (None for the original pipeline's versions, which have
        none), read once: the caller needs its dimension too.
        """
        if base is None:
            return None
        store = self.store(db)
        manifest = store.manifest(base.version)
        if manifest is None and not store.is_complete(base.version):
            raise SnapshotError(
                f"{Keys.pointer(db)} names version {base.version}, which is missing or incomplete"
            )
        return manifest

    def build(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        sources: list[Path],
        path: MergePath,
        dest: Path,
        *,
        digest: bool = True,
    ) -> BuiltVersion:
        """Merge ``sources`` into a copy of ``base`` at ``dest``; nothing is uploaded.

        ``digest`` reads the whole result once more to hash its content (what a shadow
        comparison and a replay report): an O(snapshot) pass that legacy skips under its lock
        unless it is being shadowed, so its lock hold stays the original's.
        """
        db = request.database
        target = dest / "target"
        dimension = None
        base_manifest = self.check_base(db, base)
        if base is not None:
            self.cache(db).working_copy(base.version, target)
            dimension = (base_manifest.dimension or None) if base_manifest else None
        else:
            target.mkdir(parents=True)
        stats = self.engine.merge(target, sources, collection=db.value, dimension=dimension)
        version = new_version_id()
        manifest = VersionManifest(
            version=version,
            base_version=base.version if base else None,
            batch_id=request.batch_id,
            record_count=stats.final_count,
            dimension=stats.dimension,
            path=path.value,
            files=scan_files(target),
            created_at=datetime.now(UTC).isoformat(),
            digest=self.engine.digest(target) if digest else "",
        )
        self.hook("after_build")
        return BuiltVersion(version, target, manifest, stats, base, base_manifest)

    @contextmanager
    def pin_base(self, db: Database, base: Pointer | None) -> Iterator[None]:
        """Mark ``base`` as in use so retention spares it while this merge is in flight."""
        if base is None:
            yield
            return
        store, owner = self.store(db), uuid.uuid4().hex
        store.mark_inflight(base.version, owner, self.settings.lock_duration)
        try:
            yield
        finally:
            store.clear_inflight(base.version, owner)

    def upload(self, db: Database, built: BuiltVersion) -> None:
        store = self.store(db)
        # Retention must not take a version that is still being uploaded and not yet published.
        store.mark_inflight(built.version, built.version, self.settings.lock_duration)
        store.upload_version(built.version, built.directory, built.manifest)
        self.hook("after_upload")

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer:
        """The fenced CAS: confirm our lease, then write the pointer if it still names our base."""
        self.hook("before_swap")
        if lease is not None:
            lease.verify(self.verify_margin, trust_recent=TRUST_RECENT_GRANT)
        pointer = self.store(db).write_pointer(built.version, built.base)
        self.hook("after_swap")
        return pointer

    def merge_under_lease(
        self,
        request: FinalMergeRequest,
        lease: Lease,
        sources: list[Path],
        path: MergePath,
        work: Path,
        *,
        max_rebases: int,
        validate: Callable[[BuiltVersion], None] | None = None,
        digest: bool = True,
    ) -> tuple[BuiltVersion, int]:
        """Read, build, upload and publish while holding ``lease``; return (built, CAS losses).

        Every writer takes the same collection lock, so the CAS under it loses only to a writer
        outside the lock (a per-batch lock id, a holder racing its expiry). Never skip: each loss
        discards the orphan and rebases onto the new pointer, ``max_rebases`` times at most.
        """
        db = request.database
        failures = 0
        for attempt in range(max_rebases + 1):
            lease.check()
            base = self.store(db).read_pointer()
            with self.pin_base(db, base):
                built = self.build(
                    request, base, sources, path, work / f"locked-{attempt}", digest=digest
                )
                if validate is not None:
                    validate(built)
                lease.check()
                self.upload(db, built)
                try:
                    self.publish(db, built, lease)
                except PointerConflictError:
                    self.discard(db, built.version)
                    failures += 1
                    continue
                except BaseException:
                    self.discard(db, built.version)
                    raise
            return built, failures
        raise PointerConflictError(
            Keys.pointer(db), expected=None, current=f"moved on each of {failures} locked tries"
        )

    def discard(self, db: Database, version: VersionId) -> None:
        """Remove a version that lost its publish (an orphan) — never the one the pointer names.

        After an ambiguous failure (a reply lost past the SDK's retries) our write may have landed;
        re-reading the pointer first keeps us from deleting the published snapshot.
        """
        store = self.store(db)
        current = store.read_pointer()
        if current is not None and current.version == version:
            return
        store.delete_version(version)
        store.clear_inflight(version, version)

    def finish(
        self, request: FinalMergeRequest, result: FinalMergeResult, *, cleanup: bool
    ) -> None:
        """After a publish: receipt first, then intermediates, then retention."""
        store = self.store(request.database)
        store.write_receipt(request.batch_id, result.to_json())
        self.hook("after_receipt")
        store.clear_inflight(result.version, result.version)
        if cleanup:
            self.delete_intermediates(request)
        store.apply_retention(self.settings.keep_versions)

    def delete_intermediates(self, request: FinalMergeRequest) -> None:
        prefixes = (f"intermediate/{request.batch_id}/", f"intermediate/{request.batch_id}-group-")
        for prefix in prefixes:
            keys = self.blobs.list(prefix)
            if keys:
                self.blobs.delete(keys)


def result_from_json(data: dict[str, Any]) -> FinalMergeResult:
    fields = dict(data)
    fields["path"] = MergePath(fields["path"])
    fields["database"] = Database(fields["database"])
    fields["version"] = VersionId(fields["version"])
    return FinalMergeResult(**fields)


def make_result(
    request: FinalMergeRequest,
    built: BuiltVersion,
    path: MergePath,
    *,
    started: float,
    lease_stats: dict[str, Any],
) -> FinalMergeResult:
    """The common result shape; ``lease_stats`` holds the lock figures the path measured."""
    return FinalMergeResult(
        path=path,
        batch_id=request.batch_id,
        database=request.database,
        version=built.version,
        base_version=built.base.version if built.base else None,
        snapshot_key=Keys.version_prefix(request.database, built.version),
        total_embeddings=built.stats.final_count,
        processing_time_seconds=round(time.monotonic() - started, 3),
        chunk_count=len(request.intermediate_keys),
        delta_count=request.delta_count,
        records_merged=built.stats.records_merged,
        digest=built.manifest.digest,
        **lease_stats,
    )
