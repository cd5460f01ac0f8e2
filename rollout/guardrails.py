"""A guardrail: one metric the judge compares, against what, within what tolerance.

What each field means and how a stage is judged on it: ``rollout.judge`` (the verdict),
``rollout.guardrail_check`` (one guardrail's comparisons) and ``docs/judge.md``. A plan declares
its own (``rollout.plan_guardrails`` validates them); :data:`DEFAULT_GUARDRAILS` are the packaged
plan's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rollout.metric_names import MetricName
from snapmerge.errors import InvalidEventError

Kind = Literal["latency", "rate", "invariant"]
Worse = Literal["higher", "lower"]
Against = Literal["both", "baseline", "reference", "budget"]


@dataclass(frozen=True)
class Guardrail:
    """One metric the judge compares on every stage: its ``kind``, which way is ``worse``, the
    ``tolerance``, whether a failure rolls back (``critical``) or holds, its ``alpha``, what it
    is compared ``against`` (with a ``budget`` for ``against: budget``) and the non-inferiority
    ``margin`` a pass must be shown within."""

    metric: str
    kind: Kind
    worse: Worse
    tolerance: float
    critical: bool
    alpha: float = 0.01
    against: Against = "both"
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
