"""What the lock, merge and contention benchmarks share: a seeded collection, batches, the paths.

Everything runs on the embedded, serialised moto server with real ChromaDB (``ChromaIndex``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from legacy.merge_under_lease import merge_under_lease

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from legacy.final_merge import LegacyFinalMerge
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys, MergePath, Record
from snapmerge.embedded import EmbeddedAWS
from snapmerge.merging import MergeKit
from snapmerge.ports import BlobStore, IndexEngine, LeaseTable
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
PATHS = (MergePath.LEGACY, MergePath.TWO_PHASE)


def merger(path: MergePath, kit: MergeKit) -> LegacyFinalMerge | TwoPhaseFinalMerge:
    return (
        LegacyFinalMerge(kit)
        if path is MergePath.LEGACY
        else TwoPhaseFinalMerge(kit, fallback=merge_under_lease)
    )


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_kit(
    blobs: BlobStore, engine: IndexEngine, leases: LeaseTable, table: str, root: Path
) -> MergeKit:
    """A kit as one Lambda has it: its own local root (cache, work), a long lock wait."""
    settings = Settings(
        bucket=blobs.bucket,
        table=table,
        chroma_root=root,
        lock_wait_timeout=timedelta(minutes=30),
    )
    return MergeKit(blobs, engine, leases, settings)


def upload_batch(
    engine: IndexEngine,
    blobs: BlobStore,
    work: Path,
    batch_id: str,
    chunks: Sequence[Sequence[Record]],
) -> FinalMergeRequest:
    """Write each chunk's records as an intermediate index, upload it; the request naming them."""
    keys = []
    for i, rows in enumerate(chunks):
        local = work / "inputs" / batch_id / str(i)
        if not local.exists():  # a prepared batch is uploaded again to each run's bucket
            synth.write_index(engine, local, rows, f"receipt_{DB.value}")
        upload_directory(blobs, local, Keys.intermediate_prefix(batch_id, i))
        keys.append(Keys.intermediate_prefix(batch_id, i))
    return FinalMergeRequest(batch_id, DB, tuple(keys))


class Collection:
    """One bucket + lock table with a seeded base; hands out kits and uploads batches."""

    def __init__(self, cloud: EmbeddedAWS, size: int, dimension: int, work: Path) -> None:
        self.cloud, self.dimension, self.work = cloud, dimension, work
        self.bucket = self.table = f"bench-{size}-{int(time.time() * 1000) % 10**8}"
        cloud.create_bucket(self.bucket)
        cloud.create_table(self.table)
        self.blobs = S3BlobStore(self.bucket)
        self.engine = ChromaIndex()
        self.base_rows = synth.records(1, size, dimension, id_prefix="base-")
        started = time.perf_counter()
        seed_snapshot(self.blobs, self.engine, DB, self.base_rows, workdir=mkdir(work / "seed"))
        self.seed_s = time.perf_counter() - started
        self._n = 0
        self._lock = threading.Lock()

    def kit(self, name: str) -> MergeKit:
        return bench_kit(
            self.blobs,
            self.engine,
            DynamoLeaseTable(self.table),
            self.table,
            self.work / f"lambda-{name}",
        )

    def batch(self, chunks: int, per_chunk: int) -> tuple[FinalMergeRequest, list[str]]:
        with self._lock:
            self._n += 1
            n = self._n
        rows = [
            synth.records(
                1000 + n, per_chunk, self.dimension, id_prefix=f"b{n}-", start=i * per_chunk
            )
            for i in range(chunks)
        ]
        request = upload_batch(self.engine, self.blobs, self.work, f"bench-{n}", rows)
        return request, [r.id for chunk in rows for r in chunk]
