"""The canary judge on synthetic samples whose answer is known."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from rollout.guardrails import DEFAULT_GUARDRAILS, Guardrail
from rollout.judge import Verdict, judge
from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError

LEGACY, TWO = MergePath.LEGACY, MergePath.TWO_PHASE
HOLD = Guardrail(MetricName.LOCK_HOLD_TIME, "latency", "higher", 0.25, critical=True)
WAIT = Guardrail(MetricName.LOCK_WAIT_TIME, "latency", "higher", 0.5, critical=False)
CAS = Guardrail(MetricName.CAS_FAILURES, "rate", "higher", 0.01, critical=True)
CHUNKS = Guardrail(MetricName.CHUNK_COUNT, "invariant", "higher", 0.0, critical=True)
MISMATCH = Guardrail(
    MetricName.SHADOW_MISMATCHED, "rate", "higher", 0.0, critical=True, against="budget", budget=0.0
)
CAS_BUDGET = Guardrail(
    MetricName.CAS_FAILURES, "rate", "higher", 0.0, True, against="budget", budget=0.02, margin=0.02
)
ERRORS = Guardrail(MetricName.MERGE_ERRORS, "rate", "higher", 0.0, True, against="baseline")


def records(
    path: MergePath, metric: str, values: Sequence[float], **meta: object
) -> list[MetricRecord]:
    return [
        MetricRecord(path, "words", 1000 + i, {metric: float(v)}, {"batch_id": f"b{i}", **meta})
        for i, v in enumerate(values)
    ]


def lognormal(seed: int, median: float, n: int, sigma: float = 0.5) -> list[float]:
    return list(np.random.default_rng(seed).lognormal(np.log(median), sigma, n))


def assert_json(verdict: Verdict) -> None:
    json.dumps(verdict.to_json(), allow_nan=False)  # the audit log stores it as is


def test_doubled_hold_time_against_the_previous_stage_rolls_back() -> None:
    legacy = records(LEGACY, "LockHoldTime", lognormal(1, 120_000, 200))
    now = records(TWO, "LockHoldTime", lognormal(2, 120, 60))
    before = records(TWO, "LockHoldTime", lognormal(3, 60, 60))

    verdict = judge(legacy + now, [HOLD], min_samples=30, reference=before)

    assert verdict.decision == "rollback"
    ev = verdict.evidence["guardrails"]["LockHoldTime"]
    assert ev["comparisons"]["baseline"]["status"] == "pass"  # still far below legacy
    ref = ev["comparisons"]["reference"]
    assert ref["status"] == "fail" and ref["p_value"] < 0.01 and ref["effect"] > 0.25
    assert "LockHoldTime" in verdict.reasons[0]
    assert_json(verdict)


def test_the_same_distribution_promotes() -> None:
    # 400 a side: enough for the ratio's upper confidence bound (1.14) to be within 1.25
    same = lognormal(4, 60, 400)
    stage = records(LEGACY, "LockHoldTime", lognormal(5, 120_000, 400)) + records(
        TWO, "LockHoldTime", same
    )
    verdict = judge(stage, [HOLD], min_samples=30, reference=records(TWO, "LockHoldTime", same))
    assert verdict.decision == "promote"
    assert verdict.evidence["guardrails"]["LockHoldTime"]["passed"] is True
    assert_json(verdict)


def test_significant_but_tiny_change_stays_within_tolerance() -> None:
    base = lognormal(6, 100, 3000, sigma=0.2)
    slower = [v * 1.05 for v in lognormal(7, 100, 3000, sigma=0.2)]
    verdict = judge(records(LEGACY, "LockHoldTime", base) + records(TWO, "LockHoldTime", slower),
                    [HOLD], min_samples=30)  # fmt: skip
    cmp = verdict.evidence["guardrails"]["LockHoldTime"]["comparisons"]["baseline"]
    assert 0.03 < cmp["effect"] < 0.07 and cmp["p_value"] == 1.0  # the null is "within 25 %"
    assert verdict.decision == "promote"


def test_too_few_samples_holds() -> None:
    stage = records(LEGACY, "LockHoldTime", [1, 2, 3] * 20) + records(TWO, "LockHoldTime", [9] * 5)
    verdict = judge(stage, [HOLD], min_samples=30)
    assert verdict.decision == "hold"
    assert any("too few candidate executions: 5 < 30" in r for r in verdict.reasons)
    assert verdict.evidence["guardrails"]["LockHoldTime"]["status"] == "insufficient"


def test_a_failing_non_critical_guardrail_holds_a_critical_one_rolls_back() -> None:
    slow_wait = records(LEGACY, "LockWaitTime", lognormal(8, 50, 40)) + records(
        TWO, "LockWaitTime", lognormal(9, 500, 40)
    )
    assert judge(slow_wait, [WAIT], min_samples=30).decision == "hold"
    critical = Guardrail(MetricName.LOCK_WAIT_TIME, "latency", "higher", 0.5, critical=True)
    assert judge(slow_wait, [critical], min_samples=30).decision == "rollback"


def test_lower_is_worse_is_judged_the_other_way() -> None:
    drop = Guardrail(MetricName.RECORDS_MERGED, "latency", "lower", 0.1, critical=True)
    stage = records(LEGACY, "RecordsMerged", lognormal(10, 1000, 40)) + records(
        TWO, "RecordsMerged", lognormal(11, 400, 40)
    )
    assert judge(stage, [drop], min_samples=30).decision == "rollback"
    higher = Guardrail(MetricName.RECORDS_MERGED, "latency", "higher", 0.1, critical=True)
    assert judge(stage, [higher], min_samples=30).decision == "promote"


def test_cas_failure_rate_regression_rolls_back_and_normal_rate_promotes() -> None:
    legacy = records(LEGACY, "CASFailures", [0] * 400)
    bad = records(TWO, "CASFailures", [1] * 30 + [0] * 70)
    ok = records(TWO, "CASFailures", [1] + [0] * 399)
    verdict = judge(legacy + bad, [CAS], min_samples=30)
    assert verdict.decision == "rollback"
    cmp = verdict.evidence["guardrails"]["CASFailures"]["comparisons"]["baseline"]
    assert (cmp["events_candidate"], cmp["rate_candidate"]) == (30, 0.3)
    # a legacy without events gives a lower bound of 0: only an absolute margin lets evidence
    # of no harm exist (1/400: upper bound 1.7 %, within 0 + 3 points)
    assert judge(legacy + ok, [CAS], min_samples=30).decision == "hold"
    with_margin = replace(CAS, margin=0.03)
    assert judge(legacy + ok, [with_margin], min_samples=30).decision == "promote"
    assert_json(verdict)


def test_shadow_mismatch_against_a_zero_budget_any_mismatch_fails() -> None:
    legacy = records(LEGACY, "LockHoldTime", [1.0] * 40)  # legacy never reports shadow numbers
    legacy += records(TWO, "LockHoldTime", [1.0] * 40)
    clean = records(TWO, "ShadowMismatched", [0] * 40, dry_run=True)
    one_bad = records(TWO, "ShadowMismatched", [0] * 39 + [1], dry_run=True)
    assert judge(legacy + clean, [MISMATCH], min_samples=1).decision == "promote"
    verdict = judge(legacy + one_bad, [MISMATCH], min_samples=1)
    assert verdict.decision == "rollback"
    assert verdict.evidence["decided_by"] == "ShadowMismatched"
    ev = verdict.evidence["guardrails"]["ShadowMismatched"]["comparisons"]["budget"]
    assert ev["test"] == "any-event" and ev["status"] == "fail"


def test_chunk_count_against_the_shadow_dry_run_of_the_same_batch() -> None:
    legacy = records(LEGACY, "ChunkCount", [3] * 40)
    same = records(TWO, "ChunkCount", [3] * 40, dry_run=True)
    differs = records(TWO, "ChunkCount", [3] * 39 + [4], dry_run=True)
    same_verdict = judge(legacy + same, [CHUNKS], min_samples=30)
    assert same_verdict.evidence["guardrails"]["ChunkCount"]["status"] == "pass"
    verdict = judge(legacy + differs, [CHUNKS], min_samples=30)
    assert verdict.decision == "rollback"
    ev = verdict.evidence["guardrails"]["ChunkCount"]["comparisons"]["checks"]
    assert (ev["n_checked"], ev["mismatches"], ev["examples"]) == (40, 1, [[3.0, 4.0]])


def test_chunk_count_against_what_the_split_planned_can_fail() -> None:
    """Both paths' ChunkCount come from the same request, so comparing them never fails; the
    split's plan can differ from what was merged (a chunk lost on the way)."""
    planned = [
        MetricRecord(TWO, "words", i, {"ChunkCount": 3.0 if i else 2.0}, {"planned_chunk_count": 3})
        for i in range(40)
    ]
    legacy_same = records(LEGACY, "ChunkCount", [3.0 if i else 2.0 for i in range(40)])
    verdict = judge(legacy_same + planned, [CHUNKS], min_samples=30)
    assert verdict.decision == "rollback"
    assert verdict.evidence["guardrails"]["ChunkCount"]["comparisons"]["checks"]["examples"] == [
        [3.0, 2.0]
    ]


def test_shadow_numbers_outside_shadow_runs_and_an_unrecorded_plan_do_not_block() -> None:
    stage = records(LEGACY, "LockHoldTime", lognormal(12, 120_000, 40)) + [
        MetricRecord(TWO, "words", 1, {"LockHoldTime": v}, {"batch_id": f"x{i}"})
        for i, v in enumerate(lognormal(13, 60, 40))
    ]
    verdict = judge(stage, [HOLD, CHUNKS, MISMATCH], min_samples=30)
    statuses = {k: g["status"] for k, g in verdict.evidence["guardrails"].items()}
    assert statuses == {
        "LockHoldTime": "pass",
        "ChunkCount": "n/a",  # no record carries the split's plan: said in the evidence
        "ShadowMismatched": "n/a",  # no shadow run in this window
    }
    assert verdict.decision == "promote"
    note = verdict.evidence["guardrails"]["ChunkCount"]["comparisons"]["checks"]["note"]
    assert "planned_chunk_count" in note


def test_planned_chunk_counts_on_too_few_executions_hold() -> None:
    few = [
        MetricRecord(TWO, "words", i, {"ChunkCount": 3.0}, {"planned_chunk_count": 3})
        for i in range(10)
    ]
    verdict = judge(few + records(TWO, "ChunkCount", [3.0] * 40), [CHUNKS], min_samples=30)
    assert verdict.decision == "hold"
    assert verdict.evidence["guardrails"]["ChunkCount"]["status"] == "insufficient"


def test_replayed_records_are_left_out() -> None:
    stage = records(LEGACY, "LockHoldTime", [100.0] * 40) + records(
        TWO, "LockHoldTime", [10_000.0] * 40, replayed=True
    )
    verdict = judge(stage, [HOLD], min_samples=30)
    assert verdict.decision == "hold"
    assert (
        verdict.evidence["guardrails"]["LockHoldTime"]["comparisons"]["baseline"]["n_candidate"]
        == 0
    )


def test_default_guardrails_on_a_healthy_stage_promote_with_serialisable_evidence() -> None:
    rng = np.random.default_rng(14)
    stage: list[MetricRecord] = []
    for path, hold in ((LEGACY, 120_000.0), (TWO, 18.0)):
        for i in range(700):  # no merge error in 700: upper bound 1.2 %, within the 1.5 points
            values = {
                "LockHoldTime": float(rng.lognormal(np.log(hold), 0.5)),
                "FinalMergeDuration": float(rng.lognormal(np.log(120_000), 0.3)),
                "LockWaitTime": 0.0,
                "CASFailures": 0.0,
                "MergeErrors": 0.0,
                "FallbackToLegacy": 0.0,
                "ChunkCount": 3.0,
            }
            meta = {"batch_id": f"b{i}", "planned_chunk_count": 3}
            stage.append(MetricRecord(path, "words", i, values, meta))
    verdict = judge(stage, DEFAULT_GUARDRAILS, min_samples=30)
    assert verdict.decision == "promote", verdict.reasons
    assert verdict.evidence["counts"] == {"candidate": 700, "baseline": 700, "reference": None}
    assert_json(verdict)


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "percentile"},
        {"worse": "sideways"},
        {"tolerance": -0.1},
        {"kind": "rate", "tolerance": 1.5},
        {"alpha": 0.0},
        {"against": "budget"},  # a budget guardrail without its budget
        {"budget": 10.0},  # a budget without against: budget
        {"kind": "rate", "against": "budget", "budget": 1.5},
    ],
)
def test_guardrail_values_are_checked(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "metric": "LockHoldTime",
        "kind": "latency",
        "worse": "higher",
        "tolerance": 0.2,
        "critical": True,
        **bad,
    }
    with pytest.raises(InvalidEventError):
        Guardrail(**fields)  # type: ignore[arg-type]


def test_min_samples_must_be_positive() -> None:
    with pytest.raises(InvalidEventError):
        judge([], [HOLD], min_samples=0)


def test_legacy_stragglers_at_the_full_stage_do_not_hold_it_forever() -> None:
    """At 100 % legacy runs only an execution pinned just before the promotion."""
    now = records(TWO, "LockHoldTime", lognormal(20, 60, 150))
    before = records(TWO, "LockHoldTime", lognormal(21, 60, 150))
    straggler = records(LEGACY, "LockHoldTime", [120_000.0])

    verdict = judge(now + straggler, [HOLD], min_samples=30, reference=before)

    assert verdict.decision == "promote", verdict.reasons
    sides = verdict.evidence["guardrails"]["LockHoldTime"]["comparisons"]
    assert sides["baseline"]["status"] == "n/a" and sides["reference"]["status"] == "pass"


def test_a_thin_baseline_still_holds_when_nothing_else_decides() -> None:
    now = records(TWO, "LockHoldTime", lognormal(22, 60, 40))
    straggler = records(LEGACY, "LockHoldTime", [120_000.0])
    assert judge(now + straggler, [HOLD], min_samples=30).decision == "hold"


def test_a_regression_is_still_caught_beside_a_thin_baseline() -> None:
    now = records(TWO, "LockHoldTime", lognormal(23, 240, 40))
    before = records(TWO, "LockHoldTime", lognormal(24, 60, 40))
    straggler = records(LEGACY, "LockHoldTime", [120_000.0])
    verdict = judge(now + straggler, [HOLD], min_samples=30, reference=before)
    assert verdict.decision == "rollback"


def test_a_critical_guardrail_without_its_control_holds_with_the_reason() -> None:
    """Before: a guardrail judged only against the previous stage passed as n/a at stage 1."""
    only_ref = Guardrail(MetricName.CAS_FAILURES, "rate", "higher", 0.0, True, against="reference")
    stage = records(LEGACY, "CASFailures", [0] * 400) + records(TWO, "CASFailures", [0] * 100)
    verdict = judge(stage, [only_ref], min_samples=30)
    assert verdict.decision == "hold"
    assert verdict.evidence["guardrails"]["CASFailures"]["status"] == "insufficient"
    assert "CASFailures" in verdict.reasons[0] and "reference" in verdict.reasons[0]
    no_legacy = judge(records(TWO, "MergeErrors", [0] * 100), [ERRORS], min_samples=30)
    assert no_legacy.decision == "hold" and "MergeErrors" in no_legacy.reasons[0]


def test_cas_failures_against_the_budget_fail_hold_or_pass() -> None:
    """Over budget rolls back; under it passes only once shown below budget + margin."""
    legacy = records(LEGACY, "CASFailures", [0] * 100)  # legacy has none, and is not asked
    over = judge(legacy + records(TWO, "CASFailures", [1] * 40 + [0] * 560), [CAS_BUDGET],
                 min_samples=30)  # fmt: skip
    assert over.decision == "rollback" and over.evidence["decided_by"] == "CASFailures"
    few = judge(legacy + records(TWO, "CASFailures", [1] + [0] * 39), [CAS_BUDGET], min_samples=30)
    assert few.decision == "hold"  # 2.5 % in 40: not over budget, not shown within 4 % either
    assert "noninferiority_p" in few.reasons[0]
    many = judge(legacy + records(TWO, "CASFailures", [1] * 4 + [0] * 396), [CAS_BUDGET],
                 min_samples=30)  # fmt: skip
    assert many.decision == "promote", many.reasons


def test_the_verdict_names_the_guardrail_that_decided() -> None:
    stage = (
        records(LEGACY, "MergeErrors", [0] * 990 + [1] * 10)
        + records(TWO, "MergeErrors", [1] * 20 + [0] * 180)
        + records(TWO, "CASFailures", [0] * 200)
    )
    verdict = judge(stage, [CAS_BUDGET, ERRORS], min_samples=30)
    assert verdict.decision == "rollback"
    assert verdict.evidence["decided_by"] == "MergeErrors"
    assert verdict.reasons[0] == "decided by MergeErrors"
    assert verdict.evidence["guardrails"]["CASFailures"]["status"] != "fail"


def test_holm_family_takes_the_smallest_critical_alpha() -> None:
    verdict = judge(records(TWO, "CASFailures", [0] * 40), [CAS_BUDGET], min_samples=30)
    assert verdict.evidence["family_alpha"] == 0.01


def test_shadow_mismatches_against_legacy_are_not_missing_outside_shadow_runs() -> None:
    """A plan may judge ShadowMismatched against both sides (the demo's does)."""
    both = Guardrail(MetricName.SHADOW_MISMATCHED, "rate", "higher", 0.0, critical=True)
    stage = records(LEGACY, "LockHoldTime", [1.0] * 40) + records(TWO, "LockHoldTime", [1.0] * 40)
    verdict = judge(stage, [both], min_samples=30)
    assert verdict.decision == "promote"
    assert verdict.evidence["guardrails"]["ShadowMismatched"]["status"] == "n/a"


def test_a_holdback_is_a_control_however_few_its_legacy_executions() -> None:
    """The controller says the stage routes 95 %: five legacy executions beside 150 are a thin
    control (hold), not the full stage's missing one (n/a, which would let it complete)."""
    now = records(TWO, "FinalMergeDuration", lognormal(25, 4000, 150))
    before = records(TWO, "FinalMergeDuration", lognormal(26, 4000, 150))
    legacy = records(LEGACY, "FinalMergeDuration", lognormal(27, 4000, 5))
    duration = Guardrail(MetricName.FINAL_MERGE_DURATION, "latency", "higher", 0.1, True,
                         against="baseline")  # fmt: skip
    kept = judge(now + legacy, [duration], min_samples=30, reference=before, routed_percent=95)
    side = kept.evidence["guardrails"]["FinalMergeDuration"]["comparisons"]["baseline"]
    assert (kept.decision, side["status"]) == ("hold", "insufficient")
    full = judge(now + legacy, [duration], min_samples=30, reference=before, routed_percent=100)
    side = full.evidence["guardrails"]["FinalMergeDuration"]["comparisons"]["baseline"]
    assert (full.decision, side["status"]) == ("promote", "n/a")
