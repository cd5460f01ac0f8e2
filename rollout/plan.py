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
:class:`~rollout.plan_fields.PlanError` naming the field (``stages[2].percent``) and what is
wrong with it. Here: the plan's types, its stages and flag store, and loading; the guardrails
and ``judge`` sections are validated in ``rollout.plan_guardrails``. The plan's
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
from rollout.plan_fields import PlanError, count, mapping, no_extra, number, positive
from rollout.plan_guardrails import guardrails, judge_alpha
from snapmerge.errors import InvalidEventError

DEFAULT_PLAN: Final = Path(__file__).with_name("default_plan.yaml")

DEFAULT_RECHECK_SECONDS: Final = 60.0


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
    """One stage: the two-phase percentage it completes at, its bake before the first verdict,
    the executions a pass needs on each side, the wait after a hold, and the holdback kept on
    legacy while it is judged."""

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
    """A validated plan: its stages (percentages strictly increasing), its guardrails, where
    the flag document lives, and the decoded document it was parsed from (``raw``: what the
    digest binds)."""

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
        """The index of the stage completing at ``percent``, or None."""
        for index, stage in enumerate(self.stages):
            if math.isclose(stage.percent, percent):
                return index
        return None


_STAGE_FIELDS = {"percent", "bake_seconds", "min_samples", "recheck_seconds"}


def _two_decimals(value: float) -> bool:
    """A percentage the flag document can carry (hundredths of a percent)."""
    return math.isclose(round(value * 100), value * 100, abs_tol=1e-9)


def _stages(raw: object, defaults: Mapping[str, Any]) -> tuple[Stage, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PlanError("stages", "expected a non-empty list of stages")
    out: list[Stage] = []
    for index, item in enumerate(raw):
        where = f"stages[{index}]"
        data = {"percent": item} if isinstance(item, int | float) else mapping(where, item)
        no_extra(where, data, _STAGE_FIELDS | {"holdback"})
        merged = {"recheck_seconds": DEFAULT_RECHECK_SECONDS, **defaults, **data}
        for key in _STAGE_FIELDS:
            if key not in merged:
                raise PlanError(f"{where}.{key}", "missing (set it on the stage or in defaults)")
        pct = number(f"{where}.percent", merged["percent"])
        if not 0 < pct <= 100:
            raise PlanError(f"{where}.percent", f"{pct:g} is outside (0, 100]")
        if not _two_decimals(pct):
            raise PlanError(f"{where}.percent", f"{pct} has more than two decimals")
        if out and pct <= out[-1].percent:
            problem = "repeats" if pct == out[-1].percent else "is lower than"
            raise PlanError(
                f"{where}.percent",
                f"{pct:g} {problem} the previous stage's {out[-1].percent:g}: stages must "
                "strictly increase",
            )
        holdback = number(f"{where}.holdback", data.get("holdback", 0.0))
        if not 0 <= holdback < pct or not _two_decimals(holdback):
            raise PlanError(
                f"{where}.holdback", f"{holdback:g} must be in [0, {pct:g}) with two decimals"
            )
        out.append(
            Stage(
                holdback=holdback,
                percent=pct,
                bake_seconds=positive(f"{where}.bake_seconds", merged["bake_seconds"]),
                min_samples=count(f"{where}.min_samples", merged["min_samples"]),
                recheck_seconds=positive(f"{where}.recheck_seconds", merged["recheck_seconds"]),
            )
        )
    return tuple(out)


def _flag_store(raw: object) -> FlagStoreSpec:
    if raw is None:
        return FlagStoreSpec()
    data = mapping("flag_store", raw)
    no_extra("flag_store", data, {"kind", "location"})
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
    plan = mapping("plan", data)
    no_extra("plan", plan, {"name", "flag_store", "defaults", "stages", "guardrails", "judge"})
    name = plan.get("name", "rollout")
    if not isinstance(name, str) or not name.strip():
        raise PlanError("name", f"{name!r} is not a non-empty string")
    defaults = mapping("defaults", plan.get("defaults", {}))
    no_extra("defaults", defaults, _STAGE_FIELDS - {"percent"})
    stages = _stages(plan.get("stages"), defaults)
    return RolloutPlan(
        name=name,
        stages=stages,
        guardrails=guardrails(plan.get("guardrails"), judge_alpha(plan.get("judge"), len(stages))),
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
