"""Final merges of both paths on the embedded server with real ChromaDB, for adversarial cases.

A :class:`Rig` holds one bucket and lock table; ``merger(path)`` gives a fresh merger of either
path (its own MergeKit, optionally with hooks or a lock that runs something while it waits), so
a test can line up a crash, a duplicate or a rival writer deterministically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys, Pointer, Record, VersionId
from snapmerge.lock import Lease, LeaseLock
from snapmerge.merging import Hook, MergeKit
from snapmerge.ports import FinalMerger
from snapmerge.seeding import seed_snapshot, upload_delta
from snapmerge.snapshot_hash import hash_files
from snapmerge.snapshots import SnapshotStore
from snapmerge.transfer import download_prefix, local_files, upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
DIM = 8
PATHS = ("legacy", "two_phase")
NESTED: dict[str, Any] = {"group_wait": timedelta(seconds=1)}
"""Settings of a run started from inside another run (its hook, its lock wait). The outer run
holds the group-commit builder marker and its heartbeat thread keeps beating, but it cannot go
on until the nested run returns: a wait-for cycle that two real executions never form (a builder
waits only for the lock, which no waiter holds). Nothing is published meanwhile, so only the
bound on waiting (``group_wait``, 120 s by default) ends it: keep that bound short here."""


class Crash(Exception):
    """A worker dying at a named step (raised from a hook)."""


def crash_at(step: str) -> Hook:
    def hook(name: str) -> None:
        if name == step:
            raise Crash(step)

    return hook


class WaitingLock(LeaseLock):
    """A lease lock whose first acquire first runs ``meanwhile``: what others do while we wait."""

    def __init__(self, base: LeaseLock, meanwhile: Callable[[], None]) -> None:
        super().__init__(
            base.table, duration=base.duration, heartbeat_interval=base.heartbeat_interval
        )
        self._meanwhile: Callable[[], None] | None = meanwhile

    def acquire(self, *args: Any, **kwargs: Any) -> Lease:
        action, self._meanwhile = self._meanwhile, None
        if action is not None:
            action()
        return super().acquire(*args, **kwargs)


@dataclass
class Rig:
    blobs: S3BlobStore
    engine: ChromaIndex
    table: DynamoLeaseTable
    root: Path
    settings: Settings

    @property
    def store(self) -> SnapshotStore:
        return SnapshotStore(self.blobs, DB)

    def kit(self, hooks: Hook | None = None, **changes: Any) -> MergeKit:
        settings = replace(self.settings, **changes)
        return MergeKit(self.blobs, self.engine, self.table, settings, hooks=hooks)

    def merger(
        self,
        path: str,
        hooks: Hook | None = None,
        *,
        meanwhile: Callable[[], None] | None = None,
        **changes: Any,
    ) -> FinalMerger:
        kit = self.kit(hooks, **changes)
        if meanwhile is not None:
            kit.lock = WaitingLock(kit.lock, meanwhile)
        if path == "legacy":
            return LegacyFinalMerge(kit)
        return TwoPhaseFinalMerge(
            kit, fallback=merge_under_lease, backoff_base_s=0.0, backoff_cap_s=0.0
        )

    def seed(self, rows: list[Record]) -> Pointer:
        return seed_snapshot(self.blobs, self.engine, DB, rows, workdir=self.root)

    def batch(self, batch_id: str, chunks: list[list[Record]]) -> FinalMergeRequest:
        """Write each chunk as the workflow's intermediate ``intermediate/{batch}/chunk-{i}/``."""
        keys = []
        for i, rows in enumerate(chunks):
            local = self.root / "chunks" / f"{len(list(self.root.glob('chunks/*')))}"
            synth.write_index(self.engine, local, rows, f"receipt_{DB.value}")
            prefix = Keys.intermediate_prefix(batch_id, i)
            self.blobs.delete(self.blobs.list(prefix))
            upload_directory(self.blobs, local, prefix)
            keys.append(prefix)
        return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=tuple(keys))

    def deltas(self, batch_id: str, writes: list[list[Record]]) -> FinalMergeRequest:
        """A single-chunk fast-path request: the deltas themselves are the intermediates."""
        keys = tuple(
            upload_delta(self.blobs, self.engine, DB, f"{batch_id}-{i}", w, workdir=self.root)
            for i, w in enumerate(writes)
        )
        return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=keys)

    def download(self, prefix: str) -> Path:
        dest = self.root / "downloads" / f"{len(list(self.root.glob('downloads/*')))}"
        download_prefix(self.blobs, prefix, dest)
        return dest

    def records_at(self, prefix: str) -> dict[str, Record]:
        path = self.download(prefix)
        (path / ".snapshot_hash").unlink(missing_ok=True)
        return {r.id: r for page in self.engine.read_records(path) for r in page}

    def snapshot(self) -> dict[str, Record]:
        """What a reader sees: the pointer's version, downloaded afresh."""
        pointer = self.store.read_pointer()
        assert pointer is not None
        return self.records_at(Keys.version_prefix(DB, pointer.version))

    def original_publish(self, rows: list[Record], *, hash_file: bool = True) -> VersionId:
        """What the original writer does: download the pointer's version whole, add ``rows``,
        upload every file it has (but its hash file, which it writes anew) to a new
        ``YYYYMMDD_HHMMSS`` prefix, and write the pointer without a condition."""
        pointer = self.store.read_pointer()
        assert pointer is not None
        work = self.download(Keys.version_prefix(DB, pointer.version))
        delta = self.root / "original-delta"
        shutil.rmtree(delta, ignore_errors=True)
        synth.write_index(self.engine, delta, rows, DB.value)
        self.engine.merge(work, [delta], collection=DB.value)
        version = VersionId(datetime.now(UTC).strftime("%Y%m%d_%H%M%S"))
        prefix = Keys.version_prefix(DB, version)
        for rel, path in local_files(work, {".snapshot_hash"}):
            self.blobs.upload_file(prefix + rel, path)
        if hash_file:
            body = hash_files(local_files(work)).to_json()
            self.blobs.put(prefix + ".snapshot_hash", body.encode())
        self.blobs.put(Keys.pointer(DB), version.encode())
        return version

    def receipt(self, batch_id: str) -> dict[str, Any] | None:
        blob = self.blobs.get(Keys.receipt(DB, batch_id))
        return None if blob is None else dict(json.loads(blob.body))


def make_rig(bucket: str, table: str, root: Path) -> Rig:
    settings = Settings(
        bucket=bucket,
        table=table,
        chroma_root=root / "chroma",
        lock_wait_timeout=timedelta(seconds=20),
        keep_versions=4,
    )
    return Rig(S3BlobStore(bucket), ChromaIndex(), DynamoLeaseTable(table), root, settings)


def rows(seed: int, n: int, start: int = 0) -> list[Record]:
    return synth.records(seed, n, DIM, start=start)
