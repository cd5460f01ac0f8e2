"""Histories: a seeded plan of workers, the batches they merge, the path each takes, the fault.

Everything is a pure function of the history's seed and index, so a failing history is re-run
exactly by its number (``SNAPMERGE_HISTORY_SEED`` + index). Batches overlap on purpose: each one
adds new ids and rewrites some of the seed's records, so "the content of its last write" depends
on the order in which the batches publish.

Coverage is deterministic: history ``i < len(COVERAGE)`` injects fault ``COVERAGE[i]`` into a
victim whose first batch takes the given path, so any run of ``len(COVERAGE)`` histories or more
exercises every fault on both paths (and the checker fails a history whose fault did not fire).
Later histories draw fault and path at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from snapmerge import synth
from snapmerge.domain import MergePath, Record
from tests.concurrency.nemesis import Fault

DIMENSION = 8
SEED_RECORDS = 12

FAULTS: tuple[Fault, ...] = tuple(f for f in Fault if f is not Fault.NONE)
PATHS: tuple[MergePath, ...] = (MergePath.LEGACY, MergePath.TWO_PHASE)
# Every fault on every path, in this order, for the first histories of any run.
COVERAGE: tuple[tuple[Fault, MergePath], ...] = tuple((f, p) for f in FAULTS for p in PATHS)


@dataclass(frozen=True)
class BatchPlan:
    batch_id: str
    path: MergePath
    chunks: tuple[tuple[Record, ...], ...]
    late_upload: bool = False  # inputs uploaded by the worker just before it runs (reused ids)
    collection: str | None = None  # the collection inside its chunks (None: the request's own)


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


REDELIVERY = 0.1  # the share of workers that also run a batch again (see ``_redeliver``)


def generate(
    index: int,
    base_seed: int = 0,
    *,
    min_workers: int = 2,
    max_workers: int = 8,
    redelivery: float = REDELIVERY,
) -> HistoryPlan:
    """History ``index``: 2–8 workers, 1–2 batches each, legacy/two-phase mixed, one fault.

    The first ``len(COVERAGE)`` indices take their (fault, victim path) from ``COVERAGE``; later
    ones draw both (a fault-free history now and then, as a control). Then each worker, with
    probability ``redelivery``, runs one batch again (``_redeliver``).
    """
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
    if index < len(COVERAGE):
        fault, path = COVERAGE[index]
    else:
        fault = rng.choice((Fault.NONE, *FAULTS))
        path = rng.choice(PATHS)
    victim = rng.randrange(n_workers)
    first, *rest = workers[victim].batches
    workers[victim] = WorkerPlan(victim, (with_path(first, path), *rest))
    workers = _redeliver(workers, random.Random(seed * 7 + 3), redelivery)
    return HistoryPlan(index, seed, seed_rows, tuple(workers), fault, victim)


def _redeliver(workers: list[WorkerPlan], rng: random.Random, rate: float) -> list[WorkerPlan]:
    """A redelivery (Step Functions running a task again, a manual re-run): with probability
    ``rate`` a worker ends with a duplicate of a batch drawn from all workers' — its own (a
    re-run after it finished) or another's (possibly at the same time), same id and inputs, on
    either path. Its own random stream, so the plans without redeliveries are unchanged."""
    pool = [b for w in workers for b in w.batches]
    out = []
    for worker in workers:
        if rng.random() < rate:
            again = with_path(rng.choice(pool), rng.choice(PATHS))
            worker = WorkerPlan(worker.worker, (*worker.batches, again))
        out.append(worker)
    return out


def victim_path(plan: HistoryPlan) -> MergePath:
    """The path of the batch the fault is injected into (the victim's first)."""
    return plan.workers[plan.victim].batches[0].path


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
    workers = tuple(
        WorkerPlan(w, (with_path(_batch(rng, seed, w, seed_rows), MergePath.TWO_PHASE),))
        for w in range(2)
    )
    return HistoryPlan(-1, seed, seed_rows, workers, Fault.NONE, 0)


def lone_pause(seed: int = 515151) -> HistoryPlan:
    """One two-phase worker, paused past its lease before the swap, with nobody to race it.

    With fencing the pause costs one failed attempt; without ``lease.verify`` the stale holder's
    conditional write still lands (nothing moved the pointer), which the checker must flag.
    """
    seed_rows = tuple(synth.records(seed, SEED_RECORDS, DIMENSION, id_prefix="seed-"))
    batch = with_path(_batch(random.Random(seed), seed, 0, seed_rows), MergePath.TWO_PHASE)
    return HistoryPlan(-2, seed, seed_rows, (WorkerPlan(0, (batch,)),), Fault.PAUSE_PAST_LEASE, 0)


def with_path(batch: BatchPlan, path: MergePath) -> BatchPlan:
    return replace(batch, path=path)
