"""One guardrail on one stage's samples: which comparisons it makes, and its status over them.

Each comparison itself (latency or rate against a side or a budget, an invariant) is
``rollout.checks``; here is what a guardrail's ``kind`` and ``against`` ask for, when a side is
``n/a`` (no legacy left in the window, no previous stage, no shadow run, an invariant nothing
records), and how the sides combine: Bonferroni over the p-values, a pass only when every judged
side has enough evidence. The verdict over all guardrails is ``rollout.judge``.

Controls (``against``):

* ``baseline`` — this stage's ``legacy`` records: the same operation, same window, same load.
  Under a switchback flag a latency is compared unit by unit (``rollout.samples.by_unit``):
  ``n_candidate``/``n_other`` and ``min_samples`` then count units; rates stay per execution.
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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from rollout import checks
from rollout.guardrails import Guardrail
from rollout.metric_names import MetricName
from rollout.samples import Floats, Samples

Status = Literal["pass", "fail", "insufficient", "n/a"]
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
            elif g.metric in s.unit_candidate or g.metric in s.unit_baseline:  # by unit
                sides["baseline"] = compare(
                    s.unit_candidate.get(g.metric, _EMPTY),
                    s.unit_baseline.get(g.metric, _EMPTY),
                    g.tolerance, g.worse, min_n, margin=g.margin,
                )  # fmt: skip
                sides["baseline"] |= {"unit": "switchback", "executions_candidate": len(cand),
                                      "executions_other": len(other),
                                      "mixed_units": len(s.mixed_units)}  # fmt: skip
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


def check_guardrail(s: Samples, g: Guardrail, min_n: int) -> dict[str, Any]:
    """The guardrail's evidence: its fields, ``status``, its ``p_value`` (Bonferroni over the
    sides; None when no side has one) and each side's ``comparisons``."""
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
