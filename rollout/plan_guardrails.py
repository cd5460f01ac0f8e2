"""The ``guardrails`` and ``judge`` sections of a rollout plan, validated into
:class:`~rollout.guardrails.Guardrail` s.

Beyond the fields' own ranges, a guardrail is refused when it could never pass (a comparison an
identical candidate fails: :func:`_passable`), when it compares only against the previous stage
(the first stage has none), or when a margin or budget has no meaning for its kind; a plan needs
at least one critical guardrail, and each (metric, kind) once. ``judge.alpha`` is the whole
rollout's false-rollback rate, spread evenly over the stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from rollout.guardrails import Guardrail
from rollout.metric_names import MetricName, Unit
from rollout.plan_fields import PlanError, mapping, no_extra, number

KINDS: Final = ("latency", "rate", "invariant")
WORSE: Final = ("higher", "lower")
TOLERANCE_RANGE: Final[dict[str, tuple[float, float]]] = {
    "latency": (0.0, 10.0),  # relative change of the median: 0.25 = 25 % worse; 10 = 11x
    "rate": (0.0, 1.0),  # absolute difference of two proportions
    "invariant": (0.0, 1_000_000.0),  # absolute difference allowed between paired values
}
_KIND_UNIT: Final = {"latency": Unit.MILLISECONDS, "rate": Unit.COUNT, "invariant": Unit.COUNT}

_GUARD_FIELDS = {
    "metric",
    "kind",
    "worse",
    "tolerance",
    "critical",
    "alpha",
    "alarm_threshold",
    "against",
    "budget",
    "margin",
}
_AGAINST = ("both", "baseline", "reference", "budget")


def _budget(
    where: str, data: Mapping[str, Any], kind: str, against: str
) -> tuple[float | None, float]:
    """``budget`` (with ``against: budget`` only) and ``margin``: a rate in [0, 1] or ms >= 0."""
    if (against == "budget") != ("budget" in data):
        raise PlanError(f"{where}.budget", "required with against: budget, and only with it")
    margin = number(f"{where}.margin", data.get("margin", 0.0))
    if not 0 <= margin <= 1:
        raise PlanError(
            f"{where}.margin",
            f"{margin:g} is outside [0, 1] (the non-inferiority margin: absolute rate for a rate, "
            "added to 1 + tolerance for a latency ratio)",
        )
    if margin and (kind == "invariant" or (kind == "latency" and against == "budget")):
        what = "an invariant" if kind == "invariant" else "a latency budget (its median is shown"
        what += "" if kind == "invariant" else " within the budget itself)"
        raise PlanError(f"{where}.margin", f"{margin:g}: no margin for {what}; remove it")
    if "budget" not in data:
        _passable(where, kind, against, data, margin)
        return None, margin
    if kind == "invariant":
        raise PlanError(f"{where}.budget", "an invariant has no budget")
    budget = number(f"{where}.budget", data["budget"])
    if budget < 0 or (kind == "rate" and budget > 1):
        raise PlanError(f"{where}.budget", f"{budget:g} is outside the range of a {kind}")
    if margin and budget == 0:  # any event fails: there is nothing to show within a margin
        raise PlanError(f"{where}.margin", f"{margin:g}: a budget of 0 fails on any event; drop it")
    return budget, margin


def _passable(where: str, kind: str, against: str, data: Mapping[str, Any], margin: float) -> None:
    """Refuse a comparison with a side that an identical candidate could never pass: a pass
    needs the effect's upper confidence bound within what is allowed, and an upper bound is
    above the estimate at every size."""
    if margin or against == "budget" or kind == "invariant":
        return
    if kind == "rate":
        raise PlanError(
            f"{where}.margin",
            f"0 for a rate against {against}: a pass needs the candidate's upper bound within "
            "(1 + tolerance) x the other side's lower bound + margin, and with no event on the "
            "other side that lower bound is 0, so an identical candidate never passes; set an "
            "absolute margin (the packaged MergeErrors: 0.015)",
        )
    if number(f"{where}.tolerance", data["tolerance"]) == 0:
        raise PlanError(
            f"{where}.margin",
            f"0 with tolerance 0 for a latency against {against}: the allowed ratio is 1 and "
            "the ratio's upper bound is above its estimate, so an identical candidate never "
            "passes; set a margin or a tolerance (the packaged FinalMergeDuration: 0.1 + 0.1)",
        )


def _guardrail(index: int, raw: object, default_alpha: float = 0.01) -> Guardrail:
    where = f"guardrails[{index}]"
    data = mapping(where, raw)
    no_extra(where, data, _GUARD_FIELDS)
    for key in ("metric", "kind", "worse", "tolerance"):
        if key not in data:
            raise PlanError(f"{where}.{key}", "missing")
    try:
        metric = MetricName(str(data["metric"]))
    except ValueError:
        raise PlanError(
            f"{where}.metric", f"unknown metric {data['metric']!r} (see rollout/metric_names.py)"
        ) from None
    kind, worse = data["kind"], data["worse"]
    if kind not in KINDS:
        raise PlanError(f"{where}.kind", f"{kind!r} is not one of {list(KINDS)}")
    if worse not in WORSE:
        raise PlanError(f"{where}.worse", f"{worse!r} is not one of {list(WORSE)}")
    if metric.unit is not _KIND_UNIT[kind]:
        raise PlanError(f"{where}.kind", f"{metric} is in {metric.unit}, not a {kind} metric")
    tolerance = number(f"{where}.tolerance", data["tolerance"])
    low, high = TOLERANCE_RANGE[kind]
    if not low <= tolerance <= high:
        raise PlanError(
            f"{where}.tolerance", f"{tolerance:g} is outside [{low:g}, {high:g}] for {kind}"
        )
    critical = data.get("critical", False)
    if not isinstance(critical, bool):
        raise PlanError(f"{where}.critical", f"{critical!r} is not true/false")
    alpha = number(f"{where}.alpha", data.get("alpha", default_alpha))
    if not 0 < alpha < 0.5:
        raise PlanError(f"{where}.alpha", f"{alpha:g} is outside (0, 0.5)")
    if "alarm_threshold" in data:
        number(f"{where}.alarm_threshold", data["alarm_threshold"])
    against = data.get("against", "both")
    if against not in _AGAINST:
        raise PlanError(f"{where}.against", f"{against!r} is not one of {list(_AGAINST)}")
    if against == "reference":  # the first stage has no previous one: it would hold there forever
        raise PlanError(
            f"{where}.against",
            "'reference' alone cannot pass the first stage (there is no stage before it) and "
            "compares windows taken at another share and load; use baseline (legacy in the same "
            "window), both, or a budget",
        )
    budget, margin = _budget(where, data, kind, against)
    return Guardrail(metric.value, kind, worse, tolerance, critical, alpha, against, budget, margin)


def judge_alpha(raw: object, stages: int) -> float:
    """``judge.alpha``: the whole rollout's false-rollback rate, split evenly over the stages
    (each stage's critical guardrails are one Holm family at alpha / stages)."""
    if raw is None:
        return 0.01
    data = mapping("judge", raw)
    no_extra("judge", data, {"alpha"})
    alpha = number("judge.alpha", data.get("alpha", 0.05))
    if not 0 < alpha < 0.5:
        raise PlanError("judge.alpha", f"{alpha:g} is outside (0, 0.5)")
    return alpha / stages


def guardrails(raw: object, default_alpha: float = 0.01) -> tuple[Guardrail, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PlanError("guardrails", "expected a non-empty list of guardrails")
    out = tuple(_guardrail(i, item, default_alpha) for i, item in enumerate(raw))
    seen: set[tuple[str, str]] = set()
    for index, g in enumerate(out):
        if (g.metric, g.kind) in seen:
            raise PlanError(f"guardrails[{index}]", f"{g.metric} ({g.kind}) is declared twice")
        seen.add((g.metric, g.kind))
    if not any(g.critical for g in out):
        raise PlanError("guardrails", "no critical guardrail: nothing could ever roll back")
    return out
