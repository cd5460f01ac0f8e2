"""The merge plan both ``IndexEngine``s share (pure), so the fake cannot drift from the real one:

1. **fold** every source's records in order, later source wins per id (the same rule at every
   level: deltas into a chunk, chunks into a group, intermediates into the snapshot);
2. **classify** the folded records against the base records with the same ids into new ids,
   changed vectors, metadata/document-only changes and identical records (skipped);
3. **apply** — a dict in :class:`~snapmerge.adapters.memory_index.MemoryIndex`, Chroma calls in
   :mod:`snapmerge.adapters.chroma_collection`.

Metadata semantics are "the last write replaces the whole record": a key missing from the last
write is gone afterwards, and an empty dict means no metadata (Chroma cannot store ``{}``). The
checks every merge makes (dimension, collection, final count) and the content digest both
engines compute are here too.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from snapmerge.domain import Record
from snapmerge.errors import MergeInputError


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


def phase_timings(*marks: float) -> dict[str, float]:
    """Phase durations in ms from the five marks start, read, fold, classify, write."""
    names = ("read", "fold", "classify", "write")
    out = {name: (marks[i + 1] - marks[i]) * 1000 for i, name in enumerate(names)}
    out["total"] = (marks[-1] - marks[0]) * 1000
    return out
