"""The merge plan (pure) and :class:`MemoryIndex`, the reference ``IndexEngine`` built on it.

Both engines share one pure plan, so the fake cannot drift from the real one:

1. **fold** every source's records in order, later source wins per id (the same rule at every
   level: deltas into a chunk, chunks into a group, intermediates into the snapshot);
2. **classify** the folded records against the base records with the same ids into new ids,
   changed vectors, metadata/document-only changes and identical records (skipped);
3. **apply** — a dict here, Chroma calls in :mod:`snapmerge.adapters.chroma_index`.

Metadata semantics are "the last write replaces the whole record": a key missing from the last
write is gone afterwards, and an empty dict means no metadata (Chroma cannot store ``{}``).

On disk a memory index is ``records.json`` plus a ``chroma.sqlite3`` *marker* holding a fixed
text, so delta and snapshot code that recognises a Chroma directory by that file treats it alike.
A marker with any other content is reported as a corrupt database, like a corrupt Chroma file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from snapmerge.domain import MergeStats, Record
from snapmerge.errors import MergeInputError

MARKER_NAME = "chroma.sqlite3"
MARKER_BODY = b"snapmerge memory index v1\n"
RECORDS_NAME = "records.json"


class RecordLike(Protocol):
    """What the plan needs of a record: ``Record`` or an engine's own row type."""

    @property
    def id(self) -> str: ...
    @property
    def embedding(self) -> Any: ...
    @property
    def document(self) -> str | None: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


R = TypeVar("R", bound=RecordLike)


def canonical_metadata(metadata: Mapping[str, Any] | None) -> str:
    """Sorted, compact JSON; ``None`` and ``{}`` are the same (no metadata).

    JSON keeps ``1``, ``1.0`` and ``true`` apart, which Python's ``==`` does not.
    """
    return json.dumps(dict(metadata) if metadata else None, sort_keys=True, separators=(",", ":"))


def embedding_bytes(embedding: Any) -> bytes:
    """The float32 bytes of an embedding (tuple, list or array of any float width)."""
    return np.asarray(embedding, dtype=np.float32).tobytes()


def dimension_of(embedding: Any) -> int:
    return int(np.asarray(embedding).shape[-1])


def metadata_patch(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """What to send to Chroma's key-merging ``update`` so the result equals ``new`` exactly.

    Chroma 1.5 merges metadata keys and deletes a key set to ``None`` (deleting every key leaves
    no metadata). ``None`` means "send nothing" (the metadata is already right).
    """
    if canonical_metadata(old) == canonical_metadata(new):
        return None
    patch: dict[str, Any] = {key: None for key in (old or {}) if key not in (new or {})}
    patch.update(new or {})
    return patch


def same_content(a: RecordLike, b: RecordLike) -> bool:
    return (
        a.document == b.document
        and canonical_metadata(a.metadata) == canonical_metadata(b.metadata)
        and embedding_bytes(a.embedding) == embedding_bytes(b.embedding)
    )


def fold(pages: Iterable[Iterable[R]]) -> dict[str, R]:
    """Last write wins per id; pages are applied in order (sources oldest first)."""
    folded: dict[str, R] = {}
    for page in pages:
        for record in page:
            folded[record.id] = record
    return folded


@dataclass(frozen=True)
class MergePlan(Generic[R]):
    """The folded records sorted by what writing them costs."""

    new: tuple[R, ...]
    changed_vectors: tuple[R, ...]
    metadata_only: tuple[R, ...]  # vector unchanged; metadata and/or document changed
    unchanged: int

    @property
    def total(self) -> int:
        return len(self.new) + len(self.changed_vectors) + len(self.metadata_only) + self.unchanged


def classify(folded: Mapping[str, R], base: Mapping[str, RecordLike]) -> MergePlan[R]:
    """Split ``folded`` by comparing with ``base`` (which need hold only the overlapping ids)."""
    new: list[R] = []
    vectors: list[R] = []
    meta: list[R] = []
    unchanged = 0
    for record_id, record in folded.items():
        old = base.get(record_id)
        if old is None:
            new.append(record)
        elif embedding_bytes(old.embedding) != embedding_bytes(record.embedding):
            vectors.append(record)
        elif same_content(old, record):
            unchanged += 1
        else:
            meta.append(record)
    return MergePlan(tuple(new), tuple(vectors), tuple(meta), unchanged)


def resolve_dimension(requested: int | None, base: int | None, target: Path) -> int | None:
    """The dimension every source must have: the caller's, else the base's (they must agree)."""
    if requested is not None and base is not None and requested != base:
        raise MergeInputError(f"{target}: base has dimension {base}, expected {requested}")
    return requested if requested is not None else base


def check_dimension(expected: int | None, got: int, source: Path) -> int:
    """Raise unless ``got`` matches; return the dimension now in force."""
    if expected is not None and got != expected:
        raise MergeInputError(f"{source}: embedding dimension {got}, expected {expected}")
    return got


def same_collection(a: str, b: str) -> bool:
    """``receipt_words`` and ``words`` are one collection (deltas use the longer spelling)."""
    return a.removeprefix("receipt_") == b.removeprefix("receipt_")


def check_collection(found: str, expected: str, where: Path) -> None:
    """An input or base of another collection (a ``lines`` chunk in a ``words`` merge): refused."""
    if not same_collection(found, expected):
        raise MergeInputError(
            f"{where}: holds collection {found!r}, but this merge is for {expected!r}"
        )


def check_count(target: Path, base_count: int, new_ids: int, final_count: int) -> None:
    if final_count != base_count + new_ids:
        raise MergeInputError(
            f"{target}: merged index holds {final_count} records, expected "
            f"{base_count} (base) + {new_ids} (new ids) = {base_count + new_ids}"
        )


def digest_records(records: Iterable[RecordLike]) -> str:
    """sha256 over records sorted by id: id, float32 embedding, document, canonical metadata.

    Each field is length-prefixed so no two different records hash alike; the per-record hashes
    are sorted by id, so insert order and paging never change the result.
    """
    lines: list[tuple[str, bytes]] = []
    for record in records:
        h = hashlib.sha256()
        doc = b"\x00" if record.document is None else b"\x01" + record.document.encode()
        for part in (
            record.id.encode(),
            embedding_bytes(record.embedding),
            doc,
            canonical_metadata(record.metadata).encode(),
        ):
            h.update(struct.pack(">Q", len(part)))
            h.update(part)
        lines.append((record.id, h.digest()))
    lines.sort()
    total = hashlib.sha256()
    for _, line in lines:
        total.update(line)
    return total.hexdigest()


def normalize(record: Record) -> Record:
    """Float32-exact embedding and ``{}`` metadata as ``None``: what a store hands back."""
    vector = tuple(np.asarray(record.embedding, dtype=np.float32).tolist())
    return Record(record.id, vector, record.document, dict(record.metadata or {}) or None)


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
            timings_ms=_timings(started, read_done, fold_done, classify_done, done),
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


def _timings(*marks: float) -> dict[str, float]:
    """Phase durations in ms from the five marks start, read, fold, classify, write."""
    names = ("read", "fold", "classify", "write")
    out = {name: (marks[i + 1] - marks[i]) * 1000 for i, name in enumerate(names)}
    out["total"] = (marks[-1] - marks[0]) * 1000
    return out
