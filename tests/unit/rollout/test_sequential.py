"""Each anytime-valid test's false-rejection rate when read at every look, on seeded data.

1,000 trials of 20 looks each: at a true rate of 5 % the observed rate stays under 3.5 % with
probability ~1 %, so "< 3.5 %" tells a test at 2 % from one at 5 %. The negative control reads
a fixed-sample test the same way and must exceed 5 % — the inflation these tests exist to stop.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from rollout import checks
from rollout.judge import holm
from rollout.sequential import bernoulli_above_p, bernoulli_below_p, mean_shift_p

TRIALS = 1000
LOOKS = np.linspace(30, 600, 20).astype(int)
ALPHA = 0.05
TELLS_2_FROM_5 = 0.035


def peeking_rate(reject_at_some_look: object, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = sum(bool(reject_at_some_look(rng)) for _ in range(TRIALS))  # type: ignore[operator]
    return hits / TRIALS


def test_mean_shift_keeps_alpha_over_twenty_looks_and_a_fixed_test_does_not() -> None:
    tol = 0.1  # the null's boundary: the candidate exactly tolerance slower (in log)

    def draw(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(math.log1p(tol), 0.8, LOOKS[-1]), rng.normal(0.0, 0.8, LOOKS[-1] * 5)

    def anytime(rng: np.random.Generator) -> bool:
        x, y = draw(rng)
        for n in LOOKS:
            est = x[:n].mean() - y[: 5 * n].mean() - math.log1p(tol)
            var = x[:n].var(ddof=1) / n + y[: 5 * n].var(ddof=1) / (5 * n)
            if mean_shift_p(est, var) <= ALPHA:
                return True
        return False

    def fixed(rng: np.random.Generator) -> bool:
        x, y = draw(rng)
        for n in LOOKS:
            est = x[:n].mean() - y[: 5 * n].mean() - math.log1p(tol)
            var = x[:n].var(ddof=1) / n + y[: 5 * n].var(ddof=1) / (5 * n)
            if stats.norm.sf(est / math.sqrt(var)) <= ALPHA:
                return True
        return False

    assert peeking_rate(anytime, 1) < TELLS_2_FROM_5
    assert peeking_rate(fixed, 1) > ALPHA  # negative control: peeking inflates a fixed test


def test_rate_over_budget_keeps_alpha_at_the_budget() -> None:
    def anytime(rng: np.random.Generator) -> bool:
        events = np.cumsum(rng.random(LOOKS[-1]) < 0.02)
        return any(bernoulli_above_p(int(events[n - 1]), int(n), 0.02) <= ALPHA for n in LOOKS)

    assert peeking_rate(anytime, 2) < TELLS_2_FROM_5


def test_non_inferiority_keeps_alpha_at_budget_plus_margin() -> None:
    def anytime(rng: np.random.Generator) -> bool:
        events = np.cumsum(rng.random(LOOKS[-1]) < 0.04)
        return any(bernoulli_below_p(int(events[n - 1]), int(n), 0.04) <= ALPHA for n in LOOKS)

    assert peeking_rate(anytime, 3) < TELLS_2_FROM_5


def test_event_share_against_the_same_window_keeps_alpha() -> None:
    """Equal error rates on both paths, candidate at 5 % of executions."""

    def anytime(rng: np.random.Generator) -> bool:
        total = LOOKS[-1] * 20
        cand = rng.random(total) < 0.05
        errors = rng.random(total) < 0.01
        for n in LOOKS * 20:
            c, e = cand[:n], errors[:n]
            ev = checks.rate_vs(e[c].astype(float), e[~c].astype(float), 0.0, "higher", 1)
            if ev["p_value"] is not None and ev["p_value"] <= ALPHA:
                return True
        return False

    assert peeking_rate(anytime, 4) < TELLS_2_FROM_5


def test_holm_over_four_null_guardrails_keeps_the_family_alpha() -> None:
    def anytime(rng: np.random.Generator) -> bool:
        events = np.cumsum(rng.random((4, LOOKS[-1])) < 0.02, axis=1)
        for n in LOOKS:
            ps = {f"g{i}": bernoulli_above_p(int(events[i, n - 1]), int(n), 0.02) for i in range(4)}
            if holm(ps, ALPHA):
                return True
        return False

    assert peeking_rate(anytime, 5) < TELLS_2_FROM_5


def test_each_test_sees_a_real_regression() -> None:
    rng = np.random.default_rng(6)
    x, y = rng.normal(math.log(1.5), 0.8, 300), rng.normal(0.0, 0.8, 3000)
    est = x.mean() - y.mean() - math.log1p(0.1)
    assert mean_shift_p(est, x.var(ddof=1) / 300 + y.var(ddof=1) / 3000) < 0.001
    assert bernoulli_above_p(30, 600, 0.02) < 0.001  # 5 % against a 2 % budget
    assert bernoulli_below_p(3, 600, 0.04) < 0.001  # 0.5 % is shown below 4 %
    assert bernoulli_above_p(0, 600, 0.02) == 1.0 and bernoulli_below_p(30, 600, 0.04) == 1.0


def test_holm_steps_down_and_names_the_smallest_first() -> None:
    assert holm({"a": 0.02, "b": 0.001, "c": 0.5}, 0.05) == ["b", "a"]
    assert holm({"a": 0.03, "b": 0.03}, 0.05) == []  # 0.03 > 0.05 / 2
    assert holm({}, 0.05) == []
