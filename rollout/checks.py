"""One guardrail's comparisons: each returns its evidence and an always-valid p-value.

A comparison never decides alone: the judge gathers the critical guardrails' p-values and
applies Holm's step-down over them (``rollout.judge``). Each comparison says whether it has
**enough** evidence to pass (``min_samples`` on every side it needs); a p-value small enough
rolls back even before that, since the tests stay valid at any sample size.

* latency vs a side (``baseline``: legacy in the same window; ``reference``: the previous
  stage's two-phase records) — :func:`rollout.sequential.mean_shift_p` on log(1 + ms):
  "the candidate's geometric mean is beyond ``(1 + tolerance)`` times the other's".
* rate vs a side — the events of both paths in one window: each landed on the candidate with
  probability ``s rho / (s rho + 1 - s)`` (``s``: the candidate's share of executions, ``rho``:
  the ratio of the two rates); "rho <= 1 + tolerance" is tested with
  :func:`rollout.sequential.rate_ratio_p`, the previous stage's events as a second stratum.
* rate vs ``budget`` — fails when "rate <= budget" is rejected; passes only once "rate >=
  budget + margin" is rejected at :data:`NONINFERIORITY_ALPHA` (non-inferiority with a margin).
  A budget of 0 means any event fails (shadow mismatches).
* latency vs ``budget`` (ms) — the median must not exceed it: the share of executions above the
  budget, tested against 1/2, over executions without a CAS failure or fallback (a rebase adds
  lock grants; contention must not count as a slower lock).
* invariant — every value equals what it is checked against (the planned chunk count, the
  other path's value for the same batch in a shadow run); one disagreement fails.

Every comparison also reports ``p_extreme``: the p-value its test would give the **worst
outcome possible at the current sample sizes** (every execution beyond the budget, every
execution an event, every candidate execution slower than every control execution x (1 +
tolerance)). The judge lets a comparison pass only if that p-value is within the α it would be
rejected at: a test that could not have failed at this n is no evidence, whatever ``min_samples``
says.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rollout.sequential import bernoulli_above_p, bernoulli_below_p, mean_shift_p, rate_ratio_p

Floats = np.ndarray[Any, np.dtype[np.float64]]
NONINFERIORITY_ALPHA = 0.05
MIN_LATENCY_N = 10  # below this a variance estimate is noise: no p-value yet
_TINY = 1e-12
FULL_SHARE = 0.99  # the candidate takes (nearly) every execution: no same-window control


def _num(x: float) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def latency_vs(
    cand: Floats, other: Floats, tolerance: float, worse: str, min_n: int
) -> dict[str, Any]:
    n_c, n_o = len(cand), len(other)
    ev: dict[str, Any] = {"test": "msprt-log-mean", "n_candidate": n_c, "n_other": n_o}
    floor = max(min_n, MIN_LATENCY_N)  # no pass without a test that could have failed
    ev["enough"] = n_c >= floor and n_o >= floor
    if n_c < MIN_LATENCY_N or n_o < MIN_LATENCY_N:
        return {**ev, "p_value": None}
    x, y = np.log1p(np.maximum(cand, 0.0)), np.log1p(np.maximum(other, 0.0))
    diff = float(x.mean() - y.mean())
    signed = diff if worse == "higher" else -diff
    variance = float(x.var(ddof=1) / n_c + y.var(ddof=1) / n_o)
    p = mean_shift_p(signed - math.log1p(tolerance), variance)
    # the worst outcome at these sizes: every candidate execution beyond every control
    # execution x (1 + tolerance) — the candidate's values shifted until its best one is past the
    # control's worst; the shift leaves the variance as it is
    if worse == "higher":
        spread = float(x.mean() - x.min() + y.max() - y.mean())
    else:
        spread = float(x.max() - x.mean() + y.mean() - y.min())
    return {
        **ev,
        "median_candidate": float(np.median(cand)),
        "median_other": float(np.median(other)),
        "effect": _num(math.expm1(signed)),  # ratio of geometric means - 1, worse direction
        "p_value": p,
        "p_extreme": mean_shift_p(max(spread, _TINY), variance),
    }


def rate_vs(
    cand: Floats,
    other: Floats,
    tolerance: float,
    worse: str,
    min_n: int,
    earlier: tuple[Floats, Floats] | None = None,
) -> dict[str, Any]:
    """``earlier``: the previous stage's (candidate, control) values, a second stratum."""
    n_c, n_o = len(cand), len(other)
    k_c, k_o = _events(cand, worse), _events(other, worse)
    ev: dict[str, Any] = {"test": "rate-ratio-mixture", "n_candidate": n_c, "n_other": n_o}
    ev |= {"events_candidate": k_c, "events_other": k_o, "enough": n_c >= min_n and n_o >= min_n}
    if n_c == 0 or n_o == 0:
        return {**ev, "p_value": None}
    strata = [(k_c, k_c + k_o, n_c / (n_c + n_o))]
    if earlier is not None and len(earlier[0]) and len(earlier[1]):
        k_e, k_eo = _events(earlier[0], worse), _events(earlier[1], worse)
        strata.append((k_e, k_e + k_eo, len(earlier[0]) / (len(earlier[0]) + len(earlier[1]))))
        ev["earlier_stage"] = {"n_candidate": len(earlier[0]), "events_candidate": k_e,
                               "n_other": len(earlier[1]), "events_other": k_eo}  # fmt: skip
    ev |= {"rate_candidate": k_c / n_c, "rate_other": k_o / n_o, "share": strata[0][2]}
    ev["effect"] = k_c / n_c - k_o / n_o
    worst = [(n_c, n_c + k_o, strata[0][2]), *strata[1:]]  # every candidate execution an event
    ev["p_extreme"] = rate_ratio_p(worst, 1.0 + tolerance)
    return {**ev, "p_value": rate_ratio_p(strata, 1.0 + tolerance)}


def rate_vs_budget(
    values: Floats, budget: float, margin: float, worse: str, min_n: int
) -> dict[str, Any]:
    n, k = len(values), _events(values, worse)
    ev: dict[str, Any] = {"test": "budget-mixture", "n_candidate": n, "events_candidate": k}
    ev |= {"budget": budget, "margin": margin}
    if n == 0:
        return {**ev, "enough": False, "p_value": None}
    ev["rate_candidate"] = k / n
    if budget == 0.0:
        ev |= {"test": "any-event", "enough": n >= 1, "p_extreme": 0.0}
        return {**ev, "p_value": 0.0 if k else 1.0}
    ni = bernoulli_below_p(k, n, budget + margin)
    ev |= {"noninferiority_p": ni, "enough": n >= min_n and ni <= NONINFERIORITY_ALPHA}
    ev["p_extreme"] = bernoulli_above_p(n, n, budget)  # every execution an event
    return {**ev, "p_value": bernoulli_above_p(k, n, budget)}


def latency_vs_budget(values: Floats, budget: float, worse: str, min_n: int) -> dict[str, Any]:
    n = len(values)
    beyond = int(np.count_nonzero(values > budget if worse == "higher" else values < budget))
    ev: dict[str, Any] = {"test": "median-budget-mixture", "n_candidate": n, "budget": budget}
    ev |= {"beyond_budget": beyond, "enough": n >= min_n}
    if n == 0:
        return {**ev, "p_value": None}
    ev["median_candidate"] = float(np.median(values))
    ev["p_extreme"] = bernoulli_above_p(n, n, 0.5)  # every execution beyond the budget
    return {**ev, "p_value": bernoulli_above_p(beyond, n, 0.5)}


def invariant(pairs: list[tuple[float, float]], tolerance: float, min_n: int) -> dict[str, Any]:
    bad = [(want, got) for want, got in pairs if abs(got - want) > tolerance]
    return {
        "test": "equality",
        "n_checked": len(pairs),
        "mismatches": len(bad),
        "examples": [list(p) for p in bad[:5]],
        "enough": len(pairs) >= min_n,
        "p_value": 0.0 if bad else None,
        "p_extreme": 0.0 if pairs else None,  # one disagreement always fails
    }


def _events(values: Floats, worse: str) -> int:
    events = int(np.count_nonzero(values > 0))
    return events if worse == "higher" else len(values) - events
