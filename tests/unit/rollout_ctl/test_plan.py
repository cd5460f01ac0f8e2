"""Plan validation: the packaged plan is valid; every kind of bad plan is refused, naming the
field and the problem."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rollout.guardrails import DEFAULT_GUARDRAILS
from rollout.metric_names import MetricName
from rollout.plan import DEFAULT_PLAN, FlagStoreKind, load_plan, loads_plan, parse_plan
from rollout.plan_fields import PlanError
from tests.unit.rollout_ctl.conftest import PLAN


def test_packaged_plan_is_valid_and_names_known_metrics() -> None:
    plan = load_plan(DEFAULT_PLAN)
    assert [s.percent for s in plan.stages] == [5, 25, 50, 100]
    assert [s.bake_seconds for s in plan.stages] == [3600, 10800, 1800, 3600]
    assert [s.min_samples for s in plan.stages] == [300, 300, 300, 150]
    assert [s.routed for s in plan.stages] == [5, 25, 50, 95]  # a 5 % legacy holdback
    assert all(g.alpha == 0.0125 for g in plan.guardrails)  # judge.alpha 0.05 over 4 stages
    margins = {g.metric: g.margin for g in plan.guardrails if g.against == "baseline"}
    assert margins == {"FinalMergeDuration": 0.1, "LockWaitTime": 0.0, "MergeErrors": 0.015}
    assert {g.metric for g in plan.guardrails} <= {m.value for m in MetricName}
    assert plan.flag_store.kind is FlagStoreKind.ENV


def test_packaged_plan_uses_the_judges_default_guardrails() -> None:
    # equal but for alpha: the plan splits judge.alpha (0.05) over its four stages
    packaged = {replace(g, alpha=0.01) for g in load_plan(DEFAULT_PLAN).guardrails}
    assert packaged == set(DEFAULT_GUARDRAILS)


def test_json_and_yaml_give_the_same_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    assert load_plan(path).digest == parse_plan(PLAN).digest
    assert load_plan(path).stages[2].percent == 25


def test_digest_changes_with_the_plan() -> None:
    other = copy.deepcopy(PLAN)
    other["stages"] = [1, 5, 25, 50, 99]
    assert parse_plan(other).digest != parse_plan(PLAN).digest


def _with(**changes: Any) -> dict[str, Any]:
    plan = copy.deepcopy(PLAN)
    for dotted, value in changes.items():
        target: Any = plan
        *parents, last = dotted.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return plan


_DELETE = object()

BAD_PLANS = [
    ("decreasing", _with(stages=[1, 25, 5]), "stages[2].percent", "lower than the previous"),
    ("overlapping", _with(stages=[1, 5, 5, 50]), "stages[2].percent", "repeats"),
    ("above 100", _with(stages=[50, 150]), "stages[1].percent", "outside (0, 100]"),
    ("zero", _with(stages=[0, 50]), "stages[0].percent", "outside (0, 100]"),
    ("three decimals", _with(stages=[0.125, 50]), "stages[0].percent", "two decimals"),
    ("no stages", _with(stages=[]), "stages", "non-empty"),
    ("bake zero", _with(defaults__bake_seconds=0), "stages[0].bake_seconds", "> 0"),
    ("min samples 0", _with(defaults__min_samples=0), "stages[0].min_samples", ">= 1"),
    ("missing bake", _with(defaults__bake_seconds=_DELETE), "bake_seconds", "missing"),
    (
        "unknown metric",
        _with(guardrails__0__metric="LockHoldTimes"),
        "guardrails[0].metric",
        "unknown metric",
    ),
    (
        "rate tolerance > 1",
        _with(guardrails__1__tolerance=1.5),
        "guardrails[1].tolerance",
        "outside [0, 1]",
    ),
    (
        "negative tolerance",
        _with(guardrails__0__tolerance=-0.1),
        "guardrails[0].tolerance",
        "outside",
    ),
    (
        "tolerance not a number",
        _with(guardrails__0__tolerance="big"),
        "guardrails[0].tolerance",
        "not a number",
    ),
    ("unknown kind", _with(guardrails__0__kind="median"), "guardrails[0].kind", "not one of"),
    (
        "latency on a count",
        _with(guardrails__1__kind="latency"),
        "guardrails[1].kind",
        "not a latency metric",
    ),
    ("unknown direction", _with(guardrails__0__worse="up"), "guardrails[0].worse", "not one of"),
    ("alpha out of range", _with(guardrails__0__alpha=0.9), "guardrails[0].alpha", "outside"),
    (
        "critical not bool",
        _with(guardrails__0__critical="yes"),
        "guardrails[0].critical",
        "true/false",
    ),
    ("typo field", _with(guardrails__0__tolerence=0.1), "guardrails[0]", "unknown field"),
    (
        "duplicate guardrail",
        _with(guardrails__2__metric="LockHoldTime"),
        "guardrails[2]",
        "declared twice",
    ),
    (
        "nothing critical",
        _with(guardrails__0__critical=False, guardrails__1__critical=False),
        "guardrails",
        "no critical",
    ),
    (
        "bad s3 store",
        _with(flag_store={"kind": "s3", "location": "bucket-only"}),
        "flag_store.location",
        "s3://bucket/key",
    ),
    ("unknown store", _with(flag_store={"kind": "consul"}), "flag_store.kind", "not one of"),
    ("margin above 1", _with(guardrails__1__margin=1.5), "guardrails[1].margin", "outside [0, 1]"),
    ("negative margin", _with(guardrails__0__margin=-0.1), "guardrails[0].margin", "outside"),
    ("margin not a number", _with(guardrails__0__margin="x"), "guardrails[0].margin", "number"),
    (
        "margin on a latency budget",
        _with(guardrails__0__against="budget", guardrails__0__budget=25, guardrails__0__margin=0.1),
        "guardrails[0].margin",
        "no margin for a latency budget",
    ),
    (
        "rate against a side without a margin",
        _with(guardrails__1__margin=0),
        "guardrails[1].margin",
        "an identical candidate never passes",
    ),
    (
        "latency against a side with neither tolerance nor margin",
        _with(guardrails__0__tolerance=0),
        "guardrails[0].margin",
        "the allowed ratio is 1",
    ),
]


@pytest.mark.parametrize(
    ("case", "plan", "where", "problem"), BAD_PLANS, ids=[b[0] for b in BAD_PLANS]
)
def test_bad_plans_are_refused_with_a_clear_error(
    case: str, plan: dict[str, Any], where: str, problem: str
) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(plan)
    assert where in info.value.where, (case, str(info.value))
    assert problem in info.value.problem, (case, str(info.value))


def test_not_yaml_and_missing_file_are_plan_errors(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="not YAML"):
        loads_plan("stages: [1, 5\n  guardrails: {")
    with pytest.raises(PlanError, match="cannot be read"):
        load_plan(tmp_path / "nope.yaml")
    with pytest.raises(PlanError, match="expected a mapping"):
        loads_plan("- 1\n- 2\n")


@pytest.mark.parametrize("holdback", [100, 120, -1, 0.001, "5"])
def test_a_holdback_outside_the_stage_is_refused(holdback: object) -> None:
    raw = copy.deepcopy(PLAN)
    raw["stages"][-1] = {"percent": 100, "holdback": holdback}
    with pytest.raises(PlanError) as info:
        parse_plan(raw)
    assert info.value.where == f"stages[{len(raw['stages']) - 1}].holdback"


def test_a_holdback_routes_less_than_the_stage_percent() -> None:
    raw = copy.deepcopy(PLAN)
    raw["stages"][-1] = {"percent": 100, "holdback": 2.5}
    last = parse_plan(raw).stages[-1]
    assert (last.percent, last.holdback, last.routed) == (100.0, 2.5, 97.5)
