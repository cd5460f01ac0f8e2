"""What the contention bench merges: its sizes, the base snapshot and the crowd's batches.

Every run starts from the same base, published into a fresh bucket; the ``overlap`` first records
of every batch rewrite the same base ids, so a batch applied twice, or after a later one, shows
up as wrong content in the conservation check (``bench.contention_figures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DB
from bench.recording import Fingerprints
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import Record, new_version_id
from snapmerge.embedded import EmbeddedAWS
from snapmerge.snapshots import SnapshotStore, VersionManifest, scan_files

FULL: dict[str, Any] = {
    "levels": (1, 2, 4, 8, 16),
    "dimension": 1536,
    "base": 10_000,
    "records": 200,
    "chunks": 2,
    "overlap": 20,
    "repeats": 1,
}
QUICK: dict[str, Any] = {**FULL, "levels": (1, 2, 4), "dimension": 128, "base": 1000, "repeats": 3}


@dataclass(frozen=True)
class Batch:
    """One execution's batch: its records, split into the intermediates it uploads."""

    batch_id: str
    chunks: tuple[tuple[Record, ...], ...]


class Base:
    """The base snapshot, written locally once and published into each run's fresh bucket."""

    def __init__(self, engine: ChromaIndex, size: int, dimension: int, work: Path) -> None:
        rows = synth.records(1, size, dimension, id_prefix="base-")
        self.directory = work / "base"
        synth.write_index(engine, self.directory, rows, DB.value)
        self.fingerprints = Fingerprints.of(rows)
        self.ids = [r.id for r in rows]
        self.dimension = dimension
        self.digest = engine.digest(self.directory)

    def publish(self, blobs: S3BlobStore) -> None:
        store = SnapshotStore(blobs, DB)
        version = new_version_id()
        manifest = VersionManifest(
            version=version,
            base_version=None,
            batch_id="seed",
            record_count=len(self.ids),
            dimension=self.dimension,
            path="seed",
            files=scan_files(self.directory),
            created_at="",
            digest=self.digest,
        )
        store.upload_version(version, self.directory, manifest)
        store.write_pointer(version, None)

    def fresh_bucket(self, cloud: EmbeddedAWS, name: str) -> S3BlobStore:
        """A new bucket and lock table, both called ``name``, with the base published."""
        cloud.create_bucket(name)
        cloud.create_table(name)
        blobs = S3BlobStore(name)
        self.publish(blobs)
        return blobs


def crowd_batches(level: int, base: Base, records: int, chunks: int, overlap: int) -> list[Batch]:
    """``level`` batches; in each, the first ``overlap`` records rewrite the same base ids."""
    out = []
    per_chunk = max(1, records // chunks)
    contested = base.ids[: min(overlap, len(base.ids), records)]
    for n in range(level):
        rows = synth.records(
            5000 + 100 * level + n, records, base.dimension, id_prefix=f"l{level}b{n}-"
        )
        rows[: len(contested)] = [
            Record(id_, r.embedding, r.document, r.metadata)
            for id_, r in zip(contested, rows, strict=False)
        ]
        split = tuple(tuple(rows[i : i + per_chunk]) for i in range(0, len(rows), per_chunk))
        out.append(Batch(f"crowd-{level}-{n}", split))
    return out
