"""``IndexEngine`` on ChromaDB 1.5 ``PersistentClient`` directories.

The merge cost is per-record index work, not per source (DESIGN §7), so the merge reads every
source first, folds them in memory (later source wins per id), compares the result with the base
records of the same ids and writes each record the cheapest way that makes it exact (the write
rules, and the reading and writing of one collection, are in
:mod:`snapmerge.adapters.chroma_collection`).

Collection rules: a directory holds exactly one collection (more than one is refused as
ambiguous), and it must be the merge's collection: ``receipt_words`` and ``words`` are one
collection (deltas use the longer spelling), a ``lines`` input or base in a ``words`` merge is
refused. A new
target gets ``embedding_function=None`` and the HNSW distance space of the first source (Chroma's
default ``l2`` unless the sources say otherwise), so merging never changes a collection's query
semantics; an existing base keeps its own configuration untouched.

Format (:mod:`snapmerge.adapters.chroma_format`): opening a directory migrates it to the running
chromadb's format, which readers on an older line cannot open. Before the target is opened its
format is read from the file; a base older than the running chromadb is refused unless the
operator allows the upgrade (``SNAPMERGE_ALLOW_FORMAT_UPGRADE``), a base or source newer than it
is refused (opening it would panic), and after the target is closed its format is read again.
``MergeStats`` records both formats and whether the merge upgraded one. ``read_records``,
``count`` and ``digest`` refuse the same directories a merge target would, for the same reason.

Files: every client is closed, and its files released, before a method returns (closing waits
for chromadb's SQLite worker threads, see :mod:`snapmerge.adapters.chroma_client`), so the
directory can be tarred, moved or deleted at once. Library errors become
:class:`~snapmerge.errors.MergeInputError`.

chromadb lines ``>=1.0.21,<1.6``: clients are opened and closed by
:mod:`snapmerge.adapters.chroma_client`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from snapmerge.adapters import chroma_collection as coll
from snapmerge.adapters import chroma_format as fmt
from snapmerge.adapters.chroma_client import close_client, open_client, running_format
from snapmerge.adapters.merge_plan import (
    check_count,
    check_dimension,
    classify,
    digest_records,
    phase_timings,
    resolve_dimension,
)
from snapmerge.domain import MergeStats, Record
from snapmerge.errors import MergeInputError, SnapshotFormatError

__all__ = ["ChromaIndex", "close_client", "raw_upsert", "running_format"]

DB_FILE = fmt.DB_FILE


@dataclass
class _Folded:
    rows: dict[str, coll.Row] = field(default_factory=dict)
    dimension: int | None = None
    space: str | None = None
    read_s: float = 0.0
    fold_s: float = 0.0


@dataclass(frozen=True)
class _Base:
    """The open merge target: its collection, record count and dimension before the merge."""

    client: ClientAPI
    col: Collection
    count: int
    dimension: int | None


def _require_index(directory: Path) -> None:
    """Check before opening: a PersistentClient would create a database in any directory."""
    if not (directory / DB_FILE).is_file():
        raise MergeInputError(f"{directory}: not a Chroma directory (no {DB_FILE})")


class ChromaIndex:
    """The production ``IndexEngine``. ``max_batch_size`` can only lower Chroma's own limit.

    ``allow_format_upgrade`` None reads ``SNAPMERGE_ALLOW_FORMAT_UPGRADE`` at each merge.
    """

    def __init__(
        self, max_batch_size: int | None = None, *, allow_format_upgrade: bool | None = None
    ) -> None:
        self._cap = max_batch_size
        self._allow_upgrade = allow_format_upgrade

    def _batch(self, client: ClientAPI) -> int:
        limit = int(client.get_max_batch_size())
        return min(limit, self._cap) if self._cap else limit

    def _allowed(self) -> bool:
        return fmt.upgrade_allowed() if self._allow_upgrade is None else self._allow_upgrade

    def _require_readable(self, directory: Path) -> None:
        """Opening a directory migrates it: reading one must not change its format either."""
        _require_index(directory)
        found = fmt.read_format(directory)
        fmt.check_base(found, running_format(), directory, allow=self._allowed())

    def write(self, directory: Path, records: Sequence[Record], collection: str) -> None:
        """Create a new index (default space, no embedding function) holding ``records``."""
        if (directory / DB_FILE).exists():
            raise MergeInputError(f"{directory}: already holds an index")
        directory.mkdir(parents=True, exist_ok=True)
        with open_client(directory) as client:
            coll.add(coll.create(client, collection, None), records, self._batch(client))

    def read_records(self, directory: Path, page_size: int = 1000) -> Iterator[list[Record]]:
        """Pages of records; the client closes when the iterator is exhausted or closed."""
        self._require_readable(directory)
        with open_client(directory) as client:
            for page in coll.read_pages(coll.only_collection(client, directory), page_size):
                yield [row.to_record() for row in page]

    def count(self, directory: Path) -> int:
        self._require_readable(directory)
        with open_client(directory) as client:
            return int(coll.only_collection(client, directory).count())

    def digest(self, directory: Path) -> str:
        self._require_readable(directory)
        with open_client(directory) as client:
            col = coll.only_collection(client, directory)
            size = self._batch(client)
            return digest_records(row for page in coll.read_pages(col, size) for row in page)

    def merge(
        self,
        target: Path,
        sources: Sequence[Path],
        *,
        collection: str,
        dimension: int | None = None,
    ) -> MergeStats:
        """Fold ``sources`` into ``target`` (see the module docstring for the write rules).

        The base stays open while the sources are read, so a large base is opened only once.
        """
        return self._merge(target, sources, collection, dimension)

    def _merge(
        self, target: Path, sources: Sequence[Path], collection: str, dimension: int | None
    ) -> MergeStats:
        started = time.perf_counter()
        for path in sources:
            _require_index(path)
        has_base = (target / DB_FILE).exists()
        if not has_base and target.exists() and any(target.iterdir()):
            raise MergeInputError(f"{target}: target is neither empty nor a Chroma directory")
        allow = self._allowed()
        before = self._check_formats(target if has_base else None, sources, allow)
        with ExitStack() as stack:
            base = self._open_base(stack, target, collection) if has_base else None
            expected = resolve_dimension(dimension, base.dimension if base else None, target)
            folded = self._read_sources(sources, expected, collection)
            if base is None:
                client = stack.enter_context(open_client(target))
                base = _Base(client, coll.create(client, collection, folded.space), 0, None)
            t_classify = time.perf_counter()
            size = self._batch(base.client)
            rows = coll.fetch(base.col, list(folded.rows), size)
            plan = classify(folded.rows, rows)
            t_write = time.perf_counter()
            coll.apply(base.col, plan, rows, size)
            final_count = int(base.col.count())
        done = time.perf_counter()
        after = fmt.read_format(target)
        if before is not None and after != before and not allow:  # the pre-check missed a path
            raise SnapshotFormatError(
                f"{target}: the merge changed the base's format from {before} to {after}"
            )
        check_count(target, base.count, len(plan.new), final_count)
        read_done = started + folded.read_s
        timings = phase_timings(
            started,
            read_done,
            read_done + folded.fold_s,
            read_done + folded.fold_s + (t_write - t_classify),
            done,
        )
        return MergeStats(
            base_count=base.count,
            new_ids=len(plan.new),
            changed_vectors=len(plan.changed_vectors),
            metadata_only=len(plan.metadata_only),
            unchanged=plan.unchanged,
            final_count=final_count,
            dimension=folded.dimension or 0,
            records_merged=plan.total,
            timings_ms=timings,
            format_before=before.id if before else None,
            format_after=after.id,
            format_upgraded=before is not None and after != before,
        )

    @staticmethod
    def _check_formats(
        base: Path | None, sources: Sequence[Path], allow: bool
    ) -> fmt.ChromaFormat | None:
        """Read every format from the files before chromadb opens (and migrates) any of them."""
        running = running_format()
        for path in sources:
            fmt.check_source(fmt.read_format(path), running, path)
        if base is None:
            return None
        before = fmt.read_format(base)
        fmt.check_base(before, running, base, allow=allow)
        return before

    @classmethod
    def _open_base(cls, stack: ExitStack, target: Path, collection: str) -> _Base:
        client = stack.enter_context(open_client(target))
        col = coll.only_collection(client, target, collection)
        return _Base(client, col, int(col.count()), cls._base_dimension(col))

    @staticmethod
    def _base_dimension(col: Collection) -> int | None:
        res = col.get(include=["embeddings"], limit=1)
        if not res["ids"]:
            return None
        return int(np.asarray(res["embeddings"]).shape[-1])

    def _read_sources(
        self, sources: Sequence[Path], expected: int | None, collection: str
    ) -> _Folded:
        out = _Folded(dimension=expected)
        for path in sources:
            with open_client(path) as client:
                col = coll.only_collection(client, path, collection)
                out.space = out.space or coll.space_of(col)
                pages = coll.read_pages(col, self._batch(client))
                seen = 0
                while True:
                    t0 = time.perf_counter()
                    page = next(pages, None)
                    t1 = time.perf_counter()
                    out.read_s += t1 - t0
                    if page is None:
                        break
                    out.dimension = check_dimension(out.dimension, page[0].embedding.size, path)
                    out.rows.update((row.id, row) for row in page)
                    seen += len(page)
                    out.fold_s += time.perf_counter() - t1
            if not seen:
                raise MergeInputError(f"{path}: source collection holds no records")
        return out


def raw_upsert(target: Path, records: Sequence[Record], collection: str) -> float:
    """The naive baseline: upsert every record as is; seconds from open to close (benchmarks)."""
    started = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    with open_client(target) as client:
        names = [c.name for c in client.list_collections()]
        col = client.get_or_create_collection(
            names[0] if names else collection, embedding_function=None
        )
        for part in coll.batched(records, int(client.get_max_batch_size())):
            col.upsert(
                ids=[r.id for r in part],
                embeddings=np.asarray([r.embedding for r in part], dtype=np.float32),
                documents=[r.document for r in part],
                metadatas=coll.metadatas(part),
            )
    return time.perf_counter() - started
