"""The canary judge: promote, hold or roll back a stage from the two paths' raw records.

The controller asks after every bake and every recheck, so each test is **anytime-valid**
(``rollout.sequential``): however often a stage is looked at, a healthy stage fails a guardrail
with probability at most its α. The critical guardrails form one family per stage, controlled
with **Holm's step-down** at the smallest α among them; the plan spreads the whole rollout's α
over its stages (``rollout.plan_guardrails``: ``judge.alpha`` / number of stages), so the chance
of a false rollback over a whole rollout is at most that α. See ``docs/judge.md``.

The parts: a :class:`~rollout.guardrails.Guardrail` names a metric and its control
(``rollout.guardrails``); :func:`~rollout.samples.collect` turns the records into
:class:`~rollout.samples.Samples` (``rollout.samples``); each guardrail's comparisons and status
are :func:`~rollout.guardrail_check.check_guardrail` (``rollout.guardrail_check``, over the tests
of ``rollout.checks``). Here: the verdict over all of them.

Verdict: a critical guardrail rejected by Holm (or an invariant broken) → **rollback**, naming
the guardrail that decided; else any guardrail without evidence of no harm (``min_samples`` on
each side it needs, and non-inferiority shown: the upper end of the effect's confidence sequence
within tolerance + ``margin`` at its Holm-adjusted α, :func:`_require_noninferiority`) →
**hold** with the reason and the numbers; else a non-critical guardrail rejected at its own α →
hold; else **promote**. Absence of evidence of harm is never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from rollout import checks
from rollout.guardrail_check import check_guardrail
from rollout.guardrails import Guardrail
from rollout.samples import Samples, collect
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath
from snapmerge.errors import InvalidEventError

Decision = Literal["promote", "hold", "rollback"]


@dataclass
class Verdict:
    """The judge's answer for one stage: promote, hold or rollback, the reasons (the guardrail
    that decided first), and the evidence (every guardrail's comparisons, plain JSON)."""

    decision: Decision
    reasons: list[str]
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types already (no deep copy: the audit log serialises it as is)."""
        return {"decision": self.decision, "reasons": list(self.reasons), "evidence": self.evidence}


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
        found[key], by_key[key] = check_guardrail(samples, g, min_samples), g
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
