""":class:`MemoryIndex`, the reference ``IndexEngine``: the shared merge plan
(:mod:`snapmerge.adapters.merge_plan`) applied to a dict, kept in a JSON file.

On disk a memory index is ``records.json`` plus a ``chroma.sqlite3`` *marker* holding a fixed
text, so delta and snapshot code that recognises a Chroma directory by that file treats it alike.
A marker with any other content is reported as a corrupt database, like a corrupt Chroma file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from snapmerge.adapters.merge_plan import (
    check_collection,
    check_count,
    check_dimension,
    classify,
    digest_records,
    dimension_of,
    fold,
    normalize,
    phase_timings,
    resolve_dimension,
)
from snapmerge.domain import MergeStats, Record
from snapmerge.errors import MergeInputError

MARKER_NAME = "chroma.sqlite3"
MARKER_BODY = b"snapmerge memory index v1\n"
RECORDS_NAME = "records.json"


class MemoryIndex:
    """``IndexEngine`` on a JSON file: the same contract as ``ChromaIndex``, for fast tests."""

    def write(self, directory: Path, records: Sequence[Record], collection: str) -> None:
        """Create a new index holding ``records`` (ids must be unique)."""
        if (directory / MARKER_NAME).exists():
            raise MergeInputError(f"{directory}: already holds an index")
        self._store(directory, collection, {r.id: normalize(r) for r in records})

    def read_records(self, directory: Path, page_size: int = 1000) -> Iterator[list[Record]]:
        _, records = self._load(directory)
        rows = list(records.values())
        for start in range(0, len(rows), page_size):
            yield rows[start : start + page_size]

    def count(self, directory: Path) -> int:
        return len(self._load(directory)[1])

    def digest(self, directory: Path) -> str:
        return digest_records(self._load(directory)[1].values())

    def merge(
        self,
        target: Path,
        sources: Sequence[Path],
        *,
        collection: str,
        dimension: int | None = None,
    ) -> MergeStats:
        started = time.perf_counter()
        name, base = self._load_target(target, collection)
        check_collection(name, collection, target)
        base_dim = dimension_of(next(iter(base.values())).embedding) if base else None
        expected = resolve_dimension(dimension, base_dim, target)
        loaded = [self._load_source(path, collection) for path in sources]
        for path, records in zip(sources, loaded, strict=True):
            for record in records:
                expected = check_dimension(expected, dimension_of(record.embedding), path)
        read_done = time.perf_counter()
        folded = fold(loaded)
        fold_done = time.perf_counter()
        plan = classify(folded, base)
        classify_done = time.perf_counter()
        merged = dict(base)
        for record in (*plan.new, *plan.changed_vectors, *plan.metadata_only):
            merged[record.id] = record
        self._store(target, name, merged)
        final_count = self.count(target)
        check_count(target, len(base), len(plan.new), final_count)
        done = time.perf_counter()
        return MergeStats(
            base_count=len(base),
            new_ids=len(plan.new),
            changed_vectors=len(plan.changed_vectors),
            metadata_only=len(plan.metadata_only),
            unchanged=plan.unchanged,
            final_count=final_count,
            dimension=expected or 0,
            records_merged=plan.total,
            timings_ms=phase_timings(started, read_done, fold_done, classify_done, done),
        )

    def _load_target(self, target: Path, collection: str) -> tuple[str, dict[str, Record]]:
        if (target / MARKER_NAME).exists():
            return self._load(target)
        if target.exists() and any(target.iterdir()):
            raise MergeInputError(f"{target}: target is neither empty nor an index")
        return collection, {}

    def _load_source(self, path: Path, collection: str) -> list[Record]:
        name, records = self._load(path)
        check_collection(name, collection, path)
        if not records:
            raise MergeInputError(f"{path}: source index holds no records")
        return list(records.values())

    def _load(self, directory: Path) -> tuple[str, dict[str, Record]]:
        marker = directory / MARKER_NAME
        if not marker.is_file():
            raise MergeInputError(f"{directory}: not an index directory (no {MARKER_NAME})")
        if marker.read_bytes() != MARKER_BODY:
            raise MergeInputError(f"{directory}: corrupt database file {MARKER_NAME}")
        try:
            body = json.loads((directory / RECORDS_NAME).read_text())
            rows = [Record(i, tuple(e), d, m) for i, e, d, m in body["records"]]
            return str(body["collection"]), {r.id: r for r in rows}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MergeInputError(f"{directory}: unreadable {RECORDS_NAME}: {exc}") from exc

    def _store(self, directory: Path, collection: str, records: Mapping[str, Record]) -> None:
        """Write records then marker, each via rename, so a reader never sees half a file."""
        directory.mkdir(parents=True, exist_ok=True)
        rows = [[r.id, list(r.embedding), r.document, r.metadata] for r in records.values()]
        _atomic_write(
            directory / RECORDS_NAME,
            json.dumps({"collection": collection, "records": rows}).encode(),
        )
        _atomic_write(directory / MARKER_NAME, MARKER_BODY)


def _atomic_write(path: Path, body: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)
