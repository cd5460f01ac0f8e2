"""The contention bench's figures (bench/contention_figures.py), computed from hand-made runs."""

from __future__ import annotations

from typing import Any

import pytest

from bench.contention_figures import consumed, level_row, run_figures
from bench.contention_workload import Batch
from bench.recording import RunRecord
from snapmerge.domain import Database, FinalMergeResult, MergePath, VersionId


def result(batch: str, version: str, **kw: Any) -> FinalMergeResult:
    return FinalMergeResult(
        path=MergePath.TWO_PHASE, batch_id=batch, database=Database.WORDS,
        version=VersionId(version), base_version=None, snapshot_key="", total_embeddings=0,
        processing_time_seconds=1.0, chunk_count=1, delta_count=1, records_merged=0,
        lock_wait_ms=0.0, lock_hold_ms=0.0, **kw,
    )  # fmt: skip


GROUPED = [
    result("a", "v1", consumed_batches=("a", "b"), published_by="a", wasted_builds=0),
    result("b", "v1", consumed_batches=("a", "b"), published_by="a", wasted_builds=1),
    result("c", "v2", consumed_batches=("c",), published_by="c", wasted_builds=0),
]
ONE_EACH = [result("a", "v1"), result("b", "v2")]


@pytest.mark.parametrize(
    ("version", "done", "batches"),
    [
        ("v1", GROUPED, ["a", "b"]),  # named by the results, in apply order
        ("v2", GROUPED, ["c"]),
        ("v1", ONE_EACH, ["a"]),  # a path that names none: each result naming it is one batch
        ("v9", ONE_EACH, []),  # published by nobody that returned
    ],
)
def test_consumed(version: str, done: list[FinalMergeResult], batches: list[str]) -> None:
    assert consumed(version, done) == batches


def test_run_figures_count_publishes_waste_and_carried_executions() -> None:
    record = RunRecord(holds_ms=[10.0, 30.0], uploaded={"v0", "v1", "v2"})
    record.published = [(2.0, "v2"), (1.0, "v1")]
    crowd = [Batch(b, ()) for b in "abc"]
    f = run_figures(MergePath.TWO_PHASE, crowd, GROUPED, record, [], 3.0)
    assert (f["executions"], f["publishes"], f["builds_uploaded"]) == (3, 2, 3)
    assert f["wasted_builds"] == 1  # v0 was uploaded and never named by the pointer
    assert f["wasted_builds_reported"] == 1 and f["wasted_per_publish"] == 0.5
    assert f["batches_per_publish"] == 1.5 and f["coalesced"] == 1  # b carried by a
    legacy = run_figures(MergePath.LEGACY, crowd[:2], ONE_EACH, record, [], 3.0)
    assert legacy["wasted_builds_reported"] is None  # a path that does not count them


def test_level_row_puts_both_paths_side_by_side_with_their_ratio() -> None:
    def runs(makespan: float) -> list[dict[str, Any]]:
        keys = ("merge_p50_s", "hold_p50_ms", "hold_p99_ms", "cas_failures", "fallbacks",
                "publishes", "wasted_builds", "wasted_per_publish", "wasted_builds_reported",
                "batches_per_publish", "coalesced")  # fmt: skip
        return [
            {"makespan_s": m, **dict.fromkeys(keys, 0), "conservation": {"ok": True}, "errors": []}
            for m in (makespan, makespan + 2.0, makespan + 4.0)
        ]

    row = level_row(4, {MergePath.LEGACY: runs(4.0), MergePath.TWO_PHASE: runs(1.0)})
    assert row["legacy"]["makespan_s"] == 6.0 and row["two_phase"]["makespan_s"] == 3.0
    assert row["makespan_ratio"] == 0.5 and row["legacy"]["conserved"]
