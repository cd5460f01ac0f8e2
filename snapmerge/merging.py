"""The building blocks both final-merge paths share (DESIGN §2).

Legacy and two-phase differ only in *when* they hold the lock around these steps:

    replay? ─► fetch intermediates (+ inputs digest) ─► base (pointer, latest/ or error)
            ─► already published from this base? (claims + log) ─► build (base + chunks)
            ─► upload (claim the id, files, hash, complete; claim the batch)
            ─► publish (the CAS) ─► finish (receipt, exact clean-up, retention)

Any failure after an upload has begun discards the orphan; a failure of that discard is logged and
never replaces the error that caused it (a lost CAS must still be rebased).

Each step is a method of :class:`MergeKit`; none of them takes or releases a lock. The paths own
the locking, so the difference between them is visible in a few lines each.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

from snapmerge.after_publish import AfterPublish
from snapmerge.backoff import phase_backoff
from snapmerge.bases import check_base, resolve_base
from snapmerge.built import BuiltVersion
from snapmerge.cache import SnapshotCache
from snapmerge.commit_log import lineage
from snapmerge.config import Settings
from snapmerge.deltas import fetch_delta
from snapmerge.domain import (
    LATEST_DIRECT,
    Database,
    FinalMergeRequest,
    MergePath,
    Pointer,
    VersionId,
    lock_id_for,
    new_version_id,
)
from snapmerge.errors import (
    MergeInputError,
    VersionTakenError,
)
from snapmerge.exactly_once import (
    ExactlyOnceSteps,
)
from snapmerge.lock import Lease, LeaseLock
from snapmerge.manifest import EntryState
from snapmerge.ports import BlobStore, IndexEngine, LeaseTable
from snapmerge.snapshots import SKIP, SnapshotStore, VersionManifest, scan_files

log = logging.getLogger(__name__)

# How many fresh ids an upload tries when the one it drew is already claimed.
VERSION_ID_TRIES = 3

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


class MergeKit(ExactlyOnceSteps, AfterPublish):
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
        verify_margin: timedelta | None = None,
        span: Span | None = None,
    ) -> None:
        self.blobs = blobs
        self.hooks = hooks
        self.span: Span = span or _no_span
        # what ``publish`` demands of the lease right before the pointer write
        self.verify_margin = settings.verify_margin if verify_margin is None else verify_margin
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

    def acquire(self, request: FinalMergeRequest, *, duration: timedelta | None = None) -> Lease:
        """The collection lock; ``duration`` overrides the lease (the two-phase short phases)."""
        return self.lock.acquire(
            self.lock_id(request),
            request.collection,
            wait=self.settings.lock_wait_timeout,
            duration=duration,
            backoff=None if duration is None else phase_backoff(self.lock.backoff),
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

    # -- the base (snapmerge/bases.py) ---------------------------------------------------------
    def resolve_base(self, db: Database) -> Pointer | None:
        return resolve_base(self.store(db), rebuild_from_newest=self.settings.rebuild_from_newest)

    def check_base(self, db: Database, base: Pointer | None) -> VersionManifest | None:
        return check_base(self.store(db), base)

    def _base_copy(self, db: Database, base: Pointer | None, target: Path) -> None:
        if base is None:
            target.mkdir(parents=True)
        elif base.version == LATEST_DIRECT:
            self.store(db).read_legacy_latest(target)
        else:
            self.cache(db).working_copy(base.version, target)
        for name in SKIP:  # a copied manifest or hash describes another version
            (target / name).unlink(missing_ok=True)

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

    def build(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        sources: list[Path],
        path: MergePath,
        dest: Path,
        *,
        digest: bool = True,
        inputs: str = "",
    ) -> BuiltVersion:
        """Merge ``sources`` into a copy of ``base`` at ``dest``; nothing is uploaded.

        ``digest`` reads the whole result once more to hash its content (what a shadow
        comparison and a replay report): an O(snapshot) pass that legacy skips under its lock
        unless it is being shadowed, so its lock hold stays the original's.
        """
        db = request.database
        target = dest / "target"
        base_manifest = self.check_base(db, base)
        self._base_copy(db, base, target)
        dimension = (base_manifest.dimension or None) if base_manifest else None
        stats = self.engine.merge(target, sources, collection=db.value, dimension=dimension)
        height, root = lineage(base.version if base else None, base_manifest)
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
            height=height,
            root=root,
            inputs_digest=inputs,
            format=stats.format_after or "",
            format_upgraded_from=(stats.format_before or "") if stats.format_upgraded else "",
        )
        self.hook("after_build")
        return BuiltVersion(version, target, manifest, stats, base, base_manifest)

    @contextmanager
    def pin_base(self, db: Database, base: Pointer | None) -> Iterator[None]:
        """Mark ``base`` as in use so retention spares it while this merge is in flight."""
        if base is None or base.version == LATEST_DIRECT:
            yield
            return
        store, owner = self.store(db), uuid.uuid4().hex
        store.mark_inflight(base.version, owner, self.settings.lock_duration)
        try:
            yield
        finally:
            store.clear_inflight(base.version, owner)

    def upload(
        self,
        db: Database,
        built: BuiltVersion,
        on_claimed: Callable[[VersionId], None] | None = None,
        *,
        listing: str = "",
    ) -> BuiltVersion:
        """Claim a version id, upload, then claim the batch; return what was uploaded.

        An id someone else already claimed is redrawn (nothing was written into its prefix).
        Any other failure discards what we wrote, then raises. ``on_claimed``: see
        ``SnapshotStore.upload_version``. ``listing``: the batch's, recorded in its claim when
        it was enqueued by listing (ADR 0013).
        """
        store = self.store(db)
        for attempt in range(VERSION_ID_TRIES):
            # Retention must not take a version that is still being uploaded and not published.
            store.mark_inflight(built.version, built.version, self.settings.lock_duration)
            try:
                store.upload_version(built.version, built.directory, built.manifest, on_claimed)
                store.log.write_claim(
                    built.manifest.batch_id, built.version, built.manifest.inputs_digest, listing
                )
                break
            except VersionTakenError:
                store.clear_inflight(built.version, built.version)
                if attempt + 1 == VERSION_ID_TRIES:
                    raise
                built = built.renamed(new_version_id())
            except BaseException:
                self.discard(db, built)
                raise
        self.hook("after_upload")
        return built

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer:
        """The fenced CAS: confirm our lease, then write the pointer if it still names our base."""
        self.hook("before_swap")
        if lease is not None:
            lease.verify(self.verify_margin, trust_recent=TRUST_RECENT_GRANT)
        pointer = self.store(db).write_pointer(built.version, built.base)
        self.hook("after_swap")
        return pointer

    def discard(self, db: Database, built: BuiltVersion) -> None:
        """Remove an upload that lost its publish (an orphan), if it is not on the chain.

        After an ambiguous failure (a reply lost past the SDK's retries) our write may have landed,
        and others may have published on top; the pointer's chain is walked first, so a published
        version is never deleted. Never raises: its failure is logged (``snapmerge gc`` removes
        what is left) and the error that led here — perhaps a conflict to rebase — goes on.
        """
        store = self.store(db)
        try:
            current = store.read_pointer()
            if current is not None and store.log.is_ancestor(built.manifest, current.version) in (
                True,
                None,
            ):
                return
            store.delete_version(built.version, EntryState.DISCARDED)
            store.log.delete_claim(built.manifest.batch_id, built.version)
            store.clear_inflight(built.version, built.version)
        except Exception:
            log.warning("could not discard orphan version %s", built.version, exc_info=True)
