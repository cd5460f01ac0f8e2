"""Moving whole directories to and from a blob store, files in parallel.

A Chroma directory is a handful of files (``chroma.sqlite3`` plus one folder of HNSW segment
files per collection); copying them one after another leaves bandwidth unused, so each file is
its own task on a thread pool. The first failure is raised after the pool drains.

A download with a cap (an untrusted input: a delta, an intermediate) counts bytes as they arrive
and aborts once the total passes the cap, so a 20 MiB delta under a 1 MiB cap writes about 1 MiB
(plus one transfer chunk per file in flight), not 20 MiB.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from snapmerge.errors import MergeInputError
from snapmerge.ports import BlobStore


def _as_prefix(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def local_files(local_dir: Path, skip: Collection[str] = ()) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of every regular file under ``local_dir``, sorted."""
    found = []
    for path in local_dir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            rel = path.relative_to(local_dir).as_posix()
            if rel not in skip:
                found.append((rel, path))
    return sorted(found)


def upload_directory(
    blobs: BlobStore,
    local_dir: Path,
    prefix: str,
    workers: int = 8,
    *,
    skip: Collection[str] = (),
) -> int:
    """Upload every file under ``local_dir`` to ``prefix``; return the bytes uploaded."""
    prefix = _as_prefix(prefix)
    files = local_files(local_dir, skip)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="upload") as pool:
        futures = [pool.submit(blobs.upload_file, prefix + rel, path) for rel, path in files]
    for future in futures:
        future.result()
    return sum(path.stat().st_size for _, path in files)


def _local_target(dest: Path, prefix: str, key: str) -> Path | None:
    """Where ``key`` lands under ``dest``; None for folder markers. Refuses keys that escape."""
    rel = key[len(prefix) :]
    if not rel or rel.endswith("/"):
        return None
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or ".." in parts or "\\" in rel:
        raise MergeInputError(f"refusing object {key!r}: its name would land outside {dest}")
    return dest.joinpath(*parts)


class ByteBudget:
    """A cap on the bytes a download may write, shared by its threads.

    :meth:`take` is the blob store's ``progress`` callback: it counts what arrived and raises
    :class:`MergeInputError` naming ``what`` (an S3 key, never a scratch path) once the total
    passes ``cap``; the store then aborts that transfer and removes its partial file.
    """

    def __init__(self, cap: int, what: str) -> None:
        self.cap, self.what, self.used = cap, what, 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            self.used += n
        self.check()

    def check(self) -> None:
        if self.used > self.cap:
            raise MergeInputError(f"{self.what} is larger than the cap of {self.cap} bytes")


def download_prefix(
    blobs: BlobStore,
    prefix: str,
    dest: Path,
    workers: int = 8,
    *,
    skip: Collection[str] = (),
    budget: ByteBudget | None = None,
) -> int:
    """Download every object under ``prefix`` into ``dest``; return the bytes downloaded.

    With a ``budget`` the downloads stop once their total passes its cap (``MergeInputError``).
    """
    prefix = _as_prefix(prefix)
    dest.mkdir(parents=True, exist_ok=True)
    targets: list[tuple[str, Path]] = []
    for key in blobs.list(prefix):
        if key[len(prefix) :] in skip:
            continue
        target = _local_target(dest, prefix, key)
        if target is not None:
            targets.append((key, target))
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="download") as pool:
        futures = [pool.submit(_download, blobs, key, target, budget) for key, target in targets]
    for future in futures:
        future.result()
    return sum(target.stat().st_size for _, target in targets)


def _download(blobs: BlobStore, key: str, target: Path, budget: ByteBudget | None) -> None:
    if budget is None:
        blobs.download_file(key, target)
        return
    budget.check()  # another file passed the cap already: do not start this one
    blobs.download_file(key, target, progress=budget.take)
