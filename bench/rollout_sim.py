"""A simulated fleet for the whole-rollout benchmark: executions drawn as numpy arrays.

The fleet runs ``rate_per_hour`` final merges; the flag document's percentage decides which path
each one takes. Per execution (both paths' figures from the embedded runs in docs/benchmarks.md
and docs/two_phase.md, widened for a fleet of mixed snapshot sizes):

* merge duration: lognormal, median 4 s, σ 0.8 — both paths (legacy holds the lock nearly all of
  it: lock hold = 0.95 × duration);
* two-phase lock hold: two short grants per attempt, lognormal median 18 ms, σ 0.15 per attempt;
  a CAS failure adds an attempt (another pair of grants) and 15 % of rebuild time;
* lock wait: legacy waits in 30 % of executions (median 2 s), two-phase in 10 % (20 ms), σ 1;
* merge errors 0.2 % on both paths; two-phase CAS failures 0.5 %, fallbacks 0.1 %;
* 10 % of legacy executions are shadowed: a dry run beside them reports ShadowMismatched;
* every execution carries the chunk count the split planned, equal to the one it merged.

``contention`` makes the load grow with the two-phase share (the A/A with contention): duration
and lock wait of *both* paths × (1 + 0.3 s), and CAS failures 0.2 % + 1.2 % × s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rollout.metric_names import MetricName as M

Rng = np.random.Generator
Arrays = dict[str, np.ndarray[Any, Any]]
SHADOW_SHARE = 0.10


@dataclass(frozen=True)
class Fleet:
    rate_per_hour: float = 3000.0
    contention: bool = False
    hold_factor: float = 1.0
    duration_factor: float = 1.0
    cas_rate: float | None = None  # None: the healthy rate (with contention: rising with share)
    error_rate: float = 0.002
    mismatch_rate: float = 0.0
    # the regression shows only once the two-phase share reaches this (0: from the first stage);
    # 0.9 = a regression only the full stage's load brings out
    from_share: float = 0.0


SCENARIOS: dict[str, Fleet] = {
    "aa": Fleet(),
    "aa_contention": Fleet(contention=True),
    "hold_x1_5": Fleet(contention=True, hold_factor=1.5),
    "hold_x2": Fleet(contention=True, hold_factor=2.0),
    "duration_30pct": Fleet(contention=True, duration_factor=1.3),
    "cas_5pct": Fleet(contention=True, cas_rate=0.05),
    "errors_1pct": Fleet(contention=True, error_rate=0.01),
    "shadow_mismatch": Fleet(contention=True, mismatch_rate=0.005),
}


HEALTHY, HEALTHY_CONTENTION = SCENARIOS["aa"], SCENARIOS["aa_contention"]


def _lognormal(rng: Rng, median: float, sigma: float, n: int) -> np.ndarray[Any, Any]:
    return rng.lognormal(np.log(median), sigma, n)


def draw(rng: Rng, fleet: Fleet, n: int, share: float, candidate: bool) -> Arrays:
    """``n`` executions of one path while the two-phase share is ``share`` (0..1)."""
    if share < fleet.from_share:
        fleet = HEALTHY if not fleet.contention else HEALTHY_CONTENTION
    load = 1.0 + 0.3 * share if fleet.contention else 1.0
    duration = _lognormal(rng, 4000.0, 0.8, n) * load
    waits = rng.random(n) < (0.1 if candidate else 0.3)
    wait = np.where(waits, _lognormal(rng, 20.0 if candidate else 2000.0, 1.0, n) * load, 0.0)
    errors = (rng.random(n) < (fleet.error_rate if candidate else 0.002)).astype(float)
    chunks = rng.integers(1, 21, n).astype(float)
    out: Arrays = {
        M.FINAL_MERGE_DURATION: duration,
        M.LOCK_WAIT_TIME: wait,
        M.MERGE_ERRORS: errors,
        M.CHUNK_COUNT: chunks,
        "planned": chunks,
    }
    if not candidate:
        out[M.LOCK_HOLD_TIME] = duration * 0.95
        out[M.CAS_FAILURES] = np.zeros(n)
        out[M.FALLBACK_TO_LEGACY] = np.zeros(n)
        return out
    healthy = 0.002 + 0.012 * share if fleet.contention else 0.005
    cas = (rng.random(n) < (healthy if fleet.cas_rate is None else fleet.cas_rate)).astype(float)
    hold = _lognormal(rng, 18.0 * fleet.hold_factor, 0.15, n)
    rebase = _lognormal(rng, 18.0 * fleet.hold_factor, 0.15, n)
    out[M.LOCK_HOLD_TIME] = hold + cas * rebase
    out[M.FINAL_MERGE_DURATION] = duration * fleet.duration_factor * (1.0 + 0.15 * cas)
    out[M.CAS_FAILURES] = cas
    out[M.FALLBACK_TO_LEGACY] = (rng.random(n) < 0.001).astype(float)
    return out


@dataclass
class Window:
    """One time window of the fleet: both paths' arrays, and the shadow runs beside legacy."""

    candidate: Arrays
    baseline: Arrays
    shadow_mismatches: np.ndarray[Any, Any]

    def __len__(self) -> int:
        return len(self.candidate[M.CHUNK_COUNT]) + len(self.baseline[M.CHUNK_COUNT])

    def __iter__(self) -> Iterator[Any]:  # the controller only tests a reference for truth
        return iter(())


class _Path:
    """One path's executions in time order: arrays grown in place (capacity doubles), so a window
    is two binary searches and a slice (a view), not a copy of the whole history."""

    def __init__(self) -> None:
        self.n = 0
        self.times: np.ndarray[Any, Any] = np.zeros(0, dtype=np.int64)
        self.cols: Arrays = {}

    def append(self, times: np.ndarray[Any, Any], cols: Arrays) -> None:
        end = self.n + len(times)
        if end > len(self.times):
            size = max(end, 2 * len(self.times), 1024)
            self.times = np.resize(self.times, size)
            self.cols = {k: np.resize(self.cols.get(k, np.zeros(0)), size) for k in cols}
        self.times[self.n : end] = times
        for k, v in cols.items():
            self.cols[k][self.n : end] = v
        self.n = end

    def window(self, since: int, until: int, names: Any) -> Arrays:
        lo, hi = np.searchsorted(self.times[: self.n], [since, until])
        return {k: (self.cols[k][lo:hi] if k in self.cols else np.zeros(0)) for k in names}


class FleetSource:
    """A ``MetricSource`` whose ``records`` returns :class:`Window` arrays, generated lazily up to
    the latest ``until_ms`` asked for, at the share the flag document says at that moment."""

    def __init__(self, rng: Rng, fleet: Fleet, start_ms: int, percent: Any) -> None:
        self.rng, self.fleet, self.percent = rng, fleet, percent
        self.until = start_ms
        self.paths = {True: _Path(), False: _Path()}
        self.shadow = _Path()

    def _extend(self, until_ms: int) -> None:
        span = until_ms - self.until
        if span <= 0:
            return
        n = int(self.rng.poisson(self.fleet.rate_per_hour * span / 3_600_000))
        share = self.percent() / 100.0
        times = np.sort(self.rng.integers(self.until, until_ms, n))
        cand = self.rng.random(n) < share
        for is_cand in (True, False):
            idx = np.flatnonzero(cand == is_cand)
            drawn = draw(self.rng, self.fleet, len(idx), share, is_cand)
            self.paths[is_cand].append(times[idx], drawn)
        legacy_times = times[~cand]
        shadowed = self.rng.random(len(legacy_times)) < SHADOW_SHARE
        bad = self.rng.random(int(shadowed.sum())) < self.fleet.mismatch_rate
        self.shadow.append(legacy_times[shadowed], {"bad": bad.astype(float)})
        self.until = until_ms

    def records(self, since_ms: int | None = None, until_ms: int | None = None) -> Window:
        end = until_ms if until_ms is not None else self.until
        self._extend(end)
        since = since_ms or 0
        names = list(_NAMES)
        return Window(
            self.paths[True].window(since, end, names),
            self.paths[False].window(since, end, names),
            self.shadow.window(since, end, ["bad"])["bad"],
        )


_NAMES = (
    M.FINAL_MERGE_DURATION,
    M.LOCK_WAIT_TIME,
    M.MERGE_ERRORS,
    M.CHUNK_COUNT,
    "planned",
    M.LOCK_HOLD_TIME,
    M.CAS_FAILURES,
    M.FALLBACK_TO_LEGACY,
)
