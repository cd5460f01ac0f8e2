"""How often the canary judge is wrong: seeded A/A and injected-regression simulations.

Each trial draws one stage's samples from synthetic but realistic distributions and asks
:func:`rollout.judge.judge_samples` (the judge minus record parsing) for a verdict with the
default guardrails:

* candidate: ``min_samples`` two-phase executions; baseline: the legacy executions of the same
  window, ``min_samples × (100 − pct) / pct`` of them; reference: ``min_samples`` two-phase
  executions of the previous stage (for the first stage: the shadow or staging run before it);
* lock hold and merge duration are lognormal, lock wait is zero or lognormal, CAS failures,
  merge errors and fallbacks are Bernoulli per execution (:class:`Profile`).

Scenarios: ``aa`` (nothing changed: every rollback is a false alarm), ``hold_x2`` (two-phase lock
hold doubled), ``cas_5pct`` (5 % of two-phase executions hit a CAS failure) and
``hold_x2_no_ref`` (the doubling judged against legacy alone, to show why a reference is needed).
Run ``python -m bench.judge [--trials N] [--min-samples N] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from rollout.judge import DEFAULT_GUARDRAILS, Samples, judge_samples
from rollout.metric_names import MetricName

STAGES = (1, 5, 25, 50)
FALSE_ROLLBACK_TARGET = 0.05
DETECTION_TARGET = 0.95
SEARCH_SIZES = (10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 600)
Rng = np.random.Generator


@dataclass(frozen=True)
class PathProfile:
    hold_median_ms: float
    hold_sigma: float
    duration_median_ms: float
    duration_sigma: float
    wait_share: float  # executions that wait at all
    wait_median_ms: float
    wait_sigma: float
    cas_rate: float
    error_rate: float
    fallback_rate: float


@dataclass(frozen=True)
class Profile:
    """Legacy holds the lock for the whole merge (minutes); two-phase for two tiny sections."""

    legacy: PathProfile = PathProfile(
        hold_median_ms=120_000, hold_sigma=0.6, duration_median_ms=125_000, duration_sigma=0.35,
        wait_share=0.3, wait_median_ms=30_000, wait_sigma=1.0,
        cas_rate=0.001, error_rate=0.002, fallback_rate=0.0,
    )  # fmt: skip
    two_phase: PathProfile = PathProfile(
        hold_median_ms=60, hold_sigma=0.5, duration_median_ms=120_000, duration_sigma=0.35,
        wait_share=0.1, wait_median_ms=50, wait_sigma=1.0,
        cas_rate=0.005, error_rate=0.002, fallback_rate=0.001,
    )  # fmt: skip


def draw(rng: Rng, p: PathProfile, n: int) -> dict[str, Any]:
    """``n`` executions of one path as per-metric arrays."""
    waits = rng.lognormal(np.log(p.wait_median_ms), p.wait_sigma, n)
    return {
        MetricName.LOCK_HOLD_TIME: rng.lognormal(np.log(p.hold_median_ms), p.hold_sigma, n),
        MetricName.FINAL_MERGE_DURATION: rng.lognormal(
            np.log(p.duration_median_ms), p.duration_sigma, n
        ),
        MetricName.LOCK_WAIT_TIME: np.where(rng.random(n) < p.wait_share, waits, 0.0),
        MetricName.CAS_FAILURES: (rng.random(n) < p.cas_rate).astype(float),
        MetricName.MERGE_ERRORS: (rng.random(n) < p.error_rate).astype(float),
        MetricName.FALLBACK_TO_LEGACY: (rng.random(n) < p.fallback_rate).astype(float),
    }


Scenario = Callable[[PathProfile], PathProfile]
SCENARIOS: dict[str, tuple[Scenario, bool]] = {
    "aa": (lambda p: p, True),
    "hold_x2": (lambda p: replace(p, hold_median_ms=p.hold_median_ms * 2), True),
    "cas_5pct": (lambda p: replace(p, cas_rate=0.05), True),
    "hold_x2_no_ref": (lambda p: replace(p, hold_median_ms=p.hold_median_ms * 2), False),
}


def one_stage(rng: Rng, profile: Profile, scenario: str, pct: int, min_samples: int) -> str:
    """One trial: the judge's decision on freshly drawn samples of one stage."""
    change, with_ref = SCENARIOS[scenario]
    n_base = round(min_samples * (100 - pct) / pct)
    samples = Samples(
        candidate=draw(rng, change(profile.two_phase), min_samples),
        baseline=draw(rng, profile.legacy, n_base),
        reference=draw(rng, profile.two_phase, min_samples) if with_ref else None,
        n_candidate=min_samples,
    )
    verdict = judge_samples(samples, DEFAULT_GUARDRAILS, min_samples=min_samples)
    return verdict.decision


def rates(
    rng: Rng, profile: Profile, scenario: str, pct: int, min_samples: int, trials: int
) -> dict[str, float]:
    counts = {"promote": 0, "hold": 0, "rollback": 0}
    for _ in range(trials):
        counts[one_stage(rng, profile, scenario, pct, min_samples)] += 1
    return {decision: k / trials for decision, k in counts.items()}


def required_samples(
    rng: Rng, profile: Profile, scenario: str, pct: int, trials: int
) -> int | None:
    """The smallest size in :data:`SEARCH_SIZES` whose rollback rate reaches the target."""
    for n in SEARCH_SIZES:
        if rates(rng, profile, scenario, pct, n, trials)["rollback"] >= DETECTION_TARGET:
            return n
    return None


def run(
    trials: int = 1000,
    min_samples: int = 30,
    seed: int = 20240611,
    *,
    stages: tuple[int, ...] = STAGES,
    search_trials: int | None = None,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """Every scenario at every stage; plus the samples each regression needs for 95 % power."""
    profile = profile or Profile()
    seeds = iter(np.random.SeedSequence(seed).spawn(len(stages) * (len(SCENARIOS) + 2)))
    table: dict[str, dict[str, dict[str, float]]] = {}
    needed: dict[str, dict[str, int | None]] = {"hold_x2": {}, "cas_5pct": {}}
    for pct in stages:
        table[str(pct)] = {
            name: rates(np.random.default_rng(next(seeds)), profile, name, pct, min_samples, trials)
            for name in SCENARIOS
        }
        for name in needed:
            rng = np.random.default_rng(next(seeds))
            needed[name][str(pct)] = required_samples(
                rng, profile, name, pct, search_trials or max(trials // 4, 50)
            )
    worst_aa = max(row["aa"]["rollback"] for row in table.values())
    return {
        "config": {"trials": trials, "min_samples": min_samples, "seed": seed, "stages": stages},
        "profile": asdict(profile),
        "stages": table,
        "required_samples": needed,
        "targets": {"false_rollback_max": FALSE_ROLLBACK_TARGET, "detection_min": DETECTION_TARGET},
        "worst_false_rollback": worst_aa,
    }


def format_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"judge simulation: {cfg['trials']} trials per cell, min_samples={cfg['min_samples']}, "
        f"seed={cfg['seed']}",
        f"{'stage':>6} {'A/A rollback':>13} {'A/A hold':>9} {'hold×2 det.':>12} "
        f"{'CAS 5% det.':>12} {'hold×2 no-ref':>14} {'n for CAS 5%':>13} {'n for hold×2':>13}",
    ]
    for pct, row in result["stages"].items():
        need = result["required_samples"]
        lines.append(
            f"{pct + '%':>6} {row['aa']['rollback']:>13.3f} {row['aa']['hold']:>9.3f} "
            f"{row['hold_x2']['rollback']:>12.3f} {row['cas_5pct']['rollback']:>12.3f} "
            f"{row['hold_x2_no_ref']['rollback']:>14.3f} "
            f"{_n(need['cas_5pct'][pct]):>13} {_n(need['hold_x2'][pct]):>13}"
        )
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return f"≤{value}" if value is not None else f">{SEARCH_SIZES[-1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--min-samples", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = parser.parse_args(argv)
    result = run(args.trials, args.min_samples, args.seed)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
