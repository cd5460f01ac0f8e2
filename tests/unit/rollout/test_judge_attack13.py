"""Adversarial review of the evidence-of-no-harm rule (issue 13): ways a stage could pass
without evidence of no harm, or never pass at all, and inputs the plan should refuse.

Fixed here: a negative latency (a broken record) no longer counts as a 0 ms execution that
makes a slower candidate look faster; a budget of 0 refuses a margin it cannot use. The
``xfail(strict=True)`` tests are design decisions left to the lead (see each reason).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from rollout import checks
from rollout.guardrails import DEFAULT_GUARDRAILS, Guardrail
from rollout.judge import judge_samples
from rollout.metric_names import MetricName as M
from rollout.plan import parse_plan
from rollout.plan_fields import PlanError
from rollout.samples import Samples
from snapmerge.errors import InvalidEventError

DURATION = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.FINAL_MERGE_DURATION)
SHADOW = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.SHADOW_MISMATCHED)
PLAN = yaml.safe_load((Path(__file__).parents[3] / "rollout" / "default_plan.yaml").read_text())
INDEX = {g["metric"]: i for i, g in enumerate(PLAN["guardrails"])}


def _plan_with(metric: str, **fields: object) -> dict[str, object]:
    plan = copy.deepcopy(PLAN)
    plan["guardrails"][INDEX[metric]].update(fields)
    return plan


def _duration(cand: np.ndarray, base: np.ndarray, routed: float = 40.0) -> Samples:
    name = M.FINAL_MERGE_DURATION.value
    return Samples(
        candidate={name: cand},
        baseline={name: base},
        n_candidate=len(cand),
        n_baseline=len(base),
        routed_percent=routed,
    )


# -- fixed ----------------------------------------------------------------------------------------
def test_negative_latencies_never_let_a_slower_candidate_pass() -> None:
    """parse_emf accepts any finite number. Half the candidate's FinalMergeDuration records
    carry -5 ms (a clock going backwards): the judge used to clip them to 0 ms, so a candidate
    50 % slower on every real execution looked far faster than legacy and promoted. Now the bad
    values are left out, named in the reason, and the guardrail cannot pass while they remain."""
    rng = np.random.default_rng(1301)
    real = 1500.0 * np.exp(rng.normal(0.0, 0.2, 200))  # 1.5 x legacy's geometric mean
    cand = np.concatenate([real, np.full(200, -5.0)])
    base = 1000.0 * np.exp(rng.normal(0.0, 0.2, 400))
    verdict = judge_samples(_duration(cand, base), [DURATION], min_samples=100)
    assert verdict.decision != "promote"
    cmp = verdict.evidence["guardrails"][M.FINAL_MERGE_DURATION]["comparisons"]["baseline"]
    assert cmp["invalid_candidate"] == 200 and cmp["n_candidate"] == 200
    assert cmp["median_candidate"] > 1400  # judged on the real executions only
    assert any("negative or non-finite" in r for r in verdict.reasons)


def test_a_negative_latency_alone_holds_a_healthy_stage_with_the_reason() -> None:
    rng = np.random.default_rng(1302)
    cand = 1000.0 * np.exp(rng.normal(0.0, 0.1, 2000))
    base = 1000.0 * np.exp(rng.normal(0.0, 0.1, 2000))
    healthy = judge_samples(_duration(cand, base), [DURATION], min_samples=100)
    assert healthy.decision == "promote"  # negative control: without the bad record it passes
    broken = judge_samples(_duration(np.append(cand, -1.0), base), [DURATION], min_samples=100)
    assert broken.decision == "hold"
    assert "FinalMergeDuration" in broken.reasons[0] and "invalid_candidate=1" in broken.reasons[0]


def test_a_budget_of_zero_refuses_a_margin_it_cannot_use() -> None:
    """ShadowMismatched with budget 0 fails on any event: a margin there was silently ignored
    (the plan said "pass below 5 %", the judge passed anything without a mismatch)."""
    with pytest.raises(PlanError, match=r"guardrails\[\d\]\.margin.*budget of 0"):
        parse_plan(_plan_with("ShadowMismatched", margin=0.05))
    with pytest.raises(InvalidEventError, match="of 0"):
        replace(SHADOW, margin=0.05)
    parse_plan(_plan_with("ShadowMismatched", margin=0))  # a zero margin is still accepted


# -- design decisions left open -------------------------------------------------------------------
def test_a_zero_sample_variance_is_not_evidence_of_no_harm() -> None:
    """A candidate 0 ms in 85 % of executions and 5 s otherwise (geometric mean of 1 + ms ~3.6x
    legacy's, 0 ms in 97 %), looked at after every execution from 10 to 40 a side at α = 0.05:
    whenever both sides' first values are all 0 the bound is 'exactly 1' and it passes."""
    rng = np.random.default_rng(1303)
    trials, passed = 1000, 0
    for _ in range(trials):
        cand = np.where(rng.random(40) < 0.85, 0.0, 5000.0)
        base = np.where(rng.random(40) < 0.97, 0.0, 5000.0)
        for n in range(10, 41):
            ev = checks.latency_vs(cand[:n], base[:n], 0.1, "higher", 10, margin=0.1)
            if ev["enough"] and checks.noninferiority(ev, 0.05) is None:
                passed += 1
                break
    assert passed / trials <= 0.05  # plug-in variance: 0.126; with the prior: 0.005


def test_the_plan_refuses_a_comparison_an_identical_candidate_can_never_pass() -> None:
    with pytest.raises(PlanError, match="margin"):
        parse_plan(_plan_with("MergeErrors", margin=0))
    with pytest.raises(PlanError, match="margin"):  # allowed ratio 1: never shown for A/A
        parse_plan(_plan_with("FinalMergeDuration", tolerance=0, margin=0))


def test_the_demo_plan_lets_an_identical_candidate_pass_at_some_size() -> None:
    from handlers.demo import parse_options
    from handlers.demo_options import demo_plan

    opts = parse_options(["--quick", "--seed", "1", "--out", "/nonexistent-atk13"])
    plan = demo_plan(opts, "aa")
    errors = next(g for g in plan.guardrails if g.metric == M.MERGE_ERRORS)
    zeros = np.zeros(100_000)  # a hundred thousand healthy executions a side, no error anywhere
    s = {M.MERGE_ERRORS.value: zeros}
    samples = Samples(
        candidate=s, baseline=s, reference=s, reference_baseline=s,
        n_candidate=len(zeros), n_baseline=len(zeros), routed_percent=50.0,
    )  # fmt: skip
    verdict = judge_samples(samples, [errors], min_samples=plan.stages[0].min_samples)
    assert verdict.decision == "promote", verdict.reasons


def test_a_shadow_guardrail_needs_more_than_one_shadow_run_to_pass() -> None:
    shadow = {M.SHADOW_MISMATCHED.value: np.zeros(1)}
    samples = Samples(candidate=shadow, baseline={}, n_candidate=300, routed_percent=0.0)
    verdict = judge_samples(samples, [SHADOW], min_samples=300)
    assert verdict.evidence["guardrails"][M.SHADOW_MISMATCHED]["status"] != "pass"


@pytest.mark.xfail(
    strict=True,
    reason="design (low): latencies are compared as log(1 + ms), so at a few ms the 'ratio of "
    "geometric means' is compressed toward 1 (2.5 ms vs 1 ms reads 1.75); only LockWaitTime "
    "(non-critical) lives at that scale in the default plan",
)
def test_a_latency_ratio_is_not_compressed_at_small_milliseconds() -> None:
    rng = np.random.default_rng(1304)
    lock_wait = Guardrail(M.LOCK_WAIT_TIME, "latency", "higher", 0.5, False, against="baseline")
    cand = 0.9 * np.exp(rng.normal(0.0, 0.05, 5000))  # 2.25 x legacy's, beyond 1.5
    base = 0.4 * np.exp(rng.normal(0.0, 0.05, 5000))
    name = M.LOCK_WAIT_TIME.value
    samples = Samples(
        candidate={name: cand}, baseline={name: base}, n_candidate=5000, n_baseline=5000,
        routed_percent=50.0,
    )  # fmt: skip
    assert judge_samples(samples, [lock_wait], min_samples=100).decision != "promote"


def test_negative_lock_holds_do_not_count_as_within_the_budget() -> None:
    """LockHoldTime against its 25 ms budget counts executions beyond it: a -1 ms hold used to
    count as one within it, so broken records could carry a median of 40 ms below the budget."""
    hold = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.LOCK_HOLD_TIME)
    rng = np.random.default_rng(1305)
    slow = rng.uniform(30.0, 60.0, 400)  # every real hold beyond the budget
    values = np.concatenate([slow, np.full(600, -1.0)])
    clean = {M.LOCK_HOLD_TIME.value: values}
    verdict = judge_samples(
        Samples(candidate=clean, baseline={}, clean=clean, n_candidate=1000),
        [hold],
        min_samples=100,
    )
    ev = verdict.evidence["guardrails"][M.LOCK_HOLD_TIME]
    assert verdict.decision == "rollback"  # judged on the real holds only: all beyond
    assert ev["comparisons"]["budget"]["invalid_candidate"] == 600
    healthy = {M.LOCK_HOLD_TIME.value: np.append(rng.uniform(5.0, 15.0, 1000), -1.0)}
    held = judge_samples(
        Samples(candidate=healthy, baseline={}, clean=healthy, n_candidate=1001),
        [hold],
        min_samples=100,
    )
    assert held.decision == "hold" and "invalid_candidate=1" in held.reasons[0]


def test_negative_event_counts_do_not_dilute_a_rate() -> None:
    """A MergeErrors or CASFailures value of -1 used to count as an execution without the event:
    enough of them diluted a 5 % CAS failure rate below its budget + margin (2 % + 2 points)."""
    cas = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.CAS_FAILURES)
    errors = next(g for g in DEFAULT_GUARDRAILS if g.metric == M.MERGE_ERRORS)
    rng = np.random.default_rng(1306)
    real = (rng.random(1000) < 0.05).astype(float)
    broken = np.concatenate([real, np.full(9000, -1.0)])
    name = M.CAS_FAILURES.value
    samples = Samples(candidate={name: broken}, baseline={}, n_candidate=10_000)
    ev = judge_samples(samples, [cas], min_samples=100).evidence["guardrails"][name]
    assert ev["status"] != "pass" and ev["comparisons"]["budget"]["invalid_candidate"] == 9000
    base = (rng.random(10_000) < 0.002).astype(float)
    name = M.MERGE_ERRORS.value
    samples = Samples(
        candidate={name: broken}, baseline={name: base}, n_candidate=10_000, n_baseline=10_000,
        routed_percent=50.0,
    )  # fmt: skip
    verdict = judge_samples(samples, [errors], min_samples=100)
    assert verdict.decision != "promote"
    assert "invalid_candidate=9000" in verdict.reasons[-1]


def test_a_plan_refuses_a_guardrail_judged_only_against_the_previous_stage() -> None:
    """`against: reference` has no previous stage at the first stage, which holds as missing
    evidence on every look: a plan with one could never leave its first stage."""
    with pytest.raises(PlanError, match="against"):
        parse_plan(_plan_with("FinalMergeDuration", against="reference"))


def test_a_both_guardrail_lets_a_healthy_first_stage_pass() -> None:
    plan = parse_plan(_plan_with("FinalMergeDuration", against="both"))
    duration = next(g for g in plan.guardrails if g.metric == M.FINAL_MERGE_DURATION)
    rng = np.random.default_rng(1307)
    cand = 1000.0 * np.exp(rng.normal(0.0, 0.1, 20_000))
    base = 1000.0 * np.exp(rng.normal(0.0, 0.1, 20_000))
    verdict = judge_samples(
        _duration(cand, base, routed=plan.stages[0].routed), [duration], min_samples=300
    )
    assert verdict.decision == "promote", verdict.reasons
