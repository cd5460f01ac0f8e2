"""``snapmerge bench judge``: each judge test's false alarms when it is read at every look.

Two rows count false *passes* instead: a candidate exactly at the allowed effect (tolerance +
margin) that the non-inferiority rule lets through at some look.

The controller judges a stage after its bake and after every recheck, on everything since the
stage began. For each test the judge uses, this draws seeded data exactly at the null's boundary
(a healthy candidate as bad as still allowed), looks ``--looks`` times as the sample grows, and
counts the trials in which any look rejects at α — side by side with the fixed-sample test a
judge without sequential correction would use. The whole-rollout figures are
``snapmerge bench rollout``'s.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

from rollout import checks
from rollout.sequential import bernoulli_above_p, bernoulli_below_p, mean_shift_p

Rng = np.random.Generator
Test = Callable[[Rng, np.ndarray[Any, Any], float], tuple[bool, bool]]  # (anytime, fixed)


def _latency(rng: Rng, looks: np.ndarray[Any, Any], alpha: float) -> tuple[bool, bool]:
    shift = math.log1p(0.1)
    x, y = rng.normal(shift, 0.8, looks[-1]), rng.normal(0.0, 0.8, looks[-1] * 5)
    anytime = fixed = False
    for n in looks:
        est = x[:n].mean() - y[: 5 * n].mean() - shift
        var = x[:n].var(ddof=1) / n + y[: 5 * n].var(ddof=1) / (5 * n)
        anytime |= mean_shift_p(est, var) <= alpha
        fixed |= bool(stats.norm.sf(est / math.sqrt(var)) <= alpha)
    return anytime, fixed


def _rate_at(rate: float, *, above: bool) -> Test:
    """A one-sided rate test under its null (the true rate is exactly ``rate``): the Beta mixture
    against the exact binomial test, each read at every look."""
    mixture = bernoulli_above_p if above else bernoulli_below_p
    side = "greater" if above else "less"

    def trial(rng: Rng, looks: np.ndarray[Any, Any], alpha: float) -> tuple[bool, bool]:
        events = np.cumsum(rng.random(looks[-1]) < rate)
        anytime = fixed = False
        for n in looks:
            k = int(events[n - 1])
            anytime |= mixture(k, int(n), rate) <= alpha
            fixed |= stats.binomtest(k, int(n), rate, alternative=side).pvalue <= alpha
        return anytime, fixed

    return trial


def _event_share(rng: Rng, looks: np.ndarray[Any, Any], alpha: float) -> tuple[bool, bool]:
    total = int(looks[-1]) * 20
    cand, errors = rng.random(total) < 0.05, (rng.random(total) < 0.01).astype(float)
    anytime = fixed = False
    for n in looks * 20:
        c, e = cand[:n], errors[:n]
        p = checks.rate_vs(e[c], e[~c], 0.0, "higher", 1)["p_value"]
        anytime |= p is not None and p <= alpha
        table = [[int(e[c].sum()), int(c.sum() - e[c].sum())],
                 [int(e[~c].sum()), int((~c).sum() - e[~c].sum())]]  # fmt: skip
        fixed |= bool(stats.fisher_exact(table, alternative="greater").pvalue <= alpha)
    return anytime, fixed


def _latency_noninferior(rng: Rng, looks: np.ndarray[Any, Any], alpha: float) -> tuple[bool, bool]:
    """A false *pass*: the candidate exactly at the allowed ratio (1 + tolerance 0.1 + margin
    0.1), passed when the judge's upper confidence bound is within it; beside it the fixed
    one-sided z upper bound read at every look."""
    bound = math.log(1.2)
    x = rng.lognormal(8.3 + bound, 0.8, looks[-1] * 3)
    y = rng.lognormal(8.3, 0.8, looks[-1] * 3)
    anytime = fixed = False
    for n in looks * 3:
        ev = checks.latency_vs(x[:n], y[:n], 0.1, "higher", 10, margin=0.1)
        anytime |= checks.noninferiority(ev, alpha) is None
        upper = ev["log_effect"] + stats.norm.isf(alpha) * math.sqrt(ev["variance"])
        fixed |= bool(upper <= bound)
    return anytime, fixed


def _rate_noninferior(rng: Rng, looks: np.ndarray[Any, Any], alpha: float) -> tuple[bool, bool]:
    """A false *pass* for rare events: legacy 0.2 %, the candidate at legacy + the 1.5-point
    margin (1.7 %), legacy with four times the executions; the judge's two confidence
    sequences against the fixed Wald upper bound of the difference read at every look."""
    n_max = int(looks[-1]) * 5
    cand = (rng.random(n_max) < 0.017).astype(float)
    base = (rng.random(4 * n_max) < 0.002).astype(float)
    anytime = fixed = False
    for n in looks * 5:
        c, b = cand[:n], base[: 4 * n]
        ev = checks.rate_vs(c, b, 0.0, "higher", 1, margin=0.015)
        anytime |= checks.noninferiority(ev, alpha) is None
        pc, pb = c.mean(), b.mean()
        sd = math.sqrt(pc * (1 - pc) / n + pb * (1 - pb) / (4 * n))
        fixed |= bool(pc - pb + stats.norm.isf(alpha) * sd <= 0.015)
    return anytime, fixed


TESTS: dict[str, Test] = {
    "latency vs legacy (mSPRT)": _latency,
    "rate over budget (Beta mixture)": _rate_at(0.02, above=True),
    "rate within budget+margin (non-inferiority)": _rate_at(0.04, above=False),
    "rate vs legacy (event share)": _event_share,
    "latency shown within 1.2 (false pass)": _latency_noninferior,
    "rate shown within legacy + 1.5 points (false pass)": _rate_noninferior,
}


def run(trials: int, looks: int, alpha: float, seed: int) -> dict[str, Any]:
    grid = np.linspace(30, 600, looks).astype(int)
    out: dict[str, Any] = {}
    for i, (name, test) in enumerate(TESTS.items()):
        rng = np.random.default_rng(seed + i)
        hits = np.array([test(rng, grid, alpha) for _ in range(trials)])
        out[name] = {"anytime": float(hits[:, 0].mean()), "fixed": float(hits[:, 1].mean())}
    return {"trials": trials, "looks": looks, "alpha": alpha, "tests": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snapmerge bench judge", description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.trials, args.looks, args.alpha, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"false alarms over {args.looks} looks, {args.trials} trials, α = {args.alpha}")
    print(f"{'test':52} {'anytime':>8} {'fixed':>8}")
    for name, row in result["tests"].items():
        print(f"{name:52} {row['anytime']:8.1%} {row['fixed']:8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
