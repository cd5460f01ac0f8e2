"""Deterministic synthetic records for tests, benchmarks and the demo (numpy only, no I/O).

Everything is a pure function of its arguments: the same seed gives the same records on every
machine, so a test's expected state and a benchmark's input are reproducible. Vectors are float32
unit vectors (as stored by Chroma) and are held as Python floats that are exactly float32 values,
so a record read back from an index compares equal to the one written.

Directories are written through an engine passed in (``ChromaIndex`` or ``MemoryIndex``), which
keeps this module free of chromadb.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from snapmerge.domain import DEFAULT_DIMENSION, Record

_LABELS = ("MERCHANT_NAME", "DATE", "TOTAL", "LINE_ITEM", "ADDRESS", "PHONE")


class IndexWriter(Protocol):
    """An engine that can create an index directory from records (both engines can)."""

    def write(self, directory: Path, records: Sequence[Record], collection: str) -> None: ...


def _unit_vectors(rng: np.random.Generator, n: int, dimension: int) -> list[tuple[float, ...]]:
    raw = rng.standard_normal((n, dimension), dtype=np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    return [tuple(row.tolist()) for row in raw.astype(np.float32)]


def _metadata(index: int, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "receipt": index // 40,
        "line": index % 40,
        "confidence": round(float(rng.uniform(0.5, 1.0)), 4),
        "batch": f"seed-{seed}",
    }
    if index % 3 == 0:  # an optional key, so later writes can remove it
        meta["label"] = _LABELS[index % len(_LABELS)]
    return meta


def records(
    seed: int, n: int, dimension: int = DEFAULT_DIMENSION, id_prefix: str = "r", start: int = 0
) -> list[Record]:
    """``n`` records, ids ``{id_prefix}{start:08d}`` onwards; deterministic in every argument."""
    rng = np.random.default_rng([seed, start, n, dimension])
    vectors = _unit_vectors(rng, n, dimension)
    out = []
    for offset, vector in enumerate(vectors):
        index = start + offset
        doc = f"word {index} of receipt {index // 40} ({id_prefix}, seed {seed})"
        out.append(Record(f"{id_prefix}{index:08d}", vector, doc, _metadata(index, seed, rng)))
    return out


def overwrite(
    existing: Sequence[Record], seed: int, fraction: float, vector_fraction: float
) -> list[Record]:
    """Later writes of ``round(fraction * len(existing))`` of the given records.

    ``vector_fraction`` of them get a new vector and document (a re-embedding); the rest keep
    vector and document and change metadata only: a value changes, a key is added, and the
    optional ``label`` key, where present, is removed (so the merge must delete it).
    """
    rng = np.random.default_rng([seed, len(existing), 7])
    chosen = sorted(rng.choice(len(existing), size=round(fraction * len(existing)), replace=False))
    n_vectors = round(vector_fraction * len(chosen))
    dimension = len(existing[0].embedding) if existing else 0
    vectors = _unit_vectors(rng, n_vectors, dimension)
    out = []
    for k, idx in enumerate(chosen):
        old = existing[int(idx)]
        meta = {key: v for key, v in (old.metadata or {}).items() if key != "label"}
        meta["revision"] = seed
        meta["confidence"] = round(float(rng.uniform(0.0, 0.5)), 4)
        if k < n_vectors:
            out.append(Record(old.id, vectors[k], f"{old.document} (rewritten {seed})", meta))
        else:
            out.append(Record(old.id, old.embedding, old.document, meta))
    return out


def write_index(
    engine: IndexWriter, directory: Path, rows: Sequence[Record], collection: str
) -> None:
    """Create an index directory holding ``rows`` with ``engine``."""
    engine.write(directory, rows, collection)


class WarmableEngine(IndexWriter, Protocol):
    def digest(self, directory: Path) -> str: ...


def warm(engine: WarmableEngine, root: Path | None = None) -> None:
    """Write and read a tiny index once (in a temporary directory under ``root``), so that a
    process's first real use of the engine does not pay for loading it (a second or more for
    ChromaDB): the benches' and the demo's workers call it before anything is timed."""
    with tempfile.TemporaryDirectory(prefix="warm-", dir=root) as tmp:
        write_index(engine, Path(tmp) / "warm", records(1, 4, 8), "warm")
        engine.digest(Path(tmp) / "warm")


def expected_state(writes: Sequence[Sequence[Record]]) -> dict[str, Record]:
    """What an index must hold after applying ``writes`` in order: the last write of each id."""
    state: dict[str, Record] = {}
    for write in writes:
        for record in write:
            state[record.id] = record
    return state
