"""Versions, the pointer, in-flight markers, retention and receipts of one collection on S3.

The layout stays the original pipeline's (DESIGN §1): a version is an immutable directory under
``{db}/snapshot/timestamped/{version}/`` and ``{db}/snapshot/latest-pointer.txt`` names the
current one. What we add:

- a manifest object written LAST, so "the manifest exists" means "every file is there";
- a pointer that is only ever written conditionally (a compare-and-swap on its ETag);
- in-flight markers, so retention spares the base of a merge in progress and a version still
  being uploaded;
- receipts, so a retried final merge answers with the publish it already made.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from snapmerge.domain import Database, Keys, Pointer, S3Key, VersionId
from snapmerge.errors import PointerConflictError, SnapshotError
from snapmerge.ports import BlobStore
from snapmerge.transfer import download_prefix, local_files, upload_directory

MANIFEST_NAME = "_snapmerge_manifest.json"
CHROMA_MARKER = "chroma.sqlite3"
_ORIGINAL_ID = re.compile(r"^\d{8}_\d{6}$")


@dataclass(frozen=True)
class VersionManifest:
    """What a version holds and how it was made; its presence marks the version complete."""

    version: VersionId
    base_version: VersionId | None
    batch_id: str
    record_count: int
    dimension: int
    path: str  # the merge path that wrote it: "legacy" or "two_phase"
    files: tuple[tuple[str, int], ...]
    created_at: str
    digest: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> VersionManifest:
        try:
            raw: dict[str, Any] = json.loads(text)
            return cls(
                version=VersionId(str(raw["version"])),
                base_version=VersionId(raw["base_version"]) if raw.get("base_version") else None,
                batch_id=str(raw["batch_id"]),
                record_count=int(raw["record_count"]),
                dimension=int(raw["dimension"]),
                path=str(raw["path"]),
                files=tuple((str(rel), int(size)) for rel, size in raw["files"]),
                created_at=str(raw["created_at"]),
                digest=str(raw.get("digest", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"unreadable version manifest: {exc}") from exc


def scan_files(local_dir: Path) -> tuple[tuple[str, int], ...]:
    """The ``files`` of a manifest for ``local_dir`` (the manifest itself excluded)."""
    skip = {MANIFEST_NAME}
    return tuple((rel, path.stat().st_size) for rel, path in local_files(local_dir, skip))


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


class SnapshotStore:
    """One database's snapshots in one bucket."""

    def __init__(self, blobs: BlobStore, db: Database, *, workers: int = 8) -> None:
        self.blobs = blobs
        self.db = db
        self.workers = workers

    # -- keys ----------------------------------------------------------------------------------
    @property
    def pointer_key(self) -> S3Key:
        return Keys.pointer(self.db)

    def version_prefix(self, version: VersionId) -> str:
        return Keys.version_prefix(self.db, version)

    def snapshot_key(self, version: VersionId) -> str:
        """The ``snapshot_key`` a final merge reports: the version's prefix."""
        return self.version_prefix(version)

    # -- the pointer ---------------------------------------------------------------------------
    def read_pointer(self) -> Pointer | None:
        blob = self.blobs.get(self.pointer_key)
        if blob is None:
            return None
        version = blob.body.decode("utf-8", errors="replace").strip()
        if not version:
            raise SnapshotError(f"pointer {self.pointer_key} is empty")
        return Pointer(VersionId(version), blob.etag)

    def write_pointer(self, version: VersionId, expected: Pointer | None) -> Pointer:
        """Compare-and-swap the pointer from ``expected`` to ``version``.

        Always conditional: ``If-Match`` on the ETag we read, or ``If-None-Match: *`` for the first
        publish. A refusal may be our own write whose reply was lost (the SDK retried it and the
        retry saw our new ETag), so re-read before calling it a loss.
        """
        try:
            if expected is None:
                etag = self.blobs.put(self.pointer_key, version.encode(), if_none_match=True)
            else:
                etag = self.blobs.put(self.pointer_key, version.encode(), if_match=expected.etag)
        except PointerConflictError as exc:
            current = self.read_pointer()
            if current is not None and current.version == version:
                return current
            raise PointerConflictError(
                self.pointer_key,
                expected=expected.etag if expected else "*",
                current=current.version if current else None,
            ) from exc
        return Pointer(version, etag)

    # -- versions ------------------------------------------------------------------------------
    def upload_version(
        self, version: VersionId, local_dir: Path, manifest: VersionManifest
    ) -> None:
        """Upload the files in parallel, then the manifest LAST (it marks the version complete).

        A manifest with no ``files`` gets them from ``local_dir``; one that lists files must match
        it. The manifest is written with ``If-None-Match`` so a version id is never reused.
        """
        files = scan_files(local_dir)
        if manifest.version != version:
            raise SnapshotError(f"manifest names {manifest.version}, not {version}")
        if manifest.files and dict(manifest.files) != dict(files):
            raise SnapshotError(f"manifest of {version} does not match the files in {local_dir}")
        manifest = replace(manifest, files=files)
        prefix = self.version_prefix(version)
        upload_directory(self.blobs, local_dir, prefix, self.workers, skip={MANIFEST_NAME})
        body = manifest.to_json().encode()
        try:
            self.blobs.put(prefix + MANIFEST_NAME, body, if_none_match=True)
        except PointerConflictError as exc:
            if self.manifest(version) != manifest:  # equal: our earlier attempt's reply was lost
                raise SnapshotError(f"version {version} already exists") from exc

    def manifest(self, version: VersionId) -> VersionManifest | None:
        blob = self.blobs.get(self.version_prefix(version) + MANIFEST_NAME)
        return None if blob is None else VersionManifest.from_json(blob.body)

    def is_complete(self, version: VersionId) -> bool:
        """Manifest present; or, for an original ``YYYYMMDD_HHMMSS`` version, a Chroma database."""
        if self.manifest(version) is not None:
            return True
        if not _ORIGINAL_ID.match(version):
            return False
        return self.version_prefix(version) + CHROMA_MARKER in self.blobs.list(
            self.version_prefix(version)
        )

    def download_version(self, version: VersionId, dest: Path) -> VersionManifest | None:
        """Download a complete version into ``dest`` and check it; None manifest for originals."""
        manifest = self.manifest(version)
        if manifest is None:
            keys = self.blobs.list(self.version_prefix(version))
            if not keys:
                raise SnapshotError(f"{self.db.value} version {version} is missing")
            if not _ORIGINAL_ID.match(version):
                raise SnapshotError(
                    f"{self.db.value} version {version} is incomplete (no manifest)"
                )
        download_prefix(
            self.blobs, self.version_prefix(version), dest, self.workers, skip={MANIFEST_NAME}
        )
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

    def delete_version(self, version: VersionId) -> None:
        """Delete the manifest first, so a half-deleted version is never taken for complete."""
        prefix = self.version_prefix(version)
        self.blobs.delete([prefix + MANIFEST_NAME])
        self.blobs.delete(self.blobs.list(prefix))

    # -- in-flight markers ---------------------------------------------------------------------
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

    def inflight_versions(self, now: datetime | None = None) -> set[VersionId]:
        """Versions with at least one unexpired marker."""
        at = _now(now)
        return {version for _, version, expires in self._markers() if expires > at}

    # -- retention -----------------------------------------------------------------------------
    def apply_retention(self, keep: int = 4) -> list[VersionId]:
        """Delete all but the newest ``keep`` versions; return the ids deleted.

        Never deleted: the version the pointer names, and any version with an unexpired
        in-flight marker. Protection is read before the listing, so a version created after we
        looked is not in the listing at all. Expired markers are removed as garbage.
        """
        now = datetime.now(UTC)
        markers = self._markers()
        protected = {version for _, version, expires in markers if expires > now}
        pointer = self.read_pointer()
        if pointer is not None:
            protected.add(pointer.version)
        versions = self.list_versions()
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in protected]
        for version in doomed:
            self.delete_version(version)
        expired = [key for key, _, expires in markers if expires <= now]
        if expired:
            self.blobs.delete(expired)
        return doomed

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
    def read_legacy_latest(self, dest: Path) -> Path | None:
        """Download ``{db}/snapshot/latest/`` (read-only fallback); None if it does not exist."""
        prefix = Keys.legacy_latest_prefix(self.db)
        if not self.blobs.list(prefix):
            return None
        download_prefix(self.blobs, prefix, dest, self.workers)
        if not (dest / CHROMA_MARKER).is_file():
            raise SnapshotError(f"{prefix} has no {CHROMA_MARKER}")
        return dest


def _verify(manifest: VersionManifest, dest: Path) -> None:
    for rel, size in manifest.files:
        path = dest / rel
        if not path.is_file():
            raise SnapshotError(f"version {manifest.version}: {rel} is missing after download")
        if path.stat().st_size != size:
            raise SnapshotError(
                f"version {manifest.version}: {rel} has {path.stat().st_size} bytes,"
                f" the manifest says {size}"
            )
