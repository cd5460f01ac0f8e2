"""Put synthetic snapshots and deltas on a bucket, in the original layout (tests, demo, bench)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from snapmerge import synth
from snapmerge.deltas import pack_directory
from snapmerge.domain import Database, Keys, Pointer, Record, new_version_id
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.snapshots import SnapshotStore, VersionManifest, scan_files
from snapmerge.transfer import upload_directory


class DeltaFormat(StrEnum):
    DIRECTORY = "dir"  # {db}/delta/{hex}/ : a raw PersistentClient directory
    TARBALL = "tar.gz"  # {db}/delta/{run_id}/delta.tar.gz


def seed_snapshot(
    blobs: BlobStore,
    engine: IndexEngine,
    db: Database,
    records: Sequence[Record],
    *,
    workdir: Path,
    collection: str | None = None,
) -> Pointer:
    """Write ``records`` as a new version and point the pointer at it (conditionally)."""
    store = SnapshotStore(blobs, db)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        target = Path(tmp) / "snapshot"
        synth.write_index(engine, target, records, collection or db.value)
        version = new_version_id()
        current = store.read_pointer()
        manifest = VersionManifest(
            version=version,
            base_version=current.version if current else None,
            batch_id="seed",
            record_count=engine.count(target),
            dimension=len(records[0].embedding) if records else 0,
            path="seed",
            files=scan_files(target),
            created_at=datetime.now(UTC).isoformat(),
            digest=engine.digest(target),
        )
        store.upload_version(version, target, manifest)
        pointer = store.write_pointer(version, current)
        store.log.mark_published(version)
        return pointer


def upload_delta(
    blobs: BlobStore,
    engine: IndexEngine,
    db: Database,
    name: str,
    records: Sequence[Record],
    *,
    workdir: Path,
    fmt: DeltaFormat = DeltaFormat.DIRECTORY,
    collection: str | None = None,
) -> str:
    """Write one delta and return the key a ``delta_results`` entry names."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        directory = Path(tmp) / "delta"
        synth.write_index(engine, directory, records, collection or f"receipt_{db.value}")
        prefix = Keys.delta_prefix(db, name)
        if fmt is DeltaFormat.DIRECTORY:
            upload_directory(blobs, directory, prefix)
            return prefix
        tarball = pack_directory(directory, Path(tmp) / "delta.tar.gz", gzip=True)
        key = f"{prefix}delta.tar.gz"
        blobs.upload_file(key, tarball)
        return key
