"""The controller's decisions on values alone (``rollout.decisions``): no store, no clock."""

from __future__ import annotations

import pytest

from rollout.decisions import Step, advance_step, partial_read, rollback_step, verdict_step
from rollout.judge import Verdict
from rollout.plan import parse_plan
from rollout.state_types import RolloutState, Status
from snapmerge.errors import InvalidEventError
from tests.unit.rollout_ctl.conftest import PLAN

HOLDBACK = {**PLAN, "stages": [1, 50, {"percent": 100, "holdback": 5}]}


def at(stage: int, percent: float, status: Status = Status.RUNNING) -> RolloutState:
    plan = parse_plan(HOLDBACK)
    return RolloutState(plan.raw, plan.digest, stage, percent, status, 0)


def test_each_verdict_decides_its_step() -> None:
    plan = parse_plan(HOLDBACK)
    first = at(0, 1.0)
    assert verdict_step(first, plan, "promote") == Step("promote", 1, 50.0, Status.RUNNING)
    assert verdict_step(first, plan, "hold") == Step("hold", 0, 1.0, Status.RUNNING)
    assert verdict_step(first, plan, "rollback") == Step("rollback", 0, 0.0, Status.ROLLED_BACK)
    assert rollback_step(first) == verdict_step(first, plan, "rollback")
    # the last stage is judged at its routed 95 % and completes at its full 100 %
    last = at(2, 95.0)
    assert verdict_step(at(1, 50.0), plan, "promote") == Step("promote", 2, 95.0, Status.RUNNING)
    assert verdict_step(last, plan, "promote") == Step("complete", 2, 100.0, Status.COMPLETE)


def test_advance_goes_to_the_next_or_the_named_later_stage() -> None:
    plan = parse_plan(HOLDBACK)
    assert advance_step(at(0, 1.0), plan, None) == Step("advance", 1, 50.0, Status.RUNNING)
    assert advance_step(at(0, 1.0), plan, 100) == Step("advance", 2, 95.0, Status.RUNNING)
    assert advance_step(at(2, 95.0), plan, None) == Step("complete", 2, 100.0, Status.COMPLETE)
    with pytest.raises(InvalidEventError, match="not a later stage"):
        advance_step(at(1, 50.0), plan, 1)
    with pytest.raises(InvalidEventError, match="paused"):
        advance_step(at(0, 1.0, Status.PAUSED), plan, None)
    with pytest.raises(InvalidEventError, match="run init"):
        advance_step(at(0, 0.0, Status.ROLLED_BACK), plan, None)


def test_a_partial_read_never_promotes() -> None:
    promote = Verdict("promote", ["every guardrail passed"], {"min_samples": 30})
    assert partial_read(promote, None) is promote
    held = partial_read(promote, "2 of 5 log streams unread")
    assert held.decision == "hold"
    assert held.reasons[-1] == "2 of 5 log streams unread"
    assert held.evidence["incomplete_read"] == "2 of 5 log streams unread"
    assert "incomplete_read" not in promote.evidence  # the judge's own verdict is left as it was
    rollback = Verdict("rollback", ["decided by X"], {})
    assert partial_read(rollback, "short").decision == "rollback"
