"""The history generator's redeliveries: a batch run again, by its own worker or another."""

from __future__ import annotations

from tests.concurrency.generator import generate


def _runs(index: int, redelivery: float) -> list[tuple[int, str]]:
    plan = generate(index, max_workers=3, redelivery=redelivery)
    return [(w.worker, b.batch_id) for w in plan.workers for b in w.batches]


def test_about_one_worker_in_ten_runs_a_batch_again_on_its_own_or_anothers() -> None:
    workers = same = other = 0
    for index in range(300):
        plan = generate(index, max_workers=3)
        workers += len(plan.workers)
        runs = _runs(index, 0.1)
        for n, (worker, batch) in enumerate(runs):
            earlier = [w for w, b in runs[:n] if b == batch]
            same += worker in earlier
            other += bool(earlier) and worker not in earlier
    assert 0.07 <= (same + other) / workers <= 0.14
    assert same > 0 and other > 0  # re-runs after finishing, and runs beside the original


def test_a_redelivery_only_adds_runs() -> None:
    for index in range(100):
        without = generate(index, max_workers=3, redelivery=0.0)
        ids = [b.batch_id for b in without.batches]
        assert len(set(ids)) == len(ids)  # ids unique without redelivery
        with_ = generate(index, max_workers=3)
        assert (with_.fault, with_.victim) == (without.fault, without.victim)
        for before, after in zip(without.workers, with_.workers, strict=True):
            assert after.batches[: len(before.batches)] == before.batches
            assert len(after.batches) - len(before.batches) in (0, 1)
            assert {b.batch_id for b in after.batches} <= set(ids)
