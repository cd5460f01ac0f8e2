"""The controller's vocabulary: its errors, its timing, a tick's result, and the check every
operation makes on the state it reads (see :mod:`rollout.controller`)."""

from __future__ import annotations

from dataclasses import dataclass

from rollout.judge import Verdict
from rollout.plan import Stage, check_digest, parse_plan
from rollout.state import StateConflictError
from rollout.state_types import RolloutState
from snapmerge.errors import InvalidEventError, SnapmergeError

MIN_RECHECK_SECONDS = 1.0


class RolloutConflictError(StateConflictError):
    """Another controller acted first; ``winner`` names its transition. This command did nothing
    of its own (it may have finished the other controller's transition)."""

    def __init__(
        self, where: str, expected: str | None, current: str | None, winner: str = ""
    ) -> None:
        self.where, self.expected, self.current, self.winner = where, expected, current, winner
        SnapmergeError.__init__(
            self,
            f"another controller acted first: {winner or 'unknown transition'}. This command "
            "applied nothing; run `snapmerge rollout status` and decide again",
        )


class StateOutOfPlanError(InvalidEventError):
    """The state points at a stage the plan does not have."""


class NotInitialisedError(InvalidEventError):
    """No rollout state yet: run ``snapmerge rollout init --plan P`` first."""


@dataclass(frozen=True)
class Timing:
    """How fast the loop runs: ``speed`` divides every wait; ``bake_seconds`` overrides stages'."""

    speed: float = 1.0
    bake_seconds: float | None = None
    poll_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.speed > 0 or (self.bake_seconds is not None and self.bake_seconds < 0):
            raise InvalidEventError("speed must be > 0 and bake_seconds >= 0")

    def bake(self, stage: Stage) -> float:
        return (
            self.bake_seconds if self.bake_seconds is not None else stage.bake_seconds / self.speed
        )

    def recheck(self, stage: Stage) -> float:
        """After a hold; never under a second, so a zero bake cannot spin writing holds."""
        wait = stage.recheck_seconds / self.speed
        wait = min(wait, self.bake_seconds) if self.bake_seconds is not None else wait
        return max(wait, MIN_RECHECK_SECONDS)


@dataclass(frozen=True)
class TickResult:
    """What one step of the loop did (``action``), the state after it, the verdict it acted on
    and how long to wait before the next step."""

    action: str  # idle | baking | promote | hold | rollback | complete
    state: RolloutState
    verdict: Verdict | None = None
    wait_seconds: float = 0.0


def check_state(state: RolloutState) -> None:
    """Refuse a state that no plan stage or no digest backs (the record itself is checked by
    :func:`rollout.verify.check_record`)."""
    check_digest(state.plan, state.plan_digest)
    stages = len(parse_plan(state.plan).stages)
    if not -1 <= state.stage_index < stages:
        raise StateOutOfPlanError(
            f"the rollout state is at stage_index {state.stage_index}, but its plan has "
            f"{stages} stages (0..{stages - 1}): the state was edited or written for another "
            "plan; run `snapmerge rollout verify`, then start a new rollout "
            "(`rollout init --force` with a new audit location)"
        )
