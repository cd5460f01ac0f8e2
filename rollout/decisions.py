"""What the controller decides, as pure functions of the state, the plan and a verdict.

Each command reads the state (:class:`~rollout.checked_state.CheckedReader`), asks here which
:class:`Step` it makes, and has :class:`~rollout.transitions.TransitionRunner` apply it. Nothing
here reads or writes a store, so each decision is tested on values alone:

* :func:`advance_step` — ``advance`` (the next stage, or the one ``--to`` names; past the last
  stage the rollout completes at the last stage's full percentage, ending a holdback);
* :func:`verdict_step` — a tick acting on the judge's verdict: rollback, hold where it is,
  promote to the next stage, or complete after the last;
* :func:`rollback_step` — a rollback, by hand or on a verdict;
* :func:`partial_read` — a verdict on fewer records than the source holds never promotes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rollout.judge import Decision, Verdict
from rollout.plan import RolloutPlan
from rollout.state_types import RolloutState, Status
from snapmerge.errors import InvalidEventError


@dataclass(frozen=True)
class Step:
    """A transition decided on: its action, the stage it moves to, the percentage the flag
    routes after it and the status after it (who, when and why are added when it is applied)."""

    action: str
    stage: int
    percent: float
    status: Status


def advance_step(state: RolloutState, plan: RolloutPlan, to_pct: float | None) -> Step:
    """``advance`` by hand: to the next stage, or to the later stage at ``to_pct``."""
    if state.status in (Status.ROLLED_BACK, Status.COMPLETE):
        raise InvalidEventError(f"the rollout is {state.status}: run init to start again")
    if state.status is Status.PAUSED:
        raise InvalidEventError(
            f"the rollout is paused at {state.percent:g} %: `snapmerge rollout resume` "
            "first (advance does not resume a paused rollout)"
        )
    if to_pct is None:
        target = state.stage_index + 1
    else:
        found = plan.stage_index(to_pct)
        stages = [s.percent for s in plan.stages]
        if found is None or found <= state.stage_index:
            raise InvalidEventError(
                f"--to {to_pct:g} is not a later stage of the plan {stages} "
                f"(now at {state.percent:g} %)"
            )
        target = found
    if target >= len(plan.stages):
        last = plan.stages[state.stage_index].percent  # a holdback ends here
        return Step("complete", state.stage_index, last, Status.COMPLETE)
    return Step("advance", target, plan.stages[target].routed, Status.RUNNING)


def rollback_step(state: RolloutState) -> Step:
    """Percentage 0 at the current stage (the kill switch goes on with it)."""
    return Step("rollback", state.stage_index, 0.0, Status.ROLLED_BACK)


def verdict_step(state: RolloutState, plan: RolloutPlan, decision: Decision) -> Step:
    """What a tick does with the judge's ``decision`` on the running stage."""
    if decision == "rollback":
        return rollback_step(state)
    if decision == "hold":
        return Step("hold", state.stage_index, state.percent, Status.RUNNING)
    if state.stage_index + 1 >= len(plan.stages):
        stage = plan.stages[state.stage_index]
        return Step(
            "complete", state.stage_index, stage.percent, Status.COMPLETE
        )  # a holdback ends
    target = state.stage_index + 1
    return Step("promote", target, plan.stages[target].routed, Status.RUNNING)


def partial_read(verdict: Verdict, short: str | None) -> Verdict:
    """The verdict on a read the source reports ``short`` (incomplete): a promote becomes a
    hold, with the reason and the evidence saying why; a complete read changes nothing."""
    if short is None:
        return verdict
    decision: Decision = "rollback" if verdict.decision == "rollback" else "hold"
    evidence = {**verdict.evidence, "incomplete_read": short}
    return replace(verdict, decision=decision, reasons=[*verdict.reasons, short], evidence=evidence)
