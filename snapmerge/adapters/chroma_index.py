"""``IndexEngine`` on ChromaDB 1.5 ``PersistentClient`` directories.

The merge cost is per-record index work, not per source (DESIGN §7), so the merge reads every
source first, folds them in memory (later source wins per id), compares the result with the base
records of the same ids and writes each record the cheapest way that makes it exact:

* new id                            -> ``add``
* vector unchanged, metadata only   -> ``update(metadatas=...)`` (no index work)
* vector or document changed        -> ``update`` with the vector (a document sent without its
  vector would make Chroma call the collection's embedding function)
* document removed (now ``None``)   -> ``delete`` + ``add`` (Chroma cannot unset a document)
* identical                         -> nothing

Chroma's ``update``/``upsert`` merge metadata keys; a key set to ``None`` is deleted, so a patch
(:func:`~snapmerge.adapters.memory_index.metadata_patch`) makes the result equal the last write.
Every call carries at most ``client.get_max_batch_size()`` records.

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

Files: every client is closed and then garbage-collected before a method returns — ``close()``
alone leaves one SQLite handle behind in a reference cycle — so the directory can be tarred,
moved or deleted at once. Library errors become :class:`~snapmerge.errors.MergeInputError`.

chromadb lines ``>=1.0.21,<1.6``: clients are opened and closed by
:mod:`snapmerge.adapters.chroma_client`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from snapmerge.adapters import chroma_format as fmt
from snapmerge.adapters.chroma_client import close_client, open_client, running_format
from snapmerge.adapters.memory_index import (
    MergePlan,
    _timings,
    check_collection,
    check_count,
    check_dimension,
    classify,
    digest_records,
    embedding_bytes,
    metadata_patch,
    resolve_dimension,
)
from snapmerge.domain import MergeStats, Record
from snapmerge.errors import MergeInputError, SnapshotFormatError

__all__ = ["ChromaIndex", "close_client", "raw_upsert", "running_format"]

DB_FILE = fmt.DB_FILE
DEFAULT_SPACE = "l2"
_INCLUDE: Any = ["embeddings", "documents", "metadatas"]


@dataclass(frozen=True)
class _Row:
    """A record as read from Chroma: the vector stays a float32 array row (no Python floats)."""

    id: str
    embedding: npt.NDArray[np.float32]
    document: str | None
    metadata: Mapping[str, Any] | None

    def to_record(self) -> Record:
        meta = dict(self.metadata) if self.metadata else None
        return Record(self.id, tuple(self.embedding.tolist()), self.document, meta)


@dataclass
class _Folded:
    rows: dict[str, _Row] = field(default_factory=dict)
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


def _only_collection(client: ClientAPI, directory: Path, expected: str | None = None) -> Collection:
    """The directory's one collection; with ``expected``, it must be that collection."""
    names = [c.name for c in client.list_collections()]
    if len(names) != 1:
        raise MergeInputError(f"{directory}: expected one collection, found {names}")
    if expected is not None:
        check_collection(names[0], expected, directory)
    return client.get_collection(names[0], embedding_function=None)


def _pages(col: Collection, page_size: int) -> Iterator[list[_Row]]:
    offset = 0
    while True:
        res = col.get(include=_INCLUDE, limit=page_size, offset=offset)
        if not res["ids"]:
            return
        yield _rows(res)
        offset += len(res["ids"])


def _rows(res: Any) -> list[_Row]:
    vectors = np.asarray(res["embeddings"], dtype=np.float32)
    docs, metas = res["documents"], res["metadatas"]
    return [_Row(i, vectors[k], docs[k], metas[k]) for k, i in enumerate(res["ids"])]


def _batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _space(col: Collection) -> str | None:
    hnsw = (col.configuration_json or {}).get("hnsw") or {}
    space = hnsw.get("space")
    return str(space) if space else None


def _create(client: ClientAPI, name: str, space: str | None) -> Collection:
    if space and space != DEFAULT_SPACE:
        config: Any = {"hnsw": {"space": space}}
        return client.create_collection(name, embedding_function=None, configuration=config)
    return client.create_collection(name, embedding_function=None)


def _add(col: Collection, rows: Sequence[Any], size: int) -> None:
    for part in _batched(rows, size):
        col.add(
            ids=[r.id for r in part],
            embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in part]),
            documents=[r.document for r in part],
            metadatas=_metadatas(part),
        )


def _metadatas(rows: Sequence[Any]) -> Any:
    """Chroma cannot store ``{}``: an empty metadata is written as none."""
    return [dict(r.metadata) if r.metadata else None for r in rows]


def _patches(rows: Sequence[_Row], base: Mapping[str, _Row]) -> list[Any] | None:
    patches = [metadata_patch(base[r.id].metadata, r.metadata) for r in rows]
    return patches if any(p is not None for p in patches) else None


def _update(
    col: Collection, rows: Sequence[_Row], base: Mapping[str, _Row], *, vectors: bool, size: int
) -> None:
    for part in _batched(rows, size):
        kwargs: dict[str, Any] = {"metadatas": _patches(part, base)}
        if vectors:
            kwargs["embeddings"] = np.stack([r.embedding for r in part])
            if part[0].document is not None:  # groups are split so all or none carry one
                kwargs["documents"] = [r.document for r in part]
        col.update(ids=[r.id for r in part], **kwargs)


def _apply(col: Collection, plan: MergePlan[_Row], base: Mapping[str, _Row], size: int) -> None:
    replace: list[_Row] = []
    with_doc: list[_Row] = []
    no_doc: list[_Row] = []
    meta_only: list[_Row] = []
    for row in (*plan.changed_vectors, *plan.metadata_only):
        old = base[row.id]
        if row.document is None and old.document is not None:
            replace.append(row)
        elif row.document != old.document or embedding_bytes(row.embedding) != embedding_bytes(
            old.embedding
        ):
            (no_doc if row.document is None else with_doc).append(row)
        else:
            meta_only.append(row)
    _add(col, plan.new, size)
    for part in _batched(replace, size):
        col.delete(ids=[r.id for r in part])
    _add(col, replace, size)
    _update(col, with_doc, base, vectors=True, size=size)
    _update(col, no_doc, base, vectors=True, size=size)
    _update(col, meta_only, base, vectors=False, size=size)


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
            _add(_create(client, collection, None), records, self._batch(client))

    def read_records(self, directory: Path, page_size: int = 1000) -> Iterator[list[Record]]:
        """Pages of records; the client closes when the iterator is exhausted or closed."""
        self._require_readable(directory)
        with open_client(directory) as client:
            for page in _pages(_only_collection(client, directory), page_size):
                yield [row.to_record() for row in page]

    def count(self, directory: Path) -> int:
        self._require_readable(directory)
        with open_client(directory) as client:
            return int(_only_collection(client, directory).count())

    def digest(self, directory: Path) -> str:
        self._require_readable(directory)
        with open_client(directory) as client:
            col = _only_collection(client, directory)
            size = self._batch(client)
            return digest_records(row for page in _pages(col, size) for row in page)

    def merge(
        self,
        target: Path,
        sources: Sequence[Path],
        *,
        collection: str,
        dimension: int | None = None,
    ) -> MergeStats:
        """Fold ``sources`` into ``target`` (see the module docstring for the write rules).

        The base stays open while the sources are read, so a large base is opened only once;
        one garbage collection at the end releases the files of every client the merge opened.
        """
        try:
            return self._merge(target, sources, collection, dimension)
        finally:
            gc.collect()

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
            gc.collect()  # free the closed source clients before the write phase
            if base is None:
                client = stack.enter_context(open_client(target, collect=False))
                base = _Base(client, _create(client, collection, folded.space), 0, None)
            t_classify = time.perf_counter()
            size = self._batch(base.client)
            rows = self._fetch(base.col, list(folded.rows), size)
            plan = classify(folded.rows, rows)
            t_write = time.perf_counter()
            _apply(base.col, plan, rows, size)
            final_count = int(base.col.count())
        done = time.perf_counter()
        after = fmt.read_format(target)
        if before is not None and after != before and not allow:  # the pre-check missed a path
            raise SnapshotFormatError(
                f"{target}: the merge changed the base's format from {before} to {after}"
            )
        check_count(target, base.count, len(plan.new), final_count)
        read_done = started + folded.read_s
        timings = _timings(
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
        client = stack.enter_context(open_client(target, collect=False))
        col = _only_collection(client, target, collection)
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
            with open_client(path, collect=False) as client:
                col = _only_collection(client, path, collection)
                out.space = out.space or _space(col)
                pages = _pages(col, self._batch(client))
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

    @staticmethod
    def _fetch(col: Collection, ids: Sequence[str], size: int) -> dict[str, _Row]:
        """The base records for ``ids`` (only those that exist), in batches."""
        found: dict[str, _Row] = {}
        for part in _batched(ids, size):
            for row in _rows(col.get(ids=list(part), include=_INCLUDE)):
                found[row.id] = row
        return found


def raw_upsert(target: Path, records: Sequence[Record], collection: str) -> float:
    """The naive baseline: upsert every record as is; seconds from open to close (benchmarks)."""
    started = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    with open_client(target) as client:
        names = [c.name for c in client.list_collections()]
        col = client.get_or_create_collection(
            names[0] if names else collection, embedding_function=None
        )
        for part in _batched(records, int(client.get_max_batch_size())):
            col.upsert(
                ids=[r.id for r in part],
                embeddings=np.asarray([r.embedding for r in part], dtype=np.float32),
                documents=[r.document for r in part],
                metadatas=_metadatas(part),
            )
    return time.perf_counter() - started
