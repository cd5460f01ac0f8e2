"""The rollout controller: bake, judge, act — what each command changes in the rollout.

Each command (``init``, ``advance``, ``rollback``, ``pause``, ``resume``, and the loop's
``tick``/``run``) reads the state checked against its record
(:class:`~rollout.checked_state.CheckedReader`), decides the step it makes
(:mod:`rollout.decisions`: pure functions of the state, the plan and a verdict), and has
:class:`~rollout.transitions.TransitionRunner` apply it as a
:class:`~rollout.state_types.Transition`: one conditional state write (the intent) ahead of the
flag write and the audit entry, then the commit. How a transition is applied, settled after a
crash and reconciled after a flag write of unknown outcome is told there.

A command that finds a transition pending finishes it and then stops, raising
:class:`RolloutConflictError` naming that transition, because the operator asked for a change of
the state *they* saw, not of the one the pending transition made (two racing ``advance`` commands
would otherwise both apply, the second on top of the first). Likewise, a command given
``based_on`` (the state's sequence number when the CLI first read it) refuses a state another
controller has moved on since.

The controller never turns off a kill switch pulled by hand (the operator's "rollback by
hand"): ``init`` clears it only when asked (``clear_kill_switch``) and otherwise leaves it as the
document has it at the write. A pending transition is not withdrawn instead of finished: the
controller that wrote it may still be running, and would append its entry after the withdrawal.
Only ``rollback`` goes on after finishing a pending transition, or after losing its intent write
to another controller's (it reads again), unless the rollout is already rolled back. Commands
that only read (``status``, ``judge``) report a pending transition and never settle it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from rollout.audit import AuditLog
from rollout.audit_entry import GENESIS, AuditIntegrityError
from rollout.checked_state import RECOVER_ATTEMPTS
from rollout.decisions import Step, advance_step, partial_read, rollback_step, verdict_step
from rollout.flag_writer import (
    FlagWriter,
    FlagWriteRefusedError,
    FlagWriteUnknownError,
    RolloutFlagState,
)
from rollout.guardrails import Guardrail
from rollout.judge import Verdict, judge
from rollout.loop import (
    MIN_RECHECK_SECONDS,
    NotInitialisedError,
    RolloutConflictError,
    StateOutOfPlanError,
    TickResult,
    Timing,
)
from rollout.plan import PlanDigestError, RolloutPlan, parse_plan
from rollout.signing import AuditKey, AuditKeyError
from rollout.sources import MetricRecord, MetricSource, incomplete_read
from rollout.state import StateStore
from rollout.state_types import RolloutState, Status
from rollout.transitions import TransitionRunner
from rollout.verify import RecordMismatchError
from snapmerge.errors import InvalidEventError

JudgeFn = Callable[..., Verdict]
_LIVE = (Status.RUNNING, Status.PAUSED)
__all__ = [
    "MIN_RECHECK_SECONDS",
    "FlagWriteRefusedError",
    "FlagWriteUnknownError",
    "FlagWriter",
    "NotInitialisedError",
    "RolloutConflictError",
    "RolloutController",
    "RolloutFlagState",
    "StateOutOfPlanError",
    "TickResult",
    "Timing",
]


class RolloutController(TransitionRunner):
    """Runs a rollout plan: the operator's commands and the loop that bakes, judges and acts."""

    def __init__(
        self,
        states: StateStore,
        flags: FlagWriter,
        audit: AuditLog,
        source: MetricSource | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        timing: Timing | None = None,
        actor: str | None = None,
        judge_fn: JudgeFn = judge,
        key: AuditKey | None = None,
        based_on: int | None = None,
    ) -> None:
        super().__init__(states, flags, audit, clock=clock, actor=actor, key=key, based_on=based_on)
        self.source = source
        self.sleep = sleep
        self.timing = timing or Timing()
        self.judge_fn = judge_fn

    # -- reading ----------------------------------------------------------------------------------
    def status(self) -> RolloutState:
        """The state, checked against the record; read-only (a pending transition is reported,
        never applied, by a command that only reads)."""
        state, _ = self._read_checked()
        if state is None:
            raise NotInitialisedError("no rollout state: run `snapmerge rollout init --plan P`")
        return state

    def plan(self) -> RolloutPlan:
        return parse_plan(self.status().plan)

    def recover(self) -> RolloutState | None:
        """Finish a transition a crashed controller left pending; return the current state."""
        return self._current_or_none(strict=False)[0]

    # -- operations ---------------------------------------------------------------------------
    def init(
        self, plan: RolloutPlan, *, force: bool = False, clear_kill_switch: bool = False
    ) -> RolloutState:
        """Start ``plan`` at its first stage (refused while another rollout is live)."""
        try:
            state, version = self._current_or_none(strict=True)
            head = self._head(state)
        except (AuditIntegrityError, PlanDigestError, StateOutOfPlanError, AuditKeyError) as exc:
            if not force or self.audit.exists():
                if force:
                    raise RecordMismatchError(
                        f"{exc} — init --force does not sign on top of a record that does not "
                        "verify: start the new rollout with a new, empty audit location "
                        "(--audit), and keep this one for investigation"
                    ) from None
                raise
            state, version = self.states.read()  # replaced: nothing in it is acted on
            head = (0, GENESIS)  # the new, empty audit location
        live = state is not None and state.stage_index >= 0  # -1: an init that never applied
        if state is not None and live and state.status in _LIVE and not force:
            raise InvalidEventError(
                f"a rollout is {state.status} at {state.percent:g} %: finish or roll it back "
                "first, or pass --force"
            )
        flags, _ = self.flags.read()
        if flags.kill_switch and not clear_kill_switch:
            raise InvalidEventError(
                "the kill switch is on: pass --clear-kill-switch to start a rollout anyway"
            )
        base = RolloutState(plan.raw, plan.digest, -1, flags.percent, Status.PAUSED, self._now())
        base = self._seal(replace(base, seq=state.seq if state else 0), *head)
        first = plan.stages[0]
        # the kill switch is cleared only when asked: otherwise the write leaves it as it is, so
        # one pulled by hand after the check above is not undone
        clear = False if clear_kill_switch else None
        start = Step("init", 0, first.routed, Status.RUNNING)
        t = self._transition(base, start, "start rollout", kill_switch=clear)
        t = replace(t, from_status=state.status.value if state else "none")
        return self._apply(base, version, t, restore=state)

    def advance(self, to_pct: float | None = None, reason: str = "manual advance") -> RolloutState:
        """To the next stage, or the later one at ``to_pct`` (complete after the last)."""
        state, version = self._current()
        step = advance_step(state, parse_plan(state.plan), to_pct)
        return self._apply(state, version, self._transition(state, step, reason))

    def rollback(
        self, reason: str = "manual rollback", evidence: dict[str, Any] | None = None
    ) -> RolloutState:
        """Percentage 0 and the kill switch on, in one flag-document write.

        Goes on after finishing another controller's pending transition (the lever must work
        whatever else is in flight), and tries again when another controller's transition won
        the state write first (its intent lost, it applied nothing), but not when the rollout is
        already rolled back.
        """
        for attempt in range(RECOVER_ATTEMPTS):
            state, version = self._current(finish_then_continue=True)
            if state.status is Status.ROLLED_BACK:
                last = (state.last_action or {}).get("description", "an earlier rollback")
                raise RolloutConflictError(repr(self.states), version, version, str(last))
            step = rollback_step(state)
            t = self._transition(state, step, reason, kill_switch=True, evidence=evidence)
            try:
                return self._apply(state, version, t)
            except RolloutConflictError:
                if attempt + 1 == RECOVER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def pause(self, reason: str = "manual pause") -> RolloutState:
        return self._hold_or_go("pause", Status.RUNNING, Status.PAUSED, reason)

    def resume(self, reason: str = "manual resume") -> RolloutState:
        return self._hold_or_go("resume", Status.PAUSED, Status.RUNNING, reason)

    def judge(self) -> Verdict:
        """The judge's verdict on the current stage's records (no action taken)."""
        state = self.status()
        if self.source is None:
            raise InvalidEventError("no metric source configured (--emf or --log-group)")
        plan = parse_plan(state.plan)
        stage = plan.stages[max(state.stage_index, 0)]
        until = self._now() + 1
        records = self.source.records(since_ms=state.stage_started_ms, until_ms=until)
        short = incomplete_read(self.source)
        reference: Sequence[MetricRecord] | None = None
        if state.previous_stage_started_ms is not None:
            reference = self.source.records(state.previous_stage_started_ms, state.stage_started_ms)
            short = short or incomplete_read(self.source)
        guards: Sequence[Guardrail] = plan.guardrails
        verdict = self.judge_fn(
            records,
            guards,
            min_samples=stage.min_samples,
            reference=reference or None,
            routed_percent=stage.routed,
        )
        return partial_read(verdict, short)

    def tick(self) -> TickResult:
        """One step of the loop: wait out the bake, else judge and act on the verdict."""
        state, version = self._current()
        if state.status is not Status.RUNNING:
            return TickResult("idle", state)
        plan = parse_plan(state.plan)
        stage = plan.stages[state.stage_index]
        due = state.next_judge_ms or state.stage_started_ms + int(self.timing.bake(stage) * 1000)
        now = self._now()
        if now < due:
            return TickResult("baking", state, wait_seconds=(due - now) / 1000)
        verdict = self.judge()
        evidence = {"verdict": verdict.to_json()}
        reason = "; ".join(verdict.reasons)
        step = verdict_step(state, plan, verdict.decision)
        if step.action == "rollback":
            return TickResult("rollback", self.rollback(f"judge: {reason}", evidence), verdict)
        t = self._transition(state, step, reason, evidence=evidence)
        if step.action == "hold":
            recheck = now + int(self.timing.recheck(stage) * 1000)
            new = self._apply(state, version, replace(t, recheck_ms=recheck))
            return TickResult("hold", new, verdict, (recheck - now) / 1000)
        return TickResult(step.action, self._apply(state, version, t), verdict)

    def run(
        self,
        max_ticks: int | None = None,
        on_tick: Callable[[TickResult], None] | None = None,
    ) -> RolloutState:
        """Tick until the rollout is complete, rolled back or paused (or ``max_ticks``)."""
        ticks = 0
        while max_ticks is None or ticks < max_ticks:
            result = self.tick()
            ticks += 1
            if on_tick is not None:
                on_tick(result)
            if result.state.status is not Status.RUNNING:
                return result.state
            if result.action in ("baking", "hold"):
                self.sleep(
                    max(0.0, min(result.wait_seconds, self.timing.poll_seconds / self.timing.speed))
                )
        return self.status()

    def _hold_or_go(self, action: str, wanted: Status, to: Status, reason: str) -> RolloutState:
        """Pause or resume: the same stage and percentage, the other status."""
        state, version = self._current()
        if state.status is not wanted:
            raise InvalidEventError(f"the rollout is {state.status}, not {wanted}")
        step = Step(action, state.stage_index, state.percent, to)
        return self._apply(state, version, self._transition(state, step, reason))
