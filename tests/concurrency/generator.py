"""Histories: a seeded plan of workers, the batches they merge, the path each takes, the fault.

Everything is a pure function of the history's seed and index, so a failing history is re-run
exactly by its number (``SNAPMERGE_HISTORY_SEED`` + index). Batches overlap on purpose: each one
adds new ids and rewrites some of the seed's records, so "the content of its last write" depends
on the order in which the batches publish.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from snapmerge import synth
from snapmerge.domain import MergePath, Record
from tests.concurrency.nemesis import Fault

DIMENSION = 8
SEED_RECORDS = 12

# The nemesis steps through every fault in turn, one per history.
FAULT_CYCLE: tuple[Fault, ...] = tuple(Fault)


@dataclass(frozen=True)
class BatchPlan:
    batch_id: str
    path: MergePath
    chunks: tuple[tuple[Record, ...], ...]


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    batches: tuple[BatchPlan, ...]


@dataclass(frozen=True)
class HistoryPlan:
    index: int
    seed: int
    seed_rows: tuple[Record, ...]
    workers: tuple[WorkerPlan, ...]
    fault: Fault
    victim: int

    @property
    def batches(self) -> list[BatchPlan]:
        return [b for w in self.workers for b in w.batches]


def generate(
    index: int, base_seed: int = 0, *, min_workers: int = 2, max_workers: int = 8
) -> HistoryPlan:
    """History ``index``: 2–8 workers, 1–2 batches each, legacy/two-phase mixed, one fault."""
    seed = base_seed * 100_003 + index
    rng = random.Random(seed)
    seed_rows = tuple(synth.records(seed, SEED_RECORDS, DIMENSION, id_prefix="seed-"))
    n_workers = rng.randint(min_workers, max_workers)
    workers = []
    counter = 0
    for w in range(n_workers):
        batches = []
        for _ in range(1 if n_workers > 4 else rng.randint(1, 2)):
            batches.append(_batch(rng, seed, counter, seed_rows))
            counter += 1
        workers.append(WorkerPlan(w, tuple(batches)))
    fault = FAULT_CYCLE[index % len(FAULT_CYCLE)]
    return HistoryPlan(index, seed, seed_rows, tuple(workers), fault, rng.randrange(n_workers))


def _batch(rng: random.Random, seed: int, k: int, seed_rows: tuple[Record, ...]) -> BatchPlan:
    path = MergePath.LEGACY if rng.random() < 0.4 else MergePath.TWO_PHASE
    chunks = []
    for c in range(rng.randint(1, 3)):
        fresh = synth.records(
            seed + 7 * k + c, rng.randint(1, 3), DIMENSION, id_prefix=f"b{k}-", start=10 * c
        )
        rewrites = synth.overwrite(
            seed_rows, seed=seed + 1000 * k + c, fraction=0.25, vector_fraction=0.5
        )
        chunks.append(tuple([*fresh, *rewrites]))
    return BatchPlan(f"batch-{seed}-{k}", path, tuple(chunks))


def forced_race(seed: int = 424242) -> HistoryPlan:
    """Two two-phase workers that both read the seed as their base before either swaps."""
    seed_rows = tuple(synth.records(seed, SEED_RECORDS, DIMENSION, id_prefix="seed-"))
    rng = random.Random(seed)
    workers = tuple(WorkerPlan(w, (_two_phase(_batch(rng, seed, w, seed_rows)),)) for w in range(2))
    return HistoryPlan(-1, seed, seed_rows, workers, Fault.NONE, 0)


def lone_pause(seed: int = 515151) -> HistoryPlan:
    """One two-phase worker, paused past its lease before the swap, with nobody to race it.

    With fencing the pause costs one failed attempt; without ``lease.verify`` the stale holder's
    conditional write still lands (nothing moved the pointer), which the checker must flag.
    """
    seed_rows = tuple(synth.records(seed, SEED_RECORDS, DIMENSION, id_prefix="seed-"))
    batch = _two_phase(_batch(random.Random(seed), seed, 0, seed_rows))
    return HistoryPlan(-2, seed, seed_rows, (WorkerPlan(0, (batch,)),), Fault.PAUSE_PAST_LEASE, 0)


def _two_phase(batch: BatchPlan) -> BatchPlan:
    return BatchPlan(batch.batch_id, MergePath.TWO_PHASE, batch.chunks)
