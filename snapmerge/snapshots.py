"""Versions, the pointer and receipts of one collection on S3 (in-flight markers:
``snapmerge/inflight.py``; retention: ``snapmerge/retention.py``).

The layout stays the original pipeline's (DESIGN §1): a version is an immutable directory under
``{db}/snapshot/timestamped/{version}/`` and ``{db}/snapshot/latest-pointer.txt`` names the
current one. What we add:

- a commit log beside the versions (``snapmerge/commit_log.py``): each version's manifest, whose
  ``complete`` state is written LAST, so "complete" means "every file is there";
- a ``.snapshot_hash`` in each version that describes that version (``snapmerge/snapshot_hash.py``);
- a pointer that is only ever written conditionally (a compare-and-swap on its ETag);
- in-flight markers, so retention spares the base of a merge in progress and a version still
  being uploaded;
- receipts, so a retried final merge answers with the publish it already made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from snapmerge.commit_log import CommitLog, lineage
from snapmerge.domain import LATEST_DIRECT, Database, Keys, Pointer, S3Key, VersionId
from snapmerge.errors import PointerConflictError, SnapshotError
from snapmerge.inflight import InflightMarkers
from snapmerge.manifest import EntryState, VersionManifest
from snapmerge.ports import BlobStore
from snapmerge.retention import apply_retention
from snapmerge.snapshot_hash import HASH_NAME, hash_files
from snapmerge.transfer import download_prefix, local_files, upload_directory

__all__ = [
    "MANIFEST_NAME",
    "SKIP",
    "SnapshotStore",
    "VersionManifest",
    "completed_entry",
    "scan_files",
]

MANIFEST_NAME = "_snapmerge_manifest.json"
"""Where manifests lived before the commit log (read only if bound to its own version)."""
CHROMA_MARKER = "chroma.sqlite3"
SKIP = frozenset({MANIFEST_NAME, HASH_NAME})
"""Never uploaded from, nor downloaded into, a working directory: each version gets its own."""
_ORIGINAL_ID = re.compile(r"^\d{8}_\d{6}$")


def scan_files(local_dir: Path) -> tuple[tuple[str, int], ...]:
    """The ``files`` of a manifest for ``local_dir`` (a stale manifest or hash file excluded)."""
    return tuple((rel, path.stat().st_size) for rel, path in local_files(local_dir, SKIP))


def completed_entry(key: str, body: bytes) -> VersionManifest | None:
    """The manifest a PUT of ``key`` marks complete, if it is one (for observers of writes)."""
    if "/snapshot/manifests/" not in key or not key.endswith(".json"):
        return None
    entry = VersionManifest.from_json(body)
    return entry if entry.complete else None


class SnapshotStore(InflightMarkers):
    """One database's snapshots in one bucket (its in-flight markers: :class:`InflightMarkers`)."""

    def __init__(self, blobs: BlobStore, db: Database, *, workers: int = 8) -> None:
        self.blobs = blobs
        self.db = db
        self.workers = workers
        self.log = CommitLog(blobs, db)

    # -- keys ----------------------------------------------------------------------------------
    @property
    def pointer_key(self) -> S3Key:
        return Keys.pointer(self.db)

    def version_prefix(self, version: VersionId) -> str:
        return Keys.version_prefix(self.db, version)

    # -- the pointer ---------------------------------------------------------------------------
    def read_pointer(self) -> Pointer | None:
        blob = self.blobs.get(self.pointer_key)
        if blob is None:
            return None
        try:
            version = blob.body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SnapshotError(f"pointer {self.pointer_key} is not UTF-8") from None
        if not version:
            raise SnapshotError(f"pointer {self.pointer_key} is empty")
        if "\x00" in version or "/" in version or any(c.isspace() for c in version):
            raise SnapshotError(f"pointer {self.pointer_key} holds no version id: {version!r}")
        return Pointer(VersionId(version), blob.etag)

    def write_pointer(self, version: VersionId, expected: Pointer | None) -> Pointer:
        """Compare-and-swap the pointer from ``expected`` to ``version``.

        Always conditional: ``If-Match`` on the ETag we read, or ``If-None-Match: *`` when no
        pointer object was behind the base (the first publish, ``latest/``). A refusal may be our
        own write whose reply was lost (the SDK retried it and the retry saw our new ETag), so
        re-read before calling it a loss.
        """
        try:
            if expected is None or not expected.exists:
                etag = self.blobs.put(self.pointer_key, version.encode(), if_none_match=True)
            else:
                etag = self.blobs.put(self.pointer_key, version.encode(), if_match=expected.etag)
        except PointerConflictError as exc:
            current = self.read_pointer()
            if current is not None and current.version == version:
                return current
            raise PointerConflictError(
                self.pointer_key,
                expected=expected.etag if expected and expected.exists else "*",
                current=current.version if current else None,
            ) from exc
        return Pointer(version, etag)

    # -- versions ------------------------------------------------------------------------------
    def upload_version(
        self,
        version: VersionId,
        local_dir: Path,
        manifest: VersionManifest,
        on_claimed: Callable[[VersionId], None] | None = None,
    ) -> None:
        """Claim the id in the log, upload the files and their hash, then mark it complete.

        The claim (``If-None-Match`` on the log entry) comes before any file, so a taken id is
        refused with nothing written into the prefix. A manifest with no ``files`` gets them
        from ``local_dir``; one that lists files must match it. ``on_claimed`` runs once the id
        is ours (what else is keyed by it may start then).
        """
        files = scan_files(local_dir)
        if manifest.version != version:
            raise SnapshotError(f"manifest names {manifest.version}, not {version}")
        if manifest.files and dict(manifest.files) != dict(files):
            raise SnapshotError(f"manifest of {version} does not match the files in {local_dir}")
        if manifest.height <= 0:
            manifest = self._with_lineage(manifest)
        manifest = replace(manifest, files=files)
        etag = self.log.begin(manifest)
        if on_claimed is not None:
            on_claimed(version)
        prefix = self.version_prefix(version)
        upload_directory(self.blobs, local_dir, prefix, self.workers, skip=SKIP)
        digest = hash_files(local_files(local_dir, SKIP))
        self.blobs.put(prefix + HASH_NAME, digest.to_json().encode())
        self.log.advance(manifest, etag, EntryState.COMPLETE)

    def _with_lineage(self, manifest: VersionManifest) -> VersionManifest:
        """Height and root from the base's entry (callers that read it already pass them)."""
        base = manifest.base_version
        height, root = lineage(base, self.manifest(base) if base is not None else None)
        return replace(manifest, height=height, root=root)

    def manifest(self, version: VersionId) -> VersionManifest | None:
        """The version's complete manifest: its log entry, or (written before the log existed) a
        manifest inside its prefix that names this very version. A manifest the original writer
        copied forward names another version and is ignored: that version is original-format.
        """
        entry = self.log.entry(version)
        if entry is not None:
            return entry if entry.complete else None
        blob = self.blobs.get(self.version_prefix(version) + MANIFEST_NAME)
        if blob is None:
            return None
        inside = VersionManifest.from_json(blob.body)
        return replace(inside, height=0, root=None) if inside.version == version else None

    def is_complete(self, version: VersionId) -> bool:
        """A complete manifest; or, for an original ``YYYYMMDD_HHMMSS`` id, a Chroma database."""
        if self.manifest(version) is not None:
            return True
        return self.original_complete(version)

    def original_complete(self, version: VersionId) -> bool:
        if not _ORIGINAL_ID.match(version) or self.log.entry(version) is not None:
            return False
        key = self.version_prefix(version) + CHROMA_MARKER
        return key in self.blobs.list(self.version_prefix(version))

    def download_version(self, version: VersionId, dest: Path) -> VersionManifest | None:
        """Download a complete version into ``dest`` and check it; None manifest for originals."""
        manifest = self.manifest(version)
        if manifest is None:
            keys = self.blobs.list(self.version_prefix(version))
            if not keys:
                raise SnapshotError(f"{self.db.value} version {version} is missing")
            if not self.original_complete(version):
                raise SnapshotError(
                    f"{self.db.value} version {version} is incomplete (no complete manifest)"
                )
        download_prefix(self.blobs, self.version_prefix(version), dest, self.workers, skip=SKIP)
        if manifest is not None:
            _verify(manifest, dest)
        elif not (dest / CHROMA_MARKER).is_file():
            raise SnapshotError(f"{self.db.value} version {version} has no {CHROMA_MARKER}")
        return manifest

    def list_versions(self) -> list[VersionId]:
        """Every version id with an object, oldest first (both id formats sort by time)."""
        prefix = Keys.versions_prefix(self.db)
        names = {key[len(prefix) :].split("/", 1)[0] for key in self.blobs.list(prefix)}
        return sorted(VersionId(name) for name in names if name)

    def delete_version(self, version: VersionId, state: EntryState = EntryState.RETIRED) -> None:
        """Mark the log entry first (a half-deleted version is never complete), then the data.

        The entry itself stays: the log is the chain's history and retention never shortens it.
        """
        self.log.set_state(version, state)
        prefix = self.version_prefix(version)
        self.blobs.delete([prefix + MANIFEST_NAME])
        self.blobs.delete(self.blobs.list(prefix))

    # -- retention -----------------------------------------------------------------------------
    def apply_retention(self, keep: int = 4) -> list[VersionId]:
        """Delete all but the newest ``keep`` versions, sparing what may still be needed
        (:func:`snapmerge.retention.apply_retention`); return the ids deleted."""
        return apply_retention(self, keep)

    # -- receipts ------------------------------------------------------------------------------
    def write_receipt(self, batch_id: str, payload: dict[str, Any]) -> None:
        """Record what ``batch_id``'s publish returned, once; an identical re-write is fine."""
        key = Keys.receipt(self.db, batch_id)
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        try:
            self.blobs.put(key, body, if_none_match=True)
        except PointerConflictError as exc:
            existing = self.read_receipt(batch_id)
            if existing != json.loads(body):
                raise SnapshotError(f"batch {batch_id} already has a different receipt") from exc

    def read_receipt(self, batch_id: str) -> dict[str, Any] | None:
        blob = self.blobs.get(Keys.receipt(self.db, batch_id))
        if blob is None:
            return None
        try:
            payload = json.loads(blob.body)
        except ValueError as exc:
            raise SnapshotError(f"receipt of batch {batch_id} is unreadable") from exc
        if not isinstance(payload, dict):
            raise SnapshotError(f"receipt of batch {batch_id} is not an object")
        return payload

    # -- the original fallback layout ----------------------------------------------------------
    def has_legacy_latest(self) -> bool:
        prefix = Keys.legacy_latest_prefix(self.db)
        return prefix + CHROMA_MARKER in self.blobs.list(prefix)

    def legacy_latest_base(self) -> Pointer | None:
        """``latest/`` as a base with no pointer behind it (the original reader's fallback)."""
        return Pointer(LATEST_DIRECT, "", exists=False) if self.has_legacy_latest() else None

    def read_legacy_latest(self, dest: Path) -> Path | None:
        """Download ``{db}/snapshot/latest/`` (read-only fallback); None if it does not exist."""
        prefix = Keys.legacy_latest_prefix(self.db)
        if not self.blobs.list(prefix):
            return None
        download_prefix(self.blobs, prefix, dest, self.workers, skip=SKIP)
        if not (dest / CHROMA_MARKER).is_file():
            raise SnapshotError(f"{prefix} has no {CHROMA_MARKER}")
        return dest


def _verify(manifest: VersionManifest, dest: Path) -> None:
    """Sizes as the manifest says; a hash file listed by a pre-log manifest is not downloaded."""
    for rel, size in manifest.files:
        if rel in SKIP:
            continue
        path = dest / rel
        if not path.is_file():
            raise SnapshotError(f"version {manifest.version}: {rel} is missing after download")
        if path.stat().st_size != size:
            raise SnapshotError(
                f"version {manifest.version}: {rel} has {path.stat().st_size} bytes,"
                f" the manifest says {size}"
            )
