"""The instrumented legacy merge ``bench merge`` runs: a ``MergeKit`` and an engine that only
time what they inherit or delegate (nothing is re-implemented), and the steps they time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import Collection
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.built import BuiltVersion
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    FinalMergeResult,
    MergePath,
    MergeStats,
    Pointer,
    Record,
    VersionId,
)
from snapmerge.lock import Lease
from snapmerge.merging import MergeKit

# The brief's five steps first, then the rest of what the legacy path does under its lock.
STEPS = ("download", "read", "upsert", "upload", "pointer_swap")
DETAIL = ("fetch", "fold", "classify", "merge_close", "copy+manifest", "digest", "finish", "other")


class TimedEngine:
    """Delegates to ChromaIndex; records the merge's wall time, its stats, and digest time."""

    def __init__(self, inner: ChromaIndex, steps: dict[str, float]) -> None:
        self.inner, self.steps = inner, steps
        self.stats: MergeStats | None = None

    def merge(
        self,
        target: Path,
        sources: Sequence[Path],
        *,
        collection: str,
        dimension: int | None = None,
    ) -> MergeStats:
        started = time.perf_counter()
        self.stats = self.inner.merge(target, sources, collection=collection, dimension=dimension)
        self.steps["merge"] = (time.perf_counter() - started) * 1000
        return self.stats

    def digest(self, directory: Path) -> str:
        started = time.perf_counter()
        out = self.inner.digest(directory)
        self.steps["digest"] = (time.perf_counter() - started) * 1000
        return out

    def read_records(self, directory: Path, page_size: int = 1000) -> Iterator[list[Record]]:
        return self.inner.read_records(directory, page_size)

    def count(self, directory: Path) -> int:
        return self.inner.count(directory)

    def write(self, directory: Path, records: Sequence[Record], collection: str) -> None:
        self.inner.write(directory, records, collection)


class TimedKit(MergeKit):
    """A MergeKit whose inherited steps are timed into ``self.steps`` (reset per run)."""

    steps: dict[str, float]

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def fetch_sources(self, request: FinalMergeRequest, dest: Path) -> list[Path]:
        with self._timed("fetch"):
            return super().fetch_sources(request, dest)

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
        if base is not None:  # the download build would do anyway, done first to time it alone
            with self._timed("download"):
                self.cache(request.database).get(base.version)
        with self._timed("build"):
            return super().build(request, base, sources, path, dest, digest=digest, inputs=inputs)

    def upload(
        self,
        db: Database,
        built: BuiltVersion,
        on_claimed: Callable[[VersionId], None] | None = None,
        *,
        listing: str = "",
    ) -> BuiltVersion:
        with self._timed("upload"):
            return super().upload(db, built, on_claimed, listing=listing)

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer:
        with self._timed("pointer_swap"):
            return super().publish(db, built, lease)

    def finish(
        self,
        request: FinalMergeRequest,
        result: FinalMergeResult,
        *,
        cleanup: bool,
        receipt: dict[str, Any] | None = None,
    ) -> int:
        with self._timed("finish"):
            return super().finish(request, result, cleanup=cleanup, receipt=receipt)


def timed_kit(col: Collection) -> tuple[TimedKit, TimedEngine]:
    """A timed kit and engine on ``col``'s bucket, table and lock (the steps shared by both)."""
    proto = col.kit("timed")
    steps: dict[str, float] = {}
    engine = TimedEngine(col.engine, steps)
    kit = TimedKit(col.blobs, engine, DynamoLeaseTable(col.table), proto.settings, lock=proto.lock)
    kit.steps = steps
    return kit, engine
