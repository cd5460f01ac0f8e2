"""Reading and writing one Chroma collection: pages of rows in, a merge plan out.

A merge plan (:class:`~snapmerge.adapters.merge_plan.MergePlan`) is written the cheapest way
that makes each record exact (:func:`apply`):

* new id                            -> ``add``
* vector unchanged, metadata only   -> ``update(metadatas=...)`` (no index work)
* vector or document changed        -> ``update`` with the vector (a document sent without its
  vector would make Chroma call the collection's embedding function)
* document removed (now ``None``)   -> ``delete`` + ``add`` (Chroma cannot unset a document)
* identical                         -> nothing

Chroma's ``update``/``upsert`` merge metadata keys; a key set to ``None`` is deleted, so a patch
(:func:`~snapmerge.adapters.merge_plan.metadata_patch`) makes the result equal the last write.
Every call carries at most ``size`` records (the client's ``get_max_batch_size()``). Opening,
closing and the merge itself are :class:`snapmerge.adapters.chroma_index.ChromaIndex`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection

from snapmerge.adapters.merge_plan import (
    MergePlan,
    check_collection,
    embedding_bytes,
    metadata_patch,
)
from snapmerge.domain import Record
from snapmerge.errors import MergeInputError

DEFAULT_SPACE = "l2"
INCLUDE: Any = ["embeddings", "documents", "metadatas"]


@dataclass(frozen=True)
class Row:
    """A record as read from Chroma: the vector stays a float32 array row (no Python floats)."""

    id: str
    embedding: npt.NDArray[np.float32]
    document: str | None
    metadata: Mapping[str, Any] | None

    def to_record(self) -> Record:
        meta = dict(self.metadata) if self.metadata else None
        return Record(self.id, tuple(self.embedding.tolist()), self.document, meta)


def only_collection(client: ClientAPI, directory: Path, expected: str | None = None) -> Collection:
    """The directory's one collection; with ``expected``, it must be that collection."""
    names = [c.name for c in client.list_collections()]
    if len(names) != 1:
        raise MergeInputError(f"{directory}: expected one collection, found {names}")
    if expected is not None:
        check_collection(names[0], expected, directory)
    return client.get_collection(names[0], embedding_function=None)


def read_pages(col: Collection, page_size: int) -> Iterator[list[Row]]:
    offset = 0
    while True:
        res = col.get(include=INCLUDE, limit=page_size, offset=offset)
        if not res["ids"]:
            return
        yield rows_of(res)
        offset += len(res["ids"])


def rows_of(res: Any) -> list[Row]:
    vectors = np.asarray(res["embeddings"], dtype=np.float32)
    docs, metas = res["documents"], res["metadatas"]
    return [Row(i, vectors[k], docs[k], metas[k]) for k, i in enumerate(res["ids"])]


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def space_of(col: Collection) -> str | None:
    hnsw = (col.configuration_json or {}).get("hnsw") or {}
    space = hnsw.get("space")
    return str(space) if space else None


def create(client: ClientAPI, name: str, space: str | None) -> Collection:
    if space and space != DEFAULT_SPACE:
        config: Any = {"hnsw": {"space": space}}
        return client.create_collection(name, embedding_function=None, configuration=config)
    return client.create_collection(name, embedding_function=None)


def add(col: Collection, rows: Sequence[Any], size: int) -> None:
    for part in batched(rows, size):
        col.add(
            ids=[r.id for r in part],
            embeddings=np.stack([np.asarray(r.embedding, dtype=np.float32) for r in part]),
            documents=[r.document for r in part],
            metadatas=metadatas(part),
        )


def metadatas(rows: Sequence[Any]) -> Any:
    """Chroma cannot store ``{}``: an empty metadata is written as none."""
    return [dict(r.metadata) if r.metadata else None for r in rows]


def _patches(rows: Sequence[Row], base: Mapping[str, Row]) -> list[Any] | None:
    patches = [metadata_patch(base[r.id].metadata, r.metadata) for r in rows]
    return patches if any(p is not None for p in patches) else None


def _update(
    col: Collection, rows: Sequence[Row], base: Mapping[str, Row], *, vectors: bool, size: int
) -> None:
    for part in batched(rows, size):
        kwargs: dict[str, Any] = {"metadatas": _patches(part, base)}
        if vectors:
            kwargs["embeddings"] = np.stack([r.embedding for r in part])
            if part[0].document is not None:  # groups are split so all or none carry one
                kwargs["documents"] = [r.document for r in part]
        col.update(ids=[r.id for r in part], **kwargs)


def apply(col: Collection, plan: MergePlan[Row], base: Mapping[str, Row], size: int) -> None:
    replace: list[Row] = []
    with_doc: list[Row] = []
    no_doc: list[Row] = []
    meta_only: list[Row] = []
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
    add(col, plan.new, size)
    for part in batched(replace, size):
        col.delete(ids=[r.id for r in part])
    add(col, replace, size)
    _update(col, with_doc, base, vectors=True, size=size)
    _update(col, no_doc, base, vectors=True, size=size)
    _update(col, meta_only, base, vectors=False, size=size)


def fetch(col: Collection, ids: Sequence[str], size: int) -> dict[str, Row]:
    """The base records for ``ids`` (only those that exist), in batches."""
    found: dict[str, Row] = {}
    for part in batched(ids, size):
        for row in rows_of(col.get(ids=list(part), include=INCLUDE)):
            found[row.id] = row
    return found
