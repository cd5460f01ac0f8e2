"""A local cache of snapshot versions under ``CHROMA_ROOT`` (Lambda ``/tmp`` or a shared EFS mount).

A cached version counts only once it is complete: it is downloaded into a temporary directory
beside its final place and renamed into ``root/{db}/{version}`` in one step. The original
treated a half-copied directory as valid; here a crash mid-download leaves only a ``.tmp-``
directory that nothing reads. Two processes populating one version (Lambdas sharing EFS) both
download; the first rename wins and the loser discards its copy — rename onto a non-empty
directory fails, it never replaces one that a reader may have open.

Versions are immutable, so a cached directory never goes stale. Callers merge into a
:meth:`SnapshotCache.working_copy`, never into the cache itself.

**Bounded.** A warm Lambda used to keep every base it ever merged onto (12 merges, 12 versions:
at 811 MB a snapshot, a 10 GB ``/tmp`` full). Now the cache keeps the version it last copied
(the current base) and the versions a merge in flight has *pinned*; everything else is pruned
after each working copy. A pin is a file ``.pin-{version}-{owner}-…`` made under the cache's
lock before the version is read, so a prune (which takes the same lock) never removes a version
that is being copied; a pin whose owner is dead (see :mod:`snapmerge.scratch`) no longer counts.
Victims are renamed to ``.del-…`` under the lock and deleted after it, so the lock is held for
renames only.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from snapmerge.config import Settings
from snapmerge.domain import VersionId
from snapmerge.scratch import is_dead, owner_tag
from snapmerge.snapshots import SnapshotStore

CHROMA_ROOT = Path("/tmp/chroma")
"""The default root, as ``Settings.chroma_root`` (env ``CHROMA_ROOT``) defaults to it."""

_TMP, _PIN, _DEL, _LOCK = ".tmp-", ".pin-", ".del-", ".lock"
DEFAULT_STALE_AFTER = timedelta(hours=1)


class SnapshotCache:
    """Complete snapshot versions of one database, kept as directories under ``root/{db}``.

    ``stale_after`` is the age past which a staging directory or a pin is dead whoever owns it
    (the longest lease: no merge outlives it).
    """

    def __init__(
        self, root: Path, store: SnapshotStore, *, stale_after: timedelta = DEFAULT_STALE_AFTER
    ) -> None:
        self.root = root
        self.store = store
        self.stale_after = stale_after

    @classmethod
    def from_settings(cls, settings: Settings, store: SnapshotStore) -> SnapshotCache:
        return cls(settings.chroma_root, store, stale_after=settings.lock_duration)

    @property
    def directory(self) -> Path:
        return self.root / self.store.db.value

    def path(self, version: VersionId) -> Path:
        return self.directory / version

    def cached_versions(self) -> list[VersionId]:
        """The complete versions held now."""
        if not self.directory.is_dir():
            return []
        names = (c.name for c in self.directory.iterdir() if not c.name.startswith("."))
        return sorted(VersionId(n) for n in names)

    def get(self, version: VersionId) -> Path:
        """The cached directory of ``version``, downloading it first if it is not cached."""
        final = self.path(version)
        if final.is_dir():
            return final
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f"{_TMP}{version}-{owner_tag()}-", dir=self.directory)
        )
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

    @contextmanager
    def pinned(self, version: VersionId) -> Iterator[None]:
        """Keep ``version`` from being pruned (by any process sharing the cache) meanwhile."""
        with _locked(self.directory):
            pin = self.directory / f"{_PIN}{version}-{owner_tag()}-{uuid.uuid4().hex[:8]}"
            pin.touch()
        try:
            yield
        finally:
            pin.unlink(missing_ok=True)

    def working_copy(self, version: VersionId, dest: Path) -> Path:
        """Copy the cached version to ``dest`` (absent or empty) for a merge to write into, then
        prune every other version nobody has pinned: the cache keeps the current base only."""
        if dest.exists():
            if any(dest.iterdir()):
                raise FileExistsError(f"working copy target {dest} is not empty")
            dest.rmdir()
        with self.pinned(version):
            shutil.copytree(self.get(version), dest)
        self.prune(keep={version})
        return dest

    def prune(self, keep: set[VersionId], *, stale_after: timedelta | None = None) -> list[str]:
        """Remove cached versions neither in ``keep`` nor pinned by a live pin, dead pins, and
        dead staging directories; return the names removed."""
        return _prune(self.directory, {str(v) for v in keep}, stale_after or self.stale_after)


def sweep_cache(cache_root: Path, max_age: timedelta) -> list[str]:
    """At start-up, for every database under ``cache_root``: dead pins, dead staging directories
    and leftovers of deletions. Cached versions stay until a working copy decides what is current
    (on a shared mount another process may be about to use them)."""
    if not cache_root.is_dir():
        return []
    removed = []
    for directory in sorted(p for p in cache_root.iterdir() if p.is_dir()):
        versions = {c.name for c in directory.iterdir() if not c.name.startswith(".")}
        removed += _prune(directory, versions, max_age)
    return removed


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    # Beside the directory, not in it: the directory lists versions and scratch only.
    with open(directory.parent / f"{_LOCK}-{directory.name}", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prune(directory: Path, keep: set[str], max_age: timedelta) -> list[str]:
    if not directory.is_dir():
        return []
    now, victims = time.time(), []
    with _locked(directory):
        pins = [c for c in directory.iterdir() if c.name.startswith(_PIN)]
        live = [p for p in pins if not is_dead(p, max_age, now)]
        for pin in pins:
            if pin not in live:
                pin.unlink(missing_ok=True)
        held = {p.name[len(_PIN) :].split("-", 1)[0] for p in live} | keep
        for child in directory.iterdir():
            name = child.name
            doomed = (
                name.startswith(_DEL)
                or (name.startswith(_TMP) and is_dead(child, max_age, now))
                or (not name.startswith(".") and name not in held)
            )
            if doomed and child.is_dir():
                victims.append(_set_aside(directory, child))
    for victim in victims:
        shutil.rmtree(victim, ignore_errors=True)
    return [v.name for v in victims]


def _set_aside(directory: Path, child: Path) -> Path:
    """Rename a victim out of the way under the lock; it is deleted after the lock is let go."""
    if child.name.startswith(_DEL):
        return child
    aside = directory / f"{_DEL}{child.name}-{uuid.uuid4().hex[:8]}"
    os.rename(child, aside)
    return aside
