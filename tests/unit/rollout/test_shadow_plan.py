"""The shadow run's two decisions, on plain values (rollout/shadow.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rollout import shadow
from rollout.metric_names import ShadowOutcome
from snapmerge.domain import Database, FinalMergeResult, MergePath

PUBLISHED = FinalMergeResult(
    path=MergePath.LEGACY,
    batch_id="b1",
    database=Database.WORDS,
    version="v2",
    base_version="v1",
    snapshot_key="words/snapshot/timestamped/v2/",
    total_embeddings=120,
    processing_time_seconds=1.5,
    chunk_count=2,
    delta_count=4,
    records_merged=20,
    lock_wait_ms=0.0,
    lock_hold_ms=1500.0,
    digest="a" * 64,
)


@pytest.mark.parametrize(
    ("published", "remaining_ms", "skip"),
    [
        (PUBLISHED, None, None),  # no Lambda clock (local runs): always run
        (PUBLISHED, 60_000, None),
        (PUBLISHED, 30_000, None),  # exactly the budget is enough
        (PUBLISHED, 29_999, "less than 30000 ms of Lambda time left"),
        (replace(PUBLISHED, replayed=True), 60_000, "legacy replayed an earlier publish"),
        (replace(PUBLISHED, replayed=True), 10, "legacy replayed an earlier publish"),
    ],
)
def test_when_the_candidate_is_not_run(
    published: FinalMergeResult, remaining_ms: int | None, skip: str | None
) -> None:
    reason = shadow.skip_reason(published, remaining_ms, budget_ms=30_000)
    if skip is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(skip)


@pytest.mark.parametrize(
    ("changes", "outcome", "reason"),
    [
        ({}, ShadowOutcome.MATCHED, None),
        # what is compared is the content: timings, lock figures and the path may differ
        (
            {"path": MergePath.TWO_PHASE, "processing_time_seconds": 9.0, "lock_hold_ms": 3.0},
            ShadowOutcome.MATCHED,
            None,
        ),
        ({"digest": "b" * 64}, ShadowOutcome.MISMATCHED, "digest bbbbbbbbbbbb != aaaaaaaaaaaa"),
        ({"total_embeddings": 119}, ShadowOutcome.MISMATCHED, "records 119 != 120"),
        (
            {"digest": "", "total_embeddings": 0},
            ShadowOutcome.MISMATCHED,
            "digest  != aaaaaaaaaaaa",
        ),
    ],
)
def test_what_a_shadow_run_compares(
    changes: dict[str, object], outcome: ShadowOutcome, reason: str | None
) -> None:
    candidate = replace(PUBLISHED, **changes)  # type: ignore[arg-type]
    assert shadow.compare(PUBLISHED, candidate) == (outcome, reason)
