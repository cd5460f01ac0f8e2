"""The judge under a switchback flag: latency compared unit by unit, not execution by execution.

Executions of one unit (a collection and time window on one path) share its lock, its builds and
its load, so they are not independent draws. Counted as independent they make the judge sure of
what a handful of units cannot show; counted as units they do not.
"""

from __future__ import annotations

import numpy as np

from rollout.guardrails import Guardrail
from rollout.judge import judge
from rollout.metric_names import MetricName
from rollout.samples import by_unit, collect
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath

LEGACY, TWO = MergePath.LEGACY, MergePath.TWO_PHASE
DURATION = MetricName.FINAL_MERGE_DURATION.value
# the demo's guardrail: the ratio of geometric means must be shown within 1 + 0.1 + 0.3
GUARD = Guardrail(
    MetricName.FINAL_MERGE_DURATION, "latency", "higher", 0.1, critical=True,
    against="baseline", margin=0.3,
)  # fmt: skip


def unit_records(
    path: MergePath, rng: np.random.Generator, units: int, per_unit: int, median: float,
    *, between: float = 0.5, within: float = 0.05, tag: bool = True, prefix: str = "",
) -> list[MetricRecord]:  # fmt: skip
    """``units`` units of ``per_unit`` executions: a shared lognormal effect per unit (sigma
    ``between``) times a small one per execution (``within``)."""
    out = []
    for u in range(units):
        shared = rng.lognormal(np.log(median), between)
        for i in range(per_unit):
            meta: dict[str, object] = {"batch_id": f"{prefix}{path.value}-{u}-{i}"}
            if tag:
                meta["decision"] = {"path": path.value, "unit": f"{prefix}{path.value}@{u}"}
            value = shared * rng.lognormal(0.0, within)
            out.append(MetricRecord(path, "words", u * 100 + i, {DURATION: value}, meta))
    return out


def test_each_unit_is_one_value_its_geometric_mean() -> None:
    recs = [
        MetricRecord(TWO, "words", 1, {DURATION: 1.0}, {"decision": {"unit": "words@1"}}),
        MetricRecord(TWO, "words", 2, {DURATION: 7.0}, {"decision": {"unit": "words@1"}}),
        MetricRecord(TWO, "lines", 3, {DURATION: 5.0}, {"decision": {"unit": "lines@1"}}),
        MetricRecord(TWO, "lines", 4, {DURATION: -3.0}, {"decision": {"unit": "lines@2"}}),
    ]
    values = by_unit(recs)[DURATION]
    # sorted by unit: lines@1, lines@2, words@1; sqrt((1+1)(1+7)) - 1 = 3
    assert values[0] == 5.0 and values[1] == -3.0  # a broken value stays visible to the test
    assert abs(values[2] - 3.0) < 1e-12


def test_a_switchback_window_counts_units_and_a_per_execution_one_counts_executions() -> None:
    rng = np.random.default_rng(1)
    tagged = unit_records(TWO, rng, 4, 20, 1000) + unit_records(LEGACY, rng, 12, 20, 1000)
    ev = judge(tagged, [GUARD], min_samples=10).evidence["guardrails"][DURATION]
    side = ev["comparisons"]["baseline"]
    assert side["unit"] == "switchback"
    assert (side["n_candidate"], side["n_other"]) == (4, 12)
    assert (side["executions_candidate"], side["executions_other"]) == (80, 240)
    assert ev["status"] == "insufficient"  # 4 units are too few, however many executions
    assert "fewer than 10 units a side" in " ".join(judge(tagged, [GUARD], min_samples=3).reasons)

    untagged = [MetricRecord(r.path, r.collection, r.timestamp_ms, r.values, {}) for r in tagged]
    side = judge(untagged, [GUARD], min_samples=10).evidence["guardrails"][DURATION]
    assert "unit" not in side["comparisons"]["baseline"]
    assert side["comparisons"]["baseline"]["n_candidate"] == 80


def test_one_execution_without_a_unit_keeps_the_whole_window_per_execution() -> None:
    rng = np.random.default_rng(2)
    recs = unit_records(TWO, rng, 12, 3, 1000) + unit_records(LEGACY, rng, 12, 3, 1000)
    recs.append(MetricRecord(LEGACY, "words", 9, {DURATION: 1000.0}, {"batch_id": "old"}))
    samples = collect(recs)
    assert samples.unit_candidate == {} and samples.unit_baseline == {}
    side = judge(recs, [GUARD], min_samples=10).evidence["guardrails"][DURATION]["comparisons"]
    assert side["baseline"]["n_other"] == 37


def promotions(tag: bool, seeds: range) -> int:
    """Windows of 12 candidate and 36 baseline units, 20 executions each, where the candidate
    is truly 1.45x slower (beyond the allowed 1.4): how many does the judge promote?"""
    promoted = 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        recs = unit_records(TWO, rng, 12, 20, 1450, tag=tag) + unit_records(
            LEGACY, rng, 36, 20, 1000, tag=tag
        )
        promoted += judge(recs, [GUARD], min_samples=10).decision == "promote"
    return promoted


def test_unit_level_comparison_does_not_promote_a_slower_candidate_that_units_hide() -> None:
    seeds = range(200)
    by_units = promotions(True, seeds)
    # negative control: the same executions taken as independent draws promote a candidate
    # 1.45x slower in many windows (the variance of 240 draws, not of 12 units)
    per_execution = promotions(False, seeds)
    assert per_execution >= 20, per_execution
    assert by_units <= 4, by_units  # at most 2 %: the judge's stage α is larger than that


def test_a_failed_merge_without_a_unit_leaves_the_durations_by_unit() -> None:
    # a failed merge's record has MergeErrors and no duration (and no decision): the durations of
    # the window are still all named by unit, so they are still compared by unit
    rng = np.random.default_rng(3)
    recs = unit_records(TWO, rng, 10, 3, 1000) + unit_records(LEGACY, rng, 10, 3, 1000)
    recs.append(MetricRecord(TWO, "words", 5, {MetricName.MERGE_ERRORS.value: 1.0}, {}))
    samples = collect(recs)
    assert len(samples.unit_candidate[DURATION]) == 10
    assert MetricName.MERGE_ERRORS.value not in samples.unit_candidate
    side = judge(recs, [GUARD], min_samples=10).evidence["guardrails"][DURATION]["comparisons"]
    assert (side["baseline"]["unit"], side["baseline"]["n_candidate"]) == ("switchback", 10)


def test_a_unit_that_took_both_paths_is_compared_on_neither_side() -> None:
    # a stage promoted mid-window: the unit's executions pinned before the promote ran legacy,
    # those decided after it two-phase, beside them on the same lock. Neither part is a clean
    # unit of its arm (the interference switchback exists to avoid); the judge leaves it out.
    rng = np.random.default_rng(4)
    recs = unit_records(TWO, rng, 12, 3, 1000) + unit_records(LEGACY, rng, 12, 3, 1000)
    both = {"decision": {"unit": "words@7"}}
    recs += [MetricRecord(LEGACY, "words", 1, {DURATION: 1000.0}, both)]
    recs += [MetricRecord(TWO, "words", 2, {DURATION: 5000.0}, both)]
    samples = collect(recs)
    assert (len(samples.unit_candidate[DURATION]), len(samples.unit_baseline[DURATION])) == (12, 12)
    side = judge(recs, [GUARD], min_samples=10).evidence["guardrails"][DURATION]["comparisons"]
    assert (side["baseline"]["n_candidate"], side["baseline"]["n_other"]) == (12, 12)
    assert side["baseline"]["mixed_units"] == 1
    assert (side["baseline"]["executions_candidate"], side["baseline"]["executions_other"]) == (
        37,
        37,
    )


def test_a_window_whose_units_all_took_both_paths_is_not_judged_per_execution() -> None:
    # leaving every unit out must not turn the window back into a per-execution comparison
    both = [
        MetricRecord(path, "words", u, {DURATION: 1000.0}, {"decision": {"unit": f"words@{u}"}})
        for u in range(12)
        for path in (TWO, LEGACY)
    ]
    ev = judge(both, [GUARD], min_samples=10).evidence["guardrails"][DURATION]
    side = ev["comparisons"]["baseline"]
    assert (side["unit"], side["n_candidate"], side["n_other"]) == ("switchback", 0, 0)
    assert side["mixed_units"] == 12 and ev["status"] == "insufficient"
