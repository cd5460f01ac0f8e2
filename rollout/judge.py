"""The canary judge: promote, hold or roll back a stage from the two paths' raw records.

The controller asks after every bake and every recheck, so each test is **anytime-valid**
(``rollout.sequential``): however often a stage is looked at, a healthy stage fails a guardrail
with probability at most its α. The critical guardrails form one family per stage, controlled
with **Holm's step-down** at the smallest α among them; the plan spreads the whole rollout's α
over its stages (``rollout.plan``: ``judge.alpha`` / number of stages), so the chance of a false
rollback over a whole rollout is at most that α. See ``docs/judge.md``.

Controls (``against``):

* ``baseline`` — this stage's ``legacy`` records: the same operation, same window, same load.
  At a routed 100 % (the controller passes ``routed_percent``; without it: the candidate takes
  ≥ 99 % of the window's executions, or legacy is a few stragglers) there is no control: that
  comparison is ``n/a``. A stage with a legacy holdback keeps one (docs/judge.md).
* ``reference`` — the previous stage's two-phase records (kept for plans that ask for it; a
  share-dependent metric should not use it).
* ``both`` — baseline and reference (Bonferroni over the two).
* ``budget`` — a stated limit, for what legacy cannot have: a rate (CAS failures ≤ 2 % of
  executions, non-inferiority with ``margin``) or a median latency in ms (two-phase lock hold,
  milliseconds against legacy's seconds). Judged on this stage's and the previous stage's
  candidate records together.

Verdict: a critical guardrail rejected by Holm (or an invariant broken) → **rollback**, naming
the guardrail that decided; else any guardrail without evidence of no harm (``min_samples`` on
each side it needs, and non-inferiority shown: the upper end of the effect's confidence sequence
within tolerance + ``margin`` at its Holm-adjusted α, :func:`_require_noninferiority`) →
**hold** with the reason and the numbers; else a non-critical guardrail rejected at its own α →
hold; else **promote**. Absence of evidence of harm is never a pass. Replayed results are left
out; shadow dry runs count only for the shadow and invariant guardrails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from rollout import checks
from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError

Kind = Literal["latency", "rate", "invariant"]
Worse = Literal["higher", "lower"]
Decision = Literal["promote", "hold", "rollback"]
Against = Literal["both", "baseline", "reference", "budget"]
Status = Literal["pass", "fail", "insufficient", "n/a"]
Floats = np.ndarray[Any, np.dtype[np.float64]]
PLANNED_CHUNKS_KEY = "planned_chunk_count"  # metadata: the chunk count the split planned


@dataclass(frozen=True)
class Guardrail:
    metric: str
    kind: Literal["latency", "rate", "invariant"]
    worse: Literal["higher", "lower"]
    tolerance: float
    critical: bool
    alpha: float = 0.01
    against: Literal["both", "baseline", "reference", "budget"] = "both"
    budget: float | None = None  # against: budget — a rate, or a median in the metric's unit
    # non-inferiority margin: a pass needs the effect shown within tolerance + margin — budget +
    # margin (rate budget), 1 + tolerance + margin (latency ratio vs a side), (1 + tolerance) x
    # the other's rate + margin (rate vs a side, absolute: 0.01 = one point); 0 for a latency
    # budget (its median is shown within the budget itself)
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.against not in ("both", "baseline", "reference", "budget"):
            raise InvalidEventError(
                f"guardrail {self.metric}: against must be both, baseline, reference or budget"
            )
        if self.kind not in ("latency", "rate", "invariant"):
            raise InvalidEventError(f"guardrail {self.metric}: unknown kind {self.kind!r}")
        if self.worse not in ("higher", "lower"):
            raise InvalidEventError(f"guardrail {self.metric}: worse must be higher or lower")
        if not 0.0 <= self.tolerance <= (1.0 if self.kind == "rate" else math.inf):
            raise InvalidEventError(
                f"guardrail {self.metric}: tolerance {self.tolerance} out of range"
            )
        if not 0.0 < self.alpha < 1.0:
            raise InvalidEventError(f"guardrail {self.metric}: alpha {self.alpha} not in (0, 1)")
        if (self.against == "budget") != (self.budget is not None):
            raise InvalidEventError(
                f"guardrail {self.metric}: a budget goes with against: budget, and only with it"
            )
        top = 1.0 if self.kind == "rate" else math.inf
        if self.budget is not None and not 0.0 <= self.budget <= top:
            raise InvalidEventError(f"guardrail {self.metric}: budget {self.budget} out of range")
        if not 0.0 <= self.margin <= 1.0:
            raise InvalidEventError(f"guardrail {self.metric}: margin {self.margin} out of range")
        if self.margin and (
            self.kind == "invariant"
            or (self.kind, self.against) == ("latency", "budget")
            or self.budget == 0.0
        ):
            raise InvalidEventError(
                f"guardrail {self.metric}: a margin has no meaning for a {self.kind}"
                + (" budget" if self.against == "budget" else "")
                + (" of 0 (any event fails)" if self.budget == 0.0 else "")
            )


@dataclass
class Verdict:
    decision: Literal["promote", "hold", "rollback"]
    reasons: list[str]
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types already (no deep copy: the audit log serialises it as is)."""
        return {"decision": self.decision, "reasons": list(self.reasons), "evidence": self.evidence}


@dataclass(frozen=True)
class Samples:
    """Per-metric arrays of each side; ``checks`` pairs (expected, got) per invariant metric."""

    candidate: Mapping[str, Floats]
    baseline: Mapping[str, Floats]
    reference: Mapping[str, Floats] | None = None
    pairs: Mapping[str, Sequence[tuple[float, float]] | Floats] = field(default_factory=dict)
    n_candidate: int = 0  # candidate executions in the window (dry runs excluded)
    clean: Mapping[str, Floats] = field(default_factory=dict)  # no CAS failure, no fallback
    reference_clean: Mapping[str, Floats] = field(default_factory=dict)
    n_baseline: int = 0  # legacy executions in the window
    reference_baseline: Mapping[str, Floats] | None = None  # the previous stage's legacy
    # invariant metrics some record of the window carries an expected value for (planned counts)
    planned_metrics: frozenset[str] = frozenset()
    # the two-phase percentage the flag routed in this window (the controller knows it from the
    # plan); None: inferred from the window's shares
    routed_percent: float | None = None


DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail(MetricName.LOCK_HOLD_TIME, "latency", "higher", 0.0, critical=True,
              against="budget", budget=25.0),
    Guardrail(MetricName.FINAL_MERGE_DURATION, "latency", "higher", 0.10, critical=True,
              against="baseline", margin=0.10),
    Guardrail(MetricName.LOCK_WAIT_TIME, "latency", "higher", 0.50, critical=False,
              against="baseline"),
    Guardrail(MetricName.CAS_FAILURES, "rate", "higher", 0.0, critical=True, against="budget",
              budget=0.02, margin=0.02),
    Guardrail(MetricName.MERGE_ERRORS, "rate", "higher", 0.0, critical=True, against="baseline",
              margin=0.015),
    Guardrail(MetricName.FALLBACK_TO_LEGACY, "rate", "higher", 0.0, critical=False,
              against="budget", budget=0.01, margin=0.01),
    Guardrail(MetricName.SHADOW_MISMATCHED, "rate", "higher", 0.0, critical=True,
              against="budget", budget=0.0),
    Guardrail(MetricName.CHUNK_COUNT, "invariant", "higher", 0.0, critical=True),
)  # fmt: skip


# -- gathering ----------------------------------------------------------------------------------
def _by_metric(records: Sequence[MetricRecord]) -> dict[str, Floats]:
    out: dict[str, list[float]] = {}
    for rec in records:
        for name, value in rec.values.items():
            out.setdefault(name, []).append(value)
    return {name: np.asarray(vals, dtype=np.float64) for name, vals in out.items()}


def _is_clean(rec: MetricRecord) -> bool:
    cas = rec.values.get(MetricName.CAS_FAILURES, 0.0)
    return cas <= 0 and rec.values.get(MetricName.FALLBACK_TO_LEGACY, 0.0) <= 0


def _last_by_batch(recs: Sequence[MetricRecord]) -> dict[str, MetricRecord]:
    latest: dict[str, MetricRecord] = {}
    for rec in sorted(recs, key=lambda r: r.timestamp_ms):
        batch = rec.metadata.get("batch_id")
        if batch is not None:
            latest[str(batch)] = rec
    return latest


def _checks(base: Sequence[MetricRecord], cand: Sequence[MetricRecord]) -> dict[str, list[Any]]:
    """(expected, got) per invariant: the planned chunk count of every candidate execution, and
    the legacy value beside the dry run's for every batch a shadow run saw on both paths."""
    out: dict[str, list[Any]] = {}
    for rec in cand:
        planned, got = rec.metadata.get(PLANNED_CHUNKS_KEY), rec.values.get(MetricName.CHUNK_COUNT)
        if planned is not None and got is not None and not rec.metadata.get("dry_run"):
            out.setdefault(MetricName.CHUNK_COUNT.value, []).append((float(planned), got))
    b = _last_by_batch(base)
    c = _last_by_batch([r for r in cand if r.metadata.get("dry_run")])
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
    runs = [r for r in cand if not r.metadata.get("dry_run")]
    ref = ref_clean = ref_base = None
    if reference is not None:
        ref_base = _by_metric(
            [r for r in reference if r.path == baseline and not r.metadata.get("replayed")]
        )
        kept = [r for r in reference if r.path == candidate and not r.metadata.get("replayed")]
        ref = _by_metric(kept)
        ref_clean = _by_metric([r for r in kept if _is_clean(r) and not r.metadata.get("dry_run")])
    return Samples(
        candidate=_by_metric(cand),
        baseline=_by_metric(base),
        reference=ref,
        pairs=_checks(base, cand),
        n_candidate=len(runs),
        clean=_by_metric([r for r in runs if _is_clean(r)]),
        reference_clean=ref_clean or {},
        n_baseline=len(base),
        reference_baseline=ref_base,
        planned_metrics=frozenset(
            MetricName.CHUNK_COUNT.value for r in live if PLANNED_CHUNKS_KEY in r.metadata
        ),
    )


# -- one guardrail --------------------------------------------------------------------------------
_EMPTY: Floats = np.zeros(0)
_UNPLANNED = (
    "unchecked: no record carries planned_chunk_count (the emitter does not record the split's "
    "plan) and no shadow run saw a batch on both paths"
)


def _pooled(now: Mapping[str, Floats], before: Mapping[str, Floats] | None, metric: str) -> Floats:
    parts = [now.get(metric, _EMPTY)] + ([before.get(metric, _EMPTY)] if before else [])
    return np.concatenate(parts)


def _earlier(s: Samples, metric: str) -> tuple[Floats, Floats] | None:
    if s.reference is None or s.reference_baseline is None:
        return None
    return s.reference.get(metric, _EMPTY), s.reference_baseline.get(metric, _EMPTY)


def _no_control(s: Samples, min_n: int = 1) -> bool:
    """The full stage: (nearly) no legacy left in the window — a share of 99 %, or a few
    stragglers beside enough candidate executions — and a stage before it judged."""
    total = s.n_candidate + s.n_baseline
    if s.reference is None or total == 0:
        return False
    if s.routed_percent is not None:  # known from the plan: a holdback is a control
        return s.routed_percent >= 100.0
    stragglers = s.n_baseline < min_n <= s.n_candidate
    return stragglers or s.n_candidate / total >= checks.FULL_SHARE


def _sides(s: Samples, g: Guardrail, min_n: int) -> dict[str, dict[str, Any]]:
    cand = s.candidate.get(g.metric, _EMPTY)
    if g.kind == "invariant":
        found = checks.invariant(s.pairs.get(g.metric, []), g.tolerance, min_n)
        if not found["n_checked"] and g.metric not in s.planned_metrics:
            found |= {"status": "n/a", "note": _UNPLANNED}
        return {"checks": found}
    if g.against == "budget":
        assert g.budget is not None
        if g.kind == "rate":
            values = _pooled(s.candidate, s.reference, g.metric)
            return {"budget": checks.rate_vs_budget(values, g.budget, g.margin, g.worse, min_n)}
        values = _pooled(s.clean, s.reference_clean, g.metric)
        return {"budget": checks.latency_vs_budget(values, g.budget, g.worse, min_n)}
    compare = checks.latency_vs if g.kind == "latency" else checks.rate_vs
    sides: dict[str, dict[str, Any]] = {}
    if g.against in ("both", "baseline"):
        if _no_control(s, min_n):
            note = "no legacy left in this window: judged at the stage before"
            sides["baseline"] = {"n_other": s.n_baseline, "status": "n/a", "p_value": None}
            sides["baseline"]["note"] = note
        else:
            other = s.baseline.get(g.metric, _EMPTY)
            if g.kind == "rate":
                sides["baseline"] = checks.rate_vs(
                    cand, other, g.tolerance, g.worse, min_n, _earlier(s, g.metric), g.margin
                )
            else:
                sides["baseline"] = compare(
                    cand, other, g.tolerance, g.worse, min_n, margin=g.margin
                )
    if g.against in ("both", "reference"):
        if s.reference is None:
            sides["reference"] = {"status": "n/a", "p_value": None, "note": "no previous stage"}
        else:
            other = s.reference.get(g.metric, _EMPTY)
            sides["reference"] = compare(cand, other, g.tolerance, g.worse, min_n, margin=g.margin)
    return sides


def _guardrail(s: Samples, g: Guardrail, min_n: int) -> dict[str, Any]:
    sides = _sides(s, g, min_n)
    judged = {k: v for k, v in sides.items() if v.get("status") != "n/a"}
    no_shadow = (
        g.metric == MetricName.SHADOW_MISMATCHED and not s.candidate.get(g.metric, _EMPTY).size
    )
    if no_shadow:  # no shadow run in this window: nothing to judge, nothing missing
        judged = {}
        for side in sides.values():
            side |= {"status": "n/a", "note": "no shadow run in this window"}
    ps = [v["p_value"] for v in judged.values() if v["p_value"] is not None]
    p = min(1.0, min(ps) * len(judged)) if ps else None  # Bonferroni over the sides
    enough = all(v["enough"] for v in judged.values())
    for v in judged.values():
        v["status"] = "pass" if v["enough"] else "insufficient"
    status: Status = "n/a" if not judged else "pass" if enough else "insufficient"
    if not judged and "reference" in sides and not _no_control(s, min_n) and not no_shadow:
        status = "insufficient"  # nothing to compare with is missing evidence, never a pass
        sides["reference"]["status"] = "insufficient"
    fields = {k: getattr(g, k) for k in g.__dataclass_fields__}
    return {**fields, "status": status, "p_value": p, "comparisons": sides}


# -- the verdict ----------------------------------------------------------------------------------
def _deterministic(g: Guardrail) -> bool:
    """Checks with no false alarm (an invariant, an event whose budget is 0): no α spent."""
    return g.kind == "invariant" or (g.against == "budget" and g.budget == 0.0)


def holm(p_values: Mapping[str, float], alpha: float) -> list[str]:
    """Holm's step-down: the hypotheses rejected at family-wise error ``alpha``, smallest p
    first (the first one is the guardrail that decided)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    rejected: list[str] = []
    for i, (name, p) in enumerate(ordered):
        if p > alpha / (len(ordered) - i):
            break
        rejected.append(name)
    return rejected


def _reason(key: str, g: Guardrail, ev: dict[str, Any]) -> str:
    label = f"{key} ({g.kind} vs {g.against}, {'critical' if g.critical else 'non-critical'})"
    parts = []
    for side, cmp in ev["comparisons"].items():
        if cmp.get("status") in ("fail", "insufficient"):
            detail = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in cmp.items()
                if k not in ("status", "test", "examples", "enough", "noninferiority", "pooled")
            )
            why = f"{cmp['noninferiority']}; " if cmp.get("noninferiority") else ""
            parts.append(f"{cmp['status']} vs {side}: {why}{detail}")
    return f"{label}: " + "; ".join(parts)


def _fail(ev: dict[str, Any]) -> None:
    """Mark the guardrail and the comparison that carried its smallest p-value as failed."""
    ev["status"], ev["passed"] = "fail", False
    sides = [v for v in ev["comparisons"].values() if v.get("p_value") is not None]
    if sides:
        min(sides, key=lambda v: v["p_value"])["status"] = "fail"


def _require_noninferiority(
    found: dict[str, dict[str, Any]], by_key: Mapping[str, Guardrail], family_alpha: float
) -> None:
    """A comparison passes only on evidence of no harm (:func:`rollout.checks.noninferiority`):
    the upper end of its effect's confidence sequence within tolerance + margin, at the level
    it would be rejected at — Holm's first step, ``family_alpha / m`` over the m critical
    guardrails judged, for a critical one (its own α for a non-critical one), divided among its
    sides. Otherwise it holds, and the reason gives the bound and what was allowed."""
    family = [
        k
        for k, ev in found.items()
        if by_key[k].critical and not _deterministic(by_key[k]) and ev["status"] != "n/a"
    ]
    for key, ev in found.items():
        g = by_key[key]
        level = family_alpha / max(1, len(family)) if g.critical else g.alpha
        sides = max(1, sum(v.get("status") != "n/a" for v in ev["comparisons"].values()))
        for side in [v for v in ev["comparisons"].values() if v.get("status") == "pass"]:
            why = checks.noninferiority(side, level / sides)
            if why is None:
                continue
            side["status"], side["enough"] = "insufficient", False
            side["noninferiority"] = "no evidence of no harm: " + why
            ev["status"] = "insufficient"


def judge_samples(
    samples: Samples, guardrails: Sequence[Guardrail], *, min_samples: int
) -> Verdict:
    """The verdict from already gathered samples (what the benchmark drives directly)."""
    if min_samples < 1:
        raise InvalidEventError(f"min_samples must be at least 1, got {min_samples}")
    critical = [g for g in guardrails if g.critical]
    family_alpha = min((g.alpha for g in critical), default=0.01)
    evidence: dict[str, Any] = {"min_samples": min_samples, "family_alpha": family_alpha}
    evidence["guardrails"] = found = {}
    by_key: dict[str, Guardrail] = {}
    for g in guardrails:
        key = g.metric if g.metric not in found else f"{g.metric}#{g.kind}"
        found[key], by_key[key] = _guardrail(samples, g, min_samples), g
    _require_noninferiority(found, by_key, family_alpha)
    p_of = {k: ev["p_value"] for k, ev in found.items() if ev["p_value"] is not None}
    certain = {k for k, p in p_of.items() if _deterministic(by_key[k]) and p == 0.0}
    p_of = {k: p for k, p in p_of.items() if not _deterministic(by_key[k])}
    rejected = holm({k: p for k, p in p_of.items() if by_key[k].critical}, family_alpha)
    rejected += [k for k, p in p_of.items() if not by_key[k].critical and p <= by_key[k].alpha]
    rejected = sorted(certain) + rejected  # a broken invariant or a forbidden event decides first
    for key, ev in found.items():
        ev["passed"] = ev["status"] in ("pass", "n/a")
        if key in rejected:
            _fail(ev)
    failed_critical = [_reason(k, by_key[k], found[k]) for k in rejected if by_key[k].critical]
    failed_other = [_reason(k, by_key[k], found[k]) for k in rejected if not by_key[k].critical]
    short = [_reason(k, by_key[k], ev) for k, ev in found.items() if ev["status"] == "insufficient"]
    if samples.n_candidate < min_samples:
        short.insert(0, f"too few candidate executions: {samples.n_candidate} < {min_samples}")
    if failed_critical:
        evidence["decided_by"] = rejected[0]
        reasons = [f"decided by {rejected[0]}", *failed_critical, *failed_other]
        return Verdict("rollback", reasons, evidence)
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
    routed_percent: float | None = None,
) -> Verdict:
    """Judge one stage: ``records`` from its window, ``reference`` from the previous stage;
    ``routed_percent``: the share the flag routed to ``candidate`` (a stage below 100 %, or
    one with a holdback, has a same-window control however few of its records are legacy)."""
    samples = collect(records, reference=reference, candidate=candidate, baseline=baseline)
    samples = replace(samples, routed_percent=routed_percent)
    verdict = judge_samples(samples, guardrails, min_samples=min_samples)
    verdict.evidence["counts"] = {
        "candidate": sum(1 for r in records if r.path == candidate),
        "baseline": sum(1 for r in records if r.path == baseline),
        "reference": None if reference is None else sum(r.path == candidate for r in reference),
    }
    return verdict
