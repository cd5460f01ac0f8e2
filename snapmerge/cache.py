"""A local cache of snapshot versions under ``CHROMA_ROOT`` (Lambda ``/tmp`` or a shared EFS mount).

A cached version counts only once it is complete: it is downloaded into a temporary directory
beside its final place and renamed into ``root/{db}/{version}`` in one step. The original
treated a half-copied directory as valid; here a crash mid-download leaves only a ``.tmp-``
directory that nothing reads. Two processes populating one version (Lambdas sharing EFS) both
download; the first rename wins and the loser discards its copy — rename onto a non-empty
directory fails, it never replaces one that a reader may have open.

Versions are immutable, so a cached directory never goes stale. Callers merge into a
:meth:`SnapshotCache.working_copy`, never into the cache itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from snapmerge.config import Settings
from snapmerge.domain import VersionId
from snapmerge.snapshots import SnapshotStore

CHROMA_ROOT = Path("/tmp/chroma")
"""The default root, as ``Settings.chroma_root`` (env ``CHROMA_ROOT``) defaults to it."""

_TMP = ".tmp-"


class SnapshotCache:
    """Complete snapshot versions of one database, kept as directories under ``root/{db}``."""

    def __init__(self, root: Path, store: SnapshotStore) -> None:
        self.root = root
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings, store: SnapshotStore) -> SnapshotCache:
        return cls(settings.chroma_root, store)

    @property
    def directory(self) -> Path:
        return self.root / self.store.db.value

    def path(self, version: VersionId) -> Path:
        return self.directory / version

    def get(self, version: VersionId) -> Path:
        """The cached directory of ``version``, downloading it first if it is not cached."""
        final = self.path(version)
        if final.is_dir():
            return final
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{_TMP}{version}-", dir=self.directory))
        try:
            self.store.download_version(version, staging)
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
        finally:
            if staging.exists():  # a failed download, or the loser of a race
                shutil.rmtree(staging, ignore_errors=True)
        return final

    def working_copy(self, version: VersionId, dest: Path) -> Path:
        """Copy the cached version to ``dest`` (absent or empty) for a merge to write into."""
        source = self.get(version)
        if dest.exists():
            if any(dest.iterdir()):
                raise FileExistsError(f"working copy target {dest} is not empty")
            dest.rmdir()
        shutil.copytree(source, dest)
        return dest

    def prune(self, keep: set[VersionId], *, stale_after: timedelta = timedelta(hours=1)) -> None:
        """Remove cached versions not in ``keep``, and staging directories older than
        ``stale_after`` (younger ones may belong to a population in progress elsewhere)."""
        if not self.directory.is_dir():
            return
        cutoff = time.time() - stale_after.total_seconds()
        for child in self.directory.iterdir():
            if child.name.startswith(_TMP):
                if child.stat().st_mtime < cutoff:
                    shutil.rmtree(child, ignore_errors=True)
            elif child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)
