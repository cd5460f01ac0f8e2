"""The rollout plan: stages, bake times, guardrails, the flag store — validated before any run.

A plan is YAML or JSON (YAML is a superset, so one loader reads both)::

    name: final-merge-two-phase
    flag_store: {kind: env}              # env | file | s3 | ssm (+ location)
    defaults: {bake_seconds: 900, min_samples: 30, recheck_seconds: 120}
    stages:                              # percentages strictly increasing, in (0, 100]
      - {percent: 1, bake_seconds: 1800}
      - {percent: 5}
      - {percent: 100, holdback: 5}      # judged at 95 %, completed at 100 %
    guardrails:
      - {metric: LockHoldTime, kind: latency, worse: higher, tolerance: 0.25, critical: true}

Every problem is found before the controller touches a flag: :func:`parse_plan` raises
:class:`PlanError` naming the field (``stages[2].percent``) and what is wrong with it. The plan's
:attr:`RolloutPlan.digest` is stored in the controller's state and checked by every controller
operation (:func:`check_digest`): a state whose plan was edited in place is refused, not driven.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml

from rollout.guardrails import Guardrail
from rollout.metric_names import MetricName, Unit
from snapmerge.errors import InvalidEventError

DEFAULT_PLAN: Final = Path(__file__).with_name("default_plan.yaml")

DEFAULT_RECHECK_SECONDS: Final = 60.0
KINDS: Final = ("latency", "rate", "invariant")
WORSE: Final = ("higher", "lower")
TOLERANCE_RANGE: Final[dict[str, tuple[float, float]]] = {
    "latency": (0.0, 10.0),  # relative change of the median: 0.25 = 25 % worse; 10 = 11x
    "rate": (0.0, 1.0),  # absolute difference of two proportions
    "invariant": (0.0, 1_000_000.0),  # absolute difference allowed between paired values
}
_KIND_UNIT: Final = {"latency": Unit.MILLISECONDS, "rate": Unit.COUNT, "invariant": Unit.COUNT}


class PlanError(InvalidEventError):
    """A plan that must not run; the message names the field and the problem."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"invalid rollout plan: {where}: {problem}")


class PlanDigestError(InvalidEventError):
    """A stored plan that does not hash to the digest stored beside it (edited in place)."""


def digest_of(raw: Mapping[str, Any]) -> str:
    """sha256 of a plan's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_digest(raw: Mapping[str, Any], digest: str) -> None:
    """Raise :class:`PlanDigestError` unless ``raw`` hashes to ``digest``."""
    actual = digest_of(raw)
    if actual != digest:
        raise PlanDigestError(
            f"the stored plan does not match its digest (stored {digest[:12]}, computed "
            f"{actual[:12]}): the plan was edited after the rollout started; refusing to act. "
            "Run `snapmerge rollout verify`, then `rollout init --force` with the intended plan"
        )


class FlagStoreKind(StrEnum):
    ENV = "env"  # whatever SNAPMERGE_FLAGS_* names (the local file when none is set)
    FILE = "file"
    S3 = "s3"
    SSM = "ssm"


@dataclass(frozen=True)
class FlagStoreSpec:
    """Where the controller writes the flag document; the handlers adapter opens it."""

    kind: FlagStoreKind = FlagStoreKind.ENV
    location: str = ""


@dataclass(frozen=True)
class Stage:
    percent: float
    bake_seconds: float
    min_samples: int
    recheck_seconds: float
    # percentage points kept on legacy while the stage is judged: the flag routes
    # ``percent - holdback`` until the stage's verdict, so the last stage still has a same-window
    # control; completing the rollout routes ``percent`` (docs/judge.md, "The full stage")
    holdback: float = 0.0

    @property
    def routed(self) -> float:
        """The two-phase percentage the flag carries while this stage is judged."""
        return round(self.percent - self.holdback, 2)


@dataclass(frozen=True)
class RolloutPlan:
    name: str
    stages: tuple[Stage, ...]
    guardrails: tuple[Guardrail, ...]
    flag_store: FlagStoreSpec
    raw: Mapping[str, Any]

    @property
    def digest(self) -> str:
        """sha256 of the plan's canonical JSON: what the controller state is bound to."""
        return digest_of(self.raw)

    def stage_index(self, percent: float) -> int | None:
        for index, stage in enumerate(self.stages):
            if math.isclose(stage.percent, percent):
                return index
        return None


# -- field readers ----------------------------------------------------------------------------
def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanError(where, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise PlanError(where, f"{value!r} is not finite")
    return float(value)


def _positive(where: str, value: object) -> float:
    number = _number(where, value)
    if number <= 0:
        raise PlanError(where, f"{number:g} must be > 0")
    return number


def _count(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(where, f"{value!r} must be an integer >= 1")
    return value


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanError(where, f"expected a mapping, got {type(value).__name__}")
    return value


def _no_extra(where: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise PlanError(where, f"unknown field(s) {extra}; expected some of {sorted(allowed)}")


# -- sections ---------------------------------------------------------------------------------
_STAGE_FIELDS = {"percent", "bake_seconds", "min_samples", "recheck_seconds"}


def _stages(raw: object, defaults: Mapping[str, Any]) -> tuple[Stage, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PlanError("stages", "expected a non-empty list of stages")
    out: list[Stage] = []
    for index, item in enumerate(raw):
        where = f"stages[{index}]"
        data = {"percent": item} if isinstance(item, int | float) else _mapping(where, item)
        _no_extra(where, data, _STAGE_FIELDS | {"holdback"})
        merged = {"recheck_seconds": DEFAULT_RECHECK_SECONDS, **defaults, **data}
        for key in _STAGE_FIELDS:
            if key not in merged:
                raise PlanError(f"{where}.{key}", "missing (set it on the stage or in defaults)")
        pct = _number(f"{where}.percent", merged["percent"])
        if not 0 < pct <= 100:
            raise PlanError(f"{where}.percent", f"{pct:g} is outside (0, 100]")
        if not math.isclose(round(pct * 100), pct * 100, abs_tol=1e-9):
            raise PlanError(f"{where}.percent", f"{pct} has more than two decimals")
        if out and pct <= out[-1].percent:
            problem = "repeats" if pct == out[-1].percent else "is lower than"
            raise PlanError(
                f"{where}.percent",
                f"{pct:g} {problem} the previous stage's {out[-1].percent:g}: stages must "
                "strictly increase",
            )
        holdback = _number(f"{where}.holdback", data.get("holdback", 0.0))
        if not 0 <= holdback < pct or not math.isclose(
            round(holdback * 100), holdback * 100, abs_tol=1e-9
        ):
            raise PlanError(
                f"{where}.holdback", f"{holdback:g} must be in [0, {pct:g}) with two decimals"
            )
        out.append(
            Stage(
                holdback=holdback,
                percent=pct,
                bake_seconds=_positive(f"{where}.bake_seconds", merged["bake_seconds"]),
                min_samples=_count(f"{where}.min_samples", merged["min_samples"]),
                recheck_seconds=_positive(f"{where}.recheck_seconds", merged["recheck_seconds"]),
            )
        )
    return tuple(out)


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
    margin = _number(f"{where}.margin", data.get("margin", 0.0))
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
    budget = _number(f"{where}.budget", data["budget"])
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
    if _number(f"{where}.tolerance", data["tolerance"]) == 0:
        raise PlanError(
            f"{where}.margin",
            f"0 with tolerance 0 for a latency against {against}: the allowed ratio is 1 and "
            "the ratio's upper bound is above its estimate, so an identical candidate never "
            "passes; set a margin or a tolerance (the packaged FinalMergeDuration: 0.1 + 0.1)",
        )


def _guardrail(index: int, raw: object, default_alpha: float = 0.01) -> Guardrail:
    where = f"guardrails[{index}]"
    data = _mapping(where, raw)
    _no_extra(where, data, _GUARD_FIELDS)
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
    tolerance = _number(f"{where}.tolerance", data["tolerance"])
    low, high = TOLERANCE_RANGE[kind]
    if not low <= tolerance <= high:
        raise PlanError(
            f"{where}.tolerance", f"{tolerance:g} is outside [{low:g}, {high:g}] for {kind}"
        )
    critical = data.get("critical", False)
    if not isinstance(critical, bool):
        raise PlanError(f"{where}.critical", f"{critical!r} is not true/false")
    alpha = _number(f"{where}.alpha", data.get("alpha", default_alpha))
    if not 0 < alpha < 0.5:
        raise PlanError(f"{where}.alpha", f"{alpha:g} is outside (0, 0.5)")
    if "alarm_threshold" in data:
        _number(f"{where}.alarm_threshold", data["alarm_threshold"])
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


def _judge_alpha(raw: object, stages: int) -> float:
    """``judge.alpha``: the whole rollout's false-rollback rate, split evenly over the stages
    (each stage's critical guardrails are one Holm family at alpha / stages)."""
    if raw is None:
        return 0.01
    data = _mapping("judge", raw)
    _no_extra("judge", data, {"alpha"})
    alpha = _number("judge.alpha", data.get("alpha", 0.05))
    if not 0 < alpha < 0.5:
        raise PlanError("judge.alpha", f"{alpha:g} is outside (0, 0.5)")
    return alpha / stages


def _guardrails(raw: object, default_alpha: float = 0.01) -> tuple[Guardrail, ...]:
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


def _flag_store(raw: object) -> FlagStoreSpec:
    if raw is None:
        return FlagStoreSpec()
    data = _mapping("flag_store", raw)
    _no_extra("flag_store", data, {"kind", "location"})
    try:
        kind = FlagStoreKind(str(data.get("kind", "env")))
    except ValueError:
        kinds = [k.value for k in FlagStoreKind]
        raise PlanError("flag_store.kind", f"{data.get('kind')!r} is not one of {kinds}") from None
    location = str(data.get("location", "") or "")
    if kind is not FlagStoreKind.ENV and not location:
        raise PlanError("flag_store.location", f"required for a {kind} store")
    if kind is FlagStoreKind.S3 and not (location.startswith("s3://") and "/" in location[5:]):
        raise PlanError("flag_store.location", f"{location!r} is not s3://bucket/key")
    return FlagStoreSpec(kind, location)


# -- entry points ------------------------------------------------------------------------------
_PARSED: dict[str, RolloutPlan] = {}  # digest -> plan: the controller re-reads its plan each tick


def parse_plan(data: object) -> RolloutPlan:
    """Validate a decoded plan; raise :class:`PlanError` on the first problem found.

    A plan already parsed (same canonical JSON) is returned from a small cache; only valid
    plans are kept, so a bad one is refused every time."""
    key = digest_of(data) if isinstance(data, Mapping) else None
    hit = _PARSED.get(key) if key is not None else None
    if hit is not None and digest_of(hit.raw) == key:  # unchanged since it was parsed
        return hit
    parsed = _parse_plan(data)
    if key is not None:
        if len(_PARSED) >= 64:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def _parse_plan(data: object) -> RolloutPlan:
    plan = _mapping("plan", data)
    _no_extra("plan", plan, {"name", "flag_store", "defaults", "stages", "guardrails", "judge"})
    name = plan.get("name", "rollout")
    if not isinstance(name, str) or not name.strip():
        raise PlanError("name", f"{name!r} is not a non-empty string")
    defaults = _mapping("defaults", plan.get("defaults", {}))
    _no_extra("defaults", defaults, _STAGE_FIELDS - {"percent"})
    stages = _stages(plan.get("stages"), defaults)
    return RolloutPlan(
        name=name,
        stages=stages,
        guardrails=_guardrails(
            plan.get("guardrails"), _judge_alpha(plan.get("judge"), len(stages))
        ),
        flag_store=_flag_store(plan.get("flag_store")),
        raw=json.loads(json.dumps(plan, default=str)),
    )


def loads_plan(text: str, source: str = "<plan>") -> RolloutPlan:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(source, f"not YAML/JSON: {exc}") from None
    return parse_plan(data)


def load_plan(path: Path | str | None = None) -> RolloutPlan:
    """Read and validate a plan file (the packaged ``default_plan.yaml`` when None)."""
    target = Path(path) if path is not None else DEFAULT_PLAN
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(str(target), f"cannot be read: {exc.strerror}") from None
    return loads_plan(text, str(target))


def alarm_threshold(plan: RolloutPlan, guardrail: Guardrail) -> float | None:
    """The absolute alarm threshold a guardrail declares, or its rate budget (rollout.dashboard)."""
    for raw in plan.raw.get("guardrails", []):
        if raw.get("metric") == guardrail.metric and raw.get("kind") == guardrail.kind:
            value = raw.get("alarm_threshold")
            if value is not None:
                return float(value)
    if guardrail.kind == "rate" and guardrail.budget is not None:
        return guardrail.budget  # a rate budget is already absolute: alarm on it
    return None
