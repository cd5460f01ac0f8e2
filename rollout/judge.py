"""The canary judge: promote, hold or roll back a stage from the two paths' raw records.

Samples (see ``docs/judge.md`` for the method and the measured error rates):

* **candidate** — this stage's ``two_phase`` records; **baseline** — this stage's ``legacy``
  records (the same operation on the other path, same window); **reference** — optional earlier
  candidate records (the previous stage's ``two_phase`` records). Two-phase lock hold is orders of
  magnitude below legacy, so "two-phase got twice as slow" is invisible against legacy; it shows
  only against the candidate's own earlier distribution. Every guardrail is checked against
  each side present: baseline says "not worse than legacy", reference says "not worse than it was".
* **latency** — one-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``) *and* an effect-size
  tolerance: fails only if p < alpha and the median got worse by more than ``tolerance`` (relative:
  0.25 = 25 %), so a significant but tiny change does not roll back.
* **rate** — share of executions whose value is > 0: fails if a one-sided Fisher exact test
  (``scipy.stats.fisher_exact``) says the candidate is worse *and* an exact binomial test
  (``scipy.stats.binomtest``) says its count is beyond the other side's rate plus ``tolerance``
  (absolute), both at p < alpha. A metric the baseline never reports (shadow mismatches) is
  tested alone: binomial test against ``tolerance``, or any event fails when the tolerance is 0.
* **invariant** — for every batch seen by both paths (shadow runs), the values must agree within
  ``tolerance`` (0: exactly); a single disagreement fails. No shared batch: not evaluated.

Verdict: a critical guardrail failing → rollback; else too few samples anywhere → hold; else a
non-critical guardrail failing → hold; else promote. Replayed results (a retried merge answering
from its receipt) measure nothing and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError

Kind = Literal["latency", "rate", "invariant"]
Worse = Literal["higher", "lower"]
Decision = Literal["promote", "hold", "rollback"]
Status = Literal["pass", "fail", "insufficient", "n/a"]
Floats = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class Guardrail:
    metric: str
    kind: Literal["latency", "rate", "invariant"]
    worse: Literal["higher", "lower"]
    tolerance: float
    critical: bool
    alpha: float = 0.01
    # Which side the candidate must not be worse than: this stage's legacy records
    # ("baseline"), the previous stage's two-phase records ("reference"), or both. CAS
    # failures are judged against the reference only: legacy serialises on the lock, so it
    # structurally has none, and a contended two-phase stage would always "lose" to it.
    against: Literal["both", "baseline", "reference"] = "both"

    def __post_init__(self) -> None:
        if self.against not in ("both", "baseline", "reference"):
            raise InvalidEventError(
                f"guardrail {self.metric}: against must be both, baseline or reference"
            )
        if self.kind not in ("latency", "rate", "invariant"):
            raise InvalidEventError(f"guardrail {self.metric}: unknown kind {self.kind!r}")
        if self.worse not in ("higher", "lower"):
            raise InvalidEventError(f"guardrail {self.metric}: worse must be higher or lower")
        top = 1.0 if self.kind == "rate" else math.inf
        if not 0.0 <= self.tolerance <= top or math.isnan(self.tolerance):
            raise InvalidEventError(
                f"guardrail {self.metric}: tolerance {self.tolerance} out of range"
            )
        if not 0.0 < self.alpha < 1.0:
            raise InvalidEventError(f"guardrail {self.metric}: alpha {self.alpha} not in (0, 1)")


@dataclass
class Verdict:
    decision: Literal["promote", "hold", "rollback"]
    reasons: list[str]
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Samples:
    """Per-metric sample arrays of each side, and (baseline, candidate) pairs per shared batch."""

    candidate: Mapping[str, Floats]
    baseline: Mapping[str, Floats]
    reference: Mapping[str, Floats] | None = None
    pairs: Mapping[str, list[tuple[float, float]]] = field(default_factory=dict)
    n_candidate: int = 0  # candidate executions in the window, whatever metrics they carry


DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(MetricName.LOCK_HOLD_TIME, "latency", "higher", 0.25, critical=True),
    Guardrail(MetricName.FINAL_MERGE_DURATION, "latency", "higher", 0.25, critical=True),
    Guardrail(MetricName.LOCK_WAIT_TIME, "latency", "higher", 0.50, critical=False),
    Guardrail(MetricName.CAS_FAILURES, "rate", "higher", 0.01, critical=True, against="reference"),
    Guardrail(MetricName.MERGE_ERRORS, "rate", "higher", 0.01, critical=True),
    Guardrail(MetricName.FALLBACK_TO_LEGACY, "rate", "higher", 0.02, critical=False),
    Guardrail(MetricName.SHADOW_MISMATCHED, "rate", "higher", 0.0, critical=True),
    Guardrail(MetricName.CHUNK_COUNT, "invariant", "higher", 0.0, critical=True),
)


# -- gathering ----------------------------------------------------------------------------------
def _by_metric(records: Sequence[MetricRecord]) -> dict[str, Floats]:
    out: dict[str, list[float]] = {}
    for rec in records:
        for name, value in rec.values.items():
            out.setdefault(name, []).append(value)
    return {name: np.asarray(vals, dtype=np.float64) for name, vals in out.items()}


def _pairs(base: Sequence[MetricRecord], cand: Sequence[MetricRecord]) -> dict[str, list[Any]]:
    def last_by_batch(recs: Sequence[MetricRecord]) -> dict[str, MetricRecord]:
        latest: dict[str, MetricRecord] = {}
        for rec in sorted(recs, key=lambda r: r.timestamp_ms):
            batch = rec.metadata.get("batch_id")
            if batch is not None:
                latest[str(batch)] = rec
        return latest

    b, c = last_by_batch(base), last_by_batch(cand)
    out: dict[str, list[Any]] = {}
    for batch in sorted(b.keys() & c.keys()):
        for name in b[batch].values.keys() & c[batch].values.keys():
            out.setdefault(name, []).append((b[batch].values[name], c[batch].values[name]))
    return out


def collect(
    records: Sequence[MetricRecord],
    *,
    reference: Sequence[MetricRecord] | None = None,
    candidate: MergePath = MergePath.TWO_PHASE,
    baseline: MergePath = MergePath.LEGACY,
) -> Samples:
    live = [r for r in records if not r.metadata.get("replayed")]
    cand = [r for r in live if r.path == candidate]
    base = [r for r in live if r.path == baseline]
    ref = None
    if reference is not None:
        kept = [r for r in reference if r.path == candidate and not r.metadata.get("replayed")]
        ref = _by_metric(kept)
    return Samples(_by_metric(cand), _by_metric(base), ref, _pairs(base, cand), len(cand))


# -- one comparison per (guardrail, side) -----------------------------------------------------
def _num(x: Any) -> float | None:
    """A JSON-safe float: non-finite numbers become None."""
    value = float(x)
    return value if math.isfinite(value) else None


def _verdict(fails: bool) -> Status:
    return "fail" if fails else "pass"


def _latency(cand: Floats, other: Floats, g: Guardrail, min_n: int) -> dict[str, Any]:
    ev: dict[str, Any] = {"test": "mannwhitneyu", "n_candidate": len(cand), "n_other": len(other)}
    if len(cand) == 0 or len(other) == 0:
        return {**ev, "status": "n/a"}
    if len(cand) < min_n or len(other) < min_n:
        return {**ev, "status": "insufficient"}
    med_c, med_o = float(np.median(cand)), float(np.median(other))
    alternative = "greater" if g.worse == "higher" else "less"
    res = stats.mannwhitneyu(cand, other, alternative=alternative)
    p = float(res.pvalue) if math.isfinite(float(res.pvalue)) else 1.0
    worse, better = (med_c, med_o) if g.worse == "higher" else (med_o, med_c)
    effect = (worse / better - 1.0) if better > 0 else (math.inf if worse > 0 else 0.0)
    return {
        **ev,
        "median_candidate": med_c,
        "median_other": med_o,
        "p95_candidate": float(np.percentile(cand, 95)),
        "p95_other": float(np.percentile(other, 95)),
        "statistic": _num(res.statistic),
        "p_value": p,
        "effect": _num(effect),
        "status": _verdict(p < g.alpha and effect > g.tolerance),
    }


def _rate(cand: Floats, other: Floats | None, g: Guardrail, min_n: int) -> dict[str, Any]:
    k_c, n_c = int(np.count_nonzero(cand > 0)), len(cand)
    ev: dict[str, Any] = {"n_candidate": n_c, "events_candidate": k_c}
    if n_c == 0:
        return {**ev, "status": "n/a"}
    if n_c < min_n:
        return {**ev, "status": "insufficient"}
    rate_c = k_c / n_c
    ev["rate_candidate"] = rate_c
    if other is None:  # the other side never reports this metric: test the candidate alone
        return _rate_alone(ev, k_c, n_c, g)
    k_o, n_o = int(np.count_nonzero(other > 0)), len(other)
    ev |= {"n_other": n_o, "events_other": k_o, "test": "fisher_exact"}
    if n_o < min_n:
        return {**ev, "status": "insufficient"}
    rate_o = k_o / n_o
    alternative = "greater" if g.worse == "higher" else "less"
    res = stats.fisher_exact([[k_c, n_c - k_c], [k_o, n_o - k_o]], alternative=alternative)
    diff = rate_c - rate_o if g.worse == "higher" else rate_o - rate_c
    p = float(res.pvalue)
    margin_p = _margin_p(k_c, n_c, rate_o, g)
    ev |= {"rate_other": rate_o, "statistic": _num(res.statistic), "p_value": p, "effect": diff}
    ev["margin_p_value"] = margin_p
    return {**ev, "status": _verdict(p < g.alpha and margin_p < g.alpha)}


def _margin_p(k: int, n: int, rate_other: float, g: Guardrail) -> float:
    """p-value of "the candidate's rate is beyond the other side's by more than the tolerance".

    An exact binomial test of the candidate's count against ``rate_other ± tolerance``, the
    other side's rate taken as known (it is the larger sample below the 50 % stage). Without it
    one event in 30 executions (3.3 %) would already exceed a 2 % tolerance.
    """
    if g.worse == "higher":
        bound, alternative = rate_other + g.tolerance, "greater"
    else:
        bound, alternative = rate_other - g.tolerance, "less"
    if bound >= 1.0 or bound <= 0.0:  # beyond the bound is impossible, or any event is beyond
        beyond = (bound <= 0.0 and k > 0) if g.worse == "higher" else (bound >= 1.0 and k < n)
        return 0.0 if beyond else 1.0
    return float(stats.binomtest(k, n, p=bound, alternative=alternative).pvalue)


def _rate_alone(ev: dict[str, Any], k: int, n: int, g: Guardrail) -> dict[str, Any]:
    if g.tolerance == 0.0:
        bad = k > 0 if g.worse == "higher" else k < n
        return {**ev, "test": "any-event", "effect": k / n, "status": _verdict(bad)}
    alternative = "greater" if g.worse == "higher" else "less"
    res = stats.binomtest(k, n, p=g.tolerance, alternative=alternative)
    p = float(res.pvalue)
    ev |= {"test": "binomtest", "p_value": p, "effect": k / n}
    return {**ev, "status": _verdict(p < g.alpha)}


def _invariant(pairs: list[tuple[float, float]], g: Guardrail) -> dict[str, Any]:
    if not pairs:
        return {"test": "paired-equality", "n_pairs": 0, "status": "n/a"}
    bad = [(b, c) for b, c in pairs if abs(c - b) > g.tolerance]
    return {
        "test": "paired-equality",
        "n_pairs": len(pairs),
        "mismatches": len(bad),
        "examples": [list(p) for p in bad[:5]],
        "status": _verdict(bool(bad)),
    }


def _drop_thin_sides(sides: dict[str, dict[str, Any]], min_n: int) -> None:
    """A side with too few samples of its own does not block a verdict another side gives.

    At the 100 % stage legacy runs only stragglers (an execution pinned just before the
    promotion): its one or two records must not hold the stage forever when the previous
    stage's two-phase records give a full comparison. The candidate's own shortage still holds.
    """
    decided = any(side["status"] in ("pass", "fail") for side in sides.values())
    for side in sides.values():
        thin_other = side.get("n_other", min_n) < min_n
        enough_candidate = side.get("n_candidate", 0) >= min_n
        if decided and side["status"] == "insufficient" and thin_other and enough_candidate:
            side["status"] = "n/a"
            side["note"] = "too few samples on this side; judged on the other comparison"


def _guardrail(s: Samples, g: Guardrail, min_n: int) -> dict[str, Any]:
    empty: Floats = np.zeros(0)
    cand = s.candidate.get(g.metric, empty)
    sides: dict[str, dict[str, Any]] = {}
    if g.kind == "invariant":
        sides["pairs"] = _invariant(s.pairs.get(g.metric, []), g)
    elif g.kind == "latency":
        if g.against != "reference":
            sides["baseline"] = _latency(cand, s.baseline.get(g.metric, empty), g, min_n)
        if s.reference is not None and g.against != "baseline":
            sides["reference"] = _latency(cand, s.reference.get(g.metric, empty), g, min_n)
    else:
        if g.against != "reference":
            sides["baseline"] = _rate(cand, s.baseline.get(g.metric), g, min_n)
        if s.reference is not None and g.metric in s.reference and g.against != "baseline":
            sides["reference"] = _rate(cand, s.reference[g.metric], g, min_n)
    if not sides:  # judged against the previous stage only, and this is the first stage
        return {**asdict(g), "status": "n/a", "passed": True, "comparisons": {}}
    _drop_thin_sides(sides, min_n)
    statuses = [side["status"] for side in sides.values()]
    status: Status
    if "fail" in statuses:
        status = "fail"
    elif g.kind == "invariant" or (len(cand) == 0 and "insufficient" not in statuses):
        status = statuses[0] if g.kind == "invariant" else "n/a"  # nothing to judge here
    elif "insufficient" in statuses or "pass" not in statuses:
        status = "insufficient"  # too few samples, or nothing to compare the candidate with
    else:
        status = "pass"
    passed = status in ("pass", "n/a")
    return {**asdict(g), "status": status, "passed": passed, "comparisons": sides}


# -- the verdict --------------------------------------------------------------------------------
def _reason(g: Guardrail, ev: dict[str, Any]) -> str:
    label = f"{g.metric} ({g.kind}, {'critical' if g.critical else 'non-critical'})"
    parts = []
    for side, cmp in ev["comparisons"].items():
        if cmp["status"] in ("fail", "insufficient"):
            detail = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in cmp.items()
                if k not in ("status", "test", "examples")
            )
            parts.append(f"{cmp['status']} vs {side}: {detail}")
    return f"{label}: " + "; ".join(parts)


def judge_samples(
    samples: Samples, guardrails: Sequence[Guardrail], *, min_samples: int
) -> Verdict:
    """The verdict from already gathered samples (what the benchmark drives directly)."""
    if min_samples < 1:
        raise InvalidEventError(f"min_samples must be at least 1, got {min_samples}")
    evidence: dict[str, Any] = {"min_samples": min_samples, "guardrails": {}}
    failed_critical: list[str] = []
    failed_other: list[str] = []
    short: list[str] = []
    if samples.n_candidate < min_samples:
        short.append(f"too few candidate executions: {samples.n_candidate} < {min_samples}")
    for g in guardrails:
        ev = _guardrail(samples, g, min_samples)
        key = g.metric if g.metric not in evidence["guardrails"] else f"{g.metric}#{g.kind}"
        evidence["guardrails"][key] = ev
        if ev["status"] == "fail":
            (failed_critical if g.critical else failed_other).append(_reason(g, ev))
        elif ev["status"] == "insufficient":
            short.append(_reason(g, ev))
    if failed_critical:
        return Verdict("rollback", failed_critical + failed_other, evidence)
    if short or failed_other:
        return Verdict("hold", failed_other + short, evidence)
    return Verdict("promote", ["every guardrail passed"], evidence)


def judge(
    records: Sequence[MetricRecord],
    guardrails: Sequence[Guardrail],
    *,
    min_samples: int,
    reference: Sequence[MetricRecord] | None = None,
    candidate: MergePath = MergePath.TWO_PHASE,
    baseline: MergePath = MergePath.LEGACY,
) -> Verdict:
    """Judge one stage: ``records`` from its window, ``reference`` from the previous stage."""
    samples = collect(records, reference=reference, candidate=candidate, baseline=baseline)
    verdict = judge_samples(samples, guardrails, min_samples=min_samples)
    verdict.evidence["counts"] = {
        "candidate": sum(1 for r in records if r.path == candidate),
        "baseline": sum(1 for r in records if r.path == baseline),
        "reference": None if reference is None else sum(r.path == candidate for r in reference),
    }
    return verdict
