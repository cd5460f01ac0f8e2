"""What counts as evidence of no harm at small sizes (issue 13, judge5): a side whose values all
agree, and a shadow guardrail with few shadow runs. The attacks themselves are in
``test_judge_attack13.py``; these are the liveness side and the numbers of each rule."""

from __future__ import annotations

import numpy as np
import pytest

from rollout import checks
from rollout.guardrails import DEFAULT_GUARDRAILS
from rollout.judge import judge_samples
from rollout.metric_names import MetricName as M
from rollout.samples import Samples

DURATION = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.FINAL_MERGE_DURATION)


def _same(value: float, n: int) -> Samples:
    name = M.FINAL_MERGE_DURATION.value
    both = np.full(n, value)
    return Samples(
        candidate={name: both}, baseline={name: both}, n_candidate=n, n_baseline=n,
        routed_percent=50.0,
    )  # fmt: skip


@pytest.mark.parametrize("value", [0.0, 7.0, 4000.0])
def test_a_truly_constant_identical_metric_passes_at_a_realistic_size(value: float) -> None:
    """The variance prior must not hold a metric that really is constant on both paths: at the
    packaged floor (300 a side) and the judge's own level it passes."""
    verdict = judge_samples(_same(value, 300), [DURATION], min_samples=300)
    assert verdict.decision == "promote", verdict.reasons
    cmp = verdict.evidence["guardrails"][M.FINAL_MERGE_DURATION]["comparisons"]["baseline"]
    assert 1.0 < cmp["upper_bound"] <= 1.2


def test_a_constant_metric_at_ten_a_side_is_not_yet_evidence() -> None:
    """The other side of the prior: ten equal values a side are not a certain mean. Without the
    prior the bound was exactly 1 and this promoted (the attack's zero-inflated lock wait)."""
    verdict = judge_samples(_same(0.0, 10), [DURATION], min_samples=10)
    assert verdict.decision == "hold"
    assert "upper bound of the ratio" in verdict.reasons[0]
    ev = checks.latency_vs(np.zeros(10), np.zeros(10), 0.1, "higher", 10, margin=0.1)
    assert ev["variance"] == pytest.approx(2 * checks.PRIOR_VARIANCE / 10 / 10)


def test_the_prior_is_negligible_beside_a_real_spread() -> None:
    rng = np.random.default_rng(1305)
    x, y = rng.normal(0.0, 0.8, 300), rng.normal(0.0, 0.8, 300)
    plug_in = x.var(ddof=1) / 300 + y.var(ddof=1) / 300
    with_prior = checks._side_variance(x) + checks._side_variance(y)
    assert with_prior == pytest.approx(plug_in, rel=0.01)
    assert with_prior > plug_in


# -- ShadowMismatched: budget 0 --------------------------------------------------------------------
SHADOW = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.SHADOW_MISMATCHED)


def _shadow(values: np.ndarray, min_samples: int = 300) -> dict[str, object]:
    name = M.SHADOW_MISMATCHED.value
    samples = Samples(candidate={name: values}, baseline={}, n_candidate=300, routed_percent=0.0)
    verdict = judge_samples(samples, [SHADOW], min_samples=min_samples)
    return {"decision": verdict.decision, **verdict.evidence["guardrails"][name]}


def test_a_shadow_guardrail_passes_on_min_samples_clean_shadow_runs() -> None:
    """A pass needs the floor every other guardrail needs: min_samples shadow runs, none with a
    mismatch (one run passed before). With 0 mismatches in 300 the rate's confidence sequence
    at α = 0.0125 ends below 2 %, where one run bounded nothing."""
    held = _shadow(np.zeros(299))
    assert held["status"] == "insufficient" and held["decision"] == "hold"
    passed = _shadow(np.zeros(300))
    assert passed["status"] == "pass" and passed["decision"] == "promote"


def test_one_shadow_mismatch_still_rolls_back_at_once() -> None:
    """Below the floor too: a mismatch is a fact, not an estimate."""
    found = _shadow(np.array([0.0, 1.0]))
    assert found["decision"] == "rollback" and found["status"] == "fail"


def test_no_shadow_run_in_the_window_is_still_nothing_to_judge() -> None:
    found = _shadow(np.zeros(0))
    assert found["status"] == "n/a" and found["decision"] == "promote"
