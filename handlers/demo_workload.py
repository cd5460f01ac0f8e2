"""The demo's workload: batches of deltas whose final content is known, and the conservation check.

Every batch writes fresh ids (``{batch}-{n}``), rewrites some of its own earlier records in later
deltas (the later delta must win), and rewrites two base records that no other batch touches.
Concurrent batches therefore never write the same id, so the expected snapshot is exact whatever
order the publishes land in: base ⊕ each successful batch's last writes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from snapmerge import synth
from snapmerge.domain import Database, Record
from snapmerge.ports import BlobStore, IndexEngine
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore


@dataclass(frozen=True)
class Sizes:
    snapshot_records: int
    deltas_per_batch: int
    records_per_delta: int
    dimension: int


@dataclass(frozen=True)
class Batch:
    batch_id: str
    database: Database
    event: dict[str, object]
    writes: tuple[tuple[Record, ...], ...]

    @property
    def delta_count(self) -> int:
        return len(self.writes)


@dataclass
class Ledger:
    """What should be in each collection's snapshot: the base plus every batch reported done."""

    base: dict[Database, dict[str, Record]] = field(default_factory=dict)
    landed: dict[Database, dict[str, Record]] = field(default_factory=dict)
    deltas: int = 0
    batches: int = 0
    failed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def succeeded(self, batch: Batch) -> None:
        with self._lock:
            self.landed.setdefault(batch.database, {}).update(synth.expected_state(batch.writes))
            self.deltas += batch.delta_count
            self.batches += 1

    def failure(self, batch: Batch, error: str) -> None:
        with self._lock:
            self.failed.append(f"{batch.batch_id}: {error}")

    def expected(self, db: Database) -> dict[str, Record]:
        return {**self.base.get(db, {}), **self.landed.get(db, {})}


class Workload:
    def __init__(
        self, blobs: BlobStore, engine: IndexEngine, sizes: Sizes, workdir: Path, seed: int
    ) -> None:
        self.blobs, self.engine, self.sizes, self.workdir = blobs, engine, sizes, workdir
        self.seed = seed
        self.ledger = Ledger()
        self._counter = 0
        self._lock = threading.Lock()

    def seed_snapshots(self) -> None:
        for i, db in enumerate(Database):
            records = synth.records(
                self.seed + i, self.sizes.snapshot_records, self.sizes.dimension, "base-"
            )
            self.ledger.base[db] = {r.id: r for r in records}
            if records:
                seed_snapshot(self.blobs, self.engine, db, records, workdir=self.workdir)

    def next_batch(self, label: str) -> Batch:
        with self._lock:
            index = self._counter
            self._counter += 1
        db = (Database.WORDS, Database.LINES)[index % 2]
        batch_id = f"{label}-{index:04d}"
        writes = self._writes(batch_id, index, db)
        deltas = []
        for d, records in enumerate(writes):
            fmt = DeltaFormat.TARBALL if d % 2 else DeltaFormat.DIRECTORY
            key = upload_delta(
                self.blobs, self.engine, db, f"{batch_id}-{d}", records,
                workdir=self.workdir, fmt=fmt,
            )  # fmt: skip
            deltas.append({"delta_key": key, "collection": f"receipt_{db.value}"})
        event: dict[str, object] = {
            "batch_id": batch_id, "database": db.value, "delta_results": deltas,
        }  # fmt: skip
        return Batch(batch_id, db, event, tuple(tuple(w) for w in writes))

    def _writes(self, batch_id: str, index: int, db: Database) -> list[list[Record]]:
        s = self.sizes
        writes: list[list[Record]] = []
        for d in range(s.deltas_per_batch):
            fresh = synth.records(
                self.seed * 7919 + index * 101 + d, s.records_per_delta, s.dimension,
                id_prefix=f"{batch_id}-", start=d * s.records_per_delta,
            )  # fmt: skip
            if writes:  # a later delta rewrites part of the previous one: it must win
                earlier = writes[-1][: s.records_per_delta]
                fresh += synth.overwrite(earlier, index * 31 + d, 0.3, 0.5)
            writes.append(fresh)
        base = list(self.ledger.base.get(db, {}).values())
        mine = base[(index // 2) * 2 : (index // 2) * 2 + 2]  # two base ids no other batch touches
        if mine and writes:
            writes[-1] = writes[-1] + synth.overwrite(mine, index * 17 + 3, 1.0, 0.5)
        return writes


@dataclass(frozen=True)
class Conservation:
    ok: bool
    deltas: int
    batches: int
    records: int
    missing: int
    wrong: int

    def line(self) -> str:
        if self.ok:
            return (
                f"conservation: every one of {self.deltas} deltas ({self.batches} batches, "
                f"{self.records} records) is in the published snapshot"
            )
        return (
            f"conservation FAILED: {self.missing} records missing and {self.wrong} with the wrong "
            f"content, of {self.records} expected from {self.deltas} deltas"
        )


def check_conservation(
    blobs: BlobStore, engine: IndexEngine, ledger: Ledger, workdir: Path
) -> Conservation:
    """Download each collection's published snapshot and compare it, record by record."""
    missing = wrong = records = 0
    for db in Database:
        expected = ledger.expected(db)
        if not expected:
            continue
        records += len(expected)
        store = SnapshotStore(blobs, db)
        pointer = store.read_pointer()
        if pointer is None:
            missing += len(expected)
            continue
        dest = workdir / f"check-{db.value}"
        store.download_version(pointer.version, dest)
        published = {r.id: r for page in engine.read_records(dest) for r in page}
        for rid, record in expected.items():
            got = published.get(rid)
            missing += got is None
            wrong += got is not None and got != record
    ok = missing == 0 and wrong == 0
    return Conservation(ok, ledger.deltas, ledger.batches, records, missing, wrong)
