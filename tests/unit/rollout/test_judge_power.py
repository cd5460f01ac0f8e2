"""A guardrail passes only when its test could have failed at the sample size it had.

The flaw these tests pin down: with ``min_samples`` 10, a lock hold judged against a 25 ms budget
"passed" even when every one of the ten executions exceeded the budget, because after Holm no
outcome of ten executions can reach α. Every kind of comparison now holds ("not enough data to be
able to reject") until the worst outcome at its n would have been rejected.
"""

from __future__ import annotations

import numpy as np

from rollout.judge import DEFAULT_GUARDRAILS, Guardrail, Samples, judge_samples
from rollout.metric_names import MetricName as M

HOLD_BUDGET = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.LOCK_HOLD_TIME)
DURATION = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.FINAL_MERGE_DURATION)
ERRORS = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.MERGE_ERRORS)
CAS = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.CAS_FAILURES)
FAMILY = [HOLD_BUDGET, DURATION, ERRORS, CAS]  # the packaged plan's Holm family: 0.01 / 4


def hold_samples(values: np.ndarray) -> Samples:
    n = len(values)
    clean = {M.LOCK_HOLD_TIME.value: values}
    return Samples(candidate=clean, baseline={}, clean=clean, n_candidate=n)


def test_all_beyond_budget_at_the_floor_holds_instead_of_passing() -> None:
    rng = np.random.default_rng(13)
    every_one_over = rng.uniform(30.0, 60.0, 10)  # all above the 25 ms budget
    verdict = judge_samples(hold_samples(every_one_over), FAMILY, min_samples=10)
    ev = verdict.evidence["guardrails"][M.LOCK_HOLD_TIME]
    assert verdict.decision == "hold"
    assert ev["status"] == "insufficient" and ev["passed"] is False
    assert "not enough data to be able to reject" in ev["comparisons"]["budget"]["power"]
    assert any("not enough data to be able to reject" in r for r in verdict.reasons)


def test_healthy_holds_at_the_floor_and_passes_once_a_failure_was_possible() -> None:
    rng = np.random.default_rng(14)
    healthy = rng.lognormal(np.log(18.0), 0.15, 40)
    small = judge_samples(hold_samples(healthy[:10]), [HOLD_BUDGET], min_samples=10)
    assert small.decision == "hold"  # alone in its family (α 0.01): ten all-beyond give p 0.012
    enough = judge_samples(hold_samples(healthy), [HOLD_BUDGET], min_samples=10)
    assert enough.decision == "promote"
    # and the outcome the rule reasons about is rejected at that n: the test can fail
    over = judge_samples(hold_samples(healthy + 100.0), [HOLD_BUDGET], min_samples=10)
    assert over.decision == "rollback"


def test_the_power_level_follows_holm_over_the_family() -> None:
    """Thirteen executions reach 0.01 alone but not 0.01 / 4 with three more critical
    guardrails judged beside it (all with enough power of their own)."""
    rng = np.random.default_rng(15)
    hold = rng.lognormal(np.log(18.0), 0.15, 13)
    alone = judge_samples(hold_samples(hold), [HOLD_BUDGET], min_samples=10)
    assert alone.evidence["guardrails"][M.LOCK_HOLD_TIME]["status"] == "pass"
    n = 4000
    cand = {
        M.LOCK_HOLD_TIME.value: hold,
        M.FINAL_MERGE_DURATION.value: rng.lognormal(8.3, 0.8, n),
        M.MERGE_ERRORS.value: np.zeros(n),
        M.CAS_FAILURES.value: np.zeros(n),
    }
    base = {M.FINAL_MERGE_DURATION.value: rng.lognormal(8.3, 0.8, n), M.MERGE_ERRORS.value:
            (rng.random(n) < 0.01).astype(float)}  # fmt: skip
    s = Samples(candidate=cand, baseline=base, clean={M.LOCK_HOLD_TIME.value: hold},
                n_candidate=n, n_baseline=n)  # fmt: skip
    together = judge_samples(s, FAMILY, min_samples=10)
    found = together.evidence["guardrails"]
    assert found[M.LOCK_HOLD_TIME]["status"] == "insufficient"
    assert all(found[g.metric]["status"] == "pass" for g in (DURATION, ERRORS, CAS))


def test_latency_against_legacy_holds_at_the_floor() -> None:
    """Ten a side: even every two-phase merge slower than every legacy one x 1.1 would not be
    rejected at 0.01, so a pass there is no evidence."""
    rng = np.random.default_rng(16)
    for n, wanted in ((10, "insufficient"), (60, "pass")):
        s = Samples(
            candidate={M.FINAL_MERGE_DURATION.value: rng.lognormal(8.3, 0.8, n)},
            baseline={M.FINAL_MERGE_DURATION.value: rng.lognormal(8.3, 0.8, n)},
            n_candidate=n,
            n_baseline=n,
        )
        verdict = judge_samples(s, [DURATION], min_samples=10)
        cmp = verdict.evidence["guardrails"][M.FINAL_MERGE_DURATION]["comparisons"]["baseline"]
        assert cmp["status"] == wanted, (n, cmp)
        assert (cmp["p_extreme"] <= DURATION.alpha) == (wanted == "pass")


def test_a_rate_against_legacy_holds_until_a_failure_was_possible() -> None:
    """At a 1 % share with 2 candidate executions, even both being errors cannot reject."""
    for n_c, wanted in ((2, "insufficient"), (12, "pass")):
        s = Samples(
            candidate={M.MERGE_ERRORS.value: np.zeros(n_c)},
            baseline={M.MERGE_ERRORS.value: np.r_[np.ones(3), np.zeros(197)]},
            n_candidate=n_c,
            n_baseline=200,
        )
        verdict = judge_samples(s, [ERRORS], min_samples=1)
        cmp = verdict.evidence["guardrails"][M.MERGE_ERRORS]["comparisons"]["baseline"]
        assert cmp["status"] == wanted, (n_c, cmp)


def test_a_non_critical_guardrail_uses_its_own_alpha() -> None:
    wait = Guardrail(M.LOCK_WAIT_TIME, "latency", "higher", 0.5, critical=False, alpha=0.2,
                     against="budget", budget=100.0)  # fmt: skip
    values = np.full(4, 10.0)  # four all-beyond give p 0.19 (< 0.2); three give 0.29
    s4 = Samples(candidate={M.LOCK_WAIT_TIME.value: values}, baseline={},
                 clean={M.LOCK_WAIT_TIME.value: values}, n_candidate=4)  # fmt: skip
    assert judge_samples(s4, [HOLD_BUDGET, wait], min_samples=1).evidence["guardrails"][
        M.LOCK_WAIT_TIME]["status"] == "pass"  # fmt: skip
    s3 = Samples(candidate={M.LOCK_WAIT_TIME.value: values[:3]}, baseline={},
                 clean={M.LOCK_WAIT_TIME.value: values[:3]}, n_candidate=3)  # fmt: skip
    assert judge_samples(s3, [HOLD_BUDGET, wait], min_samples=1).evidence["guardrails"][
        M.LOCK_WAIT_TIME]["status"] == "insufficient"  # fmt: skip
