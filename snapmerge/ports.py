"""Ports: the narrow interfaces the core needs from the outside world.

Each has a real adapter (``snapmerge/adapters/s3_store.py``, ``dynamodb_lock.py``,
``chroma_index.py``) and an in-memory one shipped in the package (``adapters/memory*.py``); the
contract tests in ``tests/contract/`` run one suite against both so a fake cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from snapmerge.domain import (
    FinalMergeRequest,
    FinalMergeResult,
    MergePath,
    MergeStats,
    Record,
    VersionId,
)


@dataclass(frozen=True)
class Blob:
    body: bytes
    etag: str
    metadata: Mapping[str, str]


class BlobStore(Protocol):
    """An S3 bucket, reduced to what snapmerge uses.

    ``put`` with ``if_match``/``if_none_match`` is the only way the pointer is written; a refused
    precondition (S3 412, or 409 for a concurrent conditional write) raises
    :class:`~snapmerge.errors.PointerConflictError`; any other failure raises
    :class:`~snapmerge.errors.StoreError`.
    """

    bucket: str

    def get(self, key: str) -> Blob | None: ...

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write ``body``; return the new ETag."""
        ...

    def upload_file(self, key: str, path: Path) -> None: ...

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """Raise :class:`~snapmerge.errors.StoreError` if the key does not exist.

        ``progress`` is called with each number of bytes as they arrive, before the file is
        complete; an exception it raises aborts the download, removes the partial file and
        propagates unchanged (how a size cap is enforced while downloading).
        """
        ...

    def list_etags(self, prefix: str) -> list[tuple[str, str]]:
        """Every key under ``prefix`` with its ETag, sorted by key: the same LIST as ``list``."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (all pages), sorted."""
        ...

    def delete(self, keys: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class LeaseGrant:
    """One grant of a lease: who holds it, until when, and its fencing number.

    ``fence`` rises by one on every grant of the same lock id, so a later holder always carries a
    larger number than any earlier one.
    """

    lock_id: str
    collection: str
    owner: str
    fence: int
    expires: datetime


class LeaseTable(Protocol):
    """The lock row store (DynamoDB in production)."""

    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        """Grant if the row is missing or expired; else raise ``LockBusyError``."""
        ...

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        """Extend our lease; raise ``LeaseLostError`` if the row is no longer ours or expired."""
        ...

    def release(self, grant: LeaseGrant) -> None:
        """Release the row (expired, owner no holder, fence kept) only if still ours; else no-op."""
        ...

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        """Strongly consistent read of the current row."""
        ...


class IndexEngine(Protocol):
    """A vector index stored as a directory (a Chroma PersistentClient directory in production)."""

    def read_records(self, directory: Path, page_size: int = 1000) -> Iterator[list[Record]]:
        """Every record of the directory's first collection, page by page."""
        ...

    def count(self, directory: Path) -> int: ...

    def write(self, directory: Path, records: Sequence[Record], collection: str) -> None:
        """Create an index at ``directory`` holding exactly ``records`` (producers, tests)."""
        ...

    def merge(
        self,
        target: Path,
        sources: Sequence[Path],
        *,
        collection: str,
        dimension: int | None = None,
    ) -> MergeStats:
        """Fold ``sources`` in order (later wins) and write the result into ``target``.

        ``target`` may be empty (a new index is created) or hold the base. Validates the record
        count (base + new unique ids) and the embedding dimension; raises ``MergeInputError``.
        """
        ...

    def digest(self, directory: Path) -> str:
        """A content digest (ids, embeddings, documents, metadata) independent of insert order."""
        ...


class FinalMerger(Protocol):
    """A final-merge path (legacy or two-phase): publishes, or raises."""

    @property
    def path(self) -> MergePath: ...

    def run(self, request: FinalMergeRequest, *, defer_cleanup: bool = False) -> FinalMergeResult:
        """Merge and publish; with ``defer_cleanup`` the intermediates are kept for a shadow run."""
        ...


class DryRunner(Protocol):
    """A path that can compute its result on a given base without publishing anything."""

    def dry_run(self, request: FinalMergeRequest, base: VersionId | None) -> FinalMergeResult: ...


class DelegatingBlobStore:
    """A BlobStore that passes every call through to ``inner``; wrappers that watch or change
    some calls (the concurrency harness, the contention benchmark) override only those."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.bucket = inner.bucket

    def get(self, key: str) -> Blob | None:
        return self.inner.get(key)

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return self.inner.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )

    def upload_file(self, key: str, path: Path) -> None:
        self.inner.upload_file(key, path)

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        self.inner.download_file(key, path, progress=progress)

    def list_etags(self, prefix: str) -> list[tuple[str, str]]:
        return self.inner.list_etags(prefix)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, keys: Sequence[str]) -> None:
        self.inner.delete(keys)
