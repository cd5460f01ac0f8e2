"""The rollout controller: bake, judge, act — one conditional state write ahead of every action.

Every change is a :class:`~rollout.state.Transition` applied in three steps:

1. **intent** — the current state plus ``pending=transition`` is written conditionally on the
   version just read. Of two controllers acting on one state exactly one write succeeds; the
   other raises :class:`RolloutConflictError` having touched nothing.
2. **act** — the flag document is set to the transition's target (percentage of ``two_phase``
   and, for a rollback, the kill switch: one write), then the audit entry is appended. Both are
   idempotent for a transition id: the flag write is skipped when the document already has the
   target, and the audit log returns the entry already written for that id.
3. **commit** — the state after the transition replaces the intent (again conditionally).

Nothing read from the state is acted on before it is checked against the record
(:func:`rollout.verify.check_record`): every state write carries an anchor over all the state's
fields (``pending`` included), its location and the audit log's head, signed with the audit key
(:mod:`rollout.signing`); every command — a read-only one too — refuses a state whose fields do
not match it, a log that does not end at the anchored head, a missing anchor when a key is
configured, and a signed rollout when no key is.

A controller that crashes after step 1 leaves ``pending`` behind; the next operation that
changes the rollout finishes it (:meth:`RolloutController.recover`) — and then stops, raising
:class:`RolloutConflictError` naming that transition, because the operator asked for a change of
the state *they* saw, not of the one the pending transition made (two racing ``advance`` commands
would otherwise both apply, the second on top of the first). Likewise, a command given
``based_on`` (the state's sequence number when the CLI first read it) refuses a state another
controller has moved on since.

The controller never turns off a kill switch pulled by hand (the operator's "rollback by
hand"): ``init`` clears it only when asked (``clear_kill_switch``) and otherwise leaves it as the
document has it at the write, and a pending transition finished by a later command leaves it as
it is (it cannot tell the switch its command was asked to clear from one pulled since). It is not
withdrawn instead: the controller that wrote it may still be running, and would append its entry
after the withdrawal. Only ``rollback`` goes on after finishing a pending transition, or after
losing its intent write to another controller's (it reads again), unless the rollout is already
rolled back. Whether the pending transition was left by a crash or
is being applied right now by another process cannot be told apart and does not need to be: the
steps are idempotent, so two processes finishing one transition write it once. Commands that
only read (``status``, ``judge``) report a pending transition and never settle it.

When the flag store *refuses* the write (the document is unchanged when read back) the intent is
withdrawn and :class:`FlagWriteRefusedError` is raised: the flag document and the audit log are
left as they were. When the outcome is unknown (a timeout, and the document cannot be read back)
the intent is marked ``outcome_unknown`` and :class:`FlagWriteUnknownError` is raised. The next
command that changes the rollout *reconciles* it by reading the flag document, and never writes
it for that transition: the document shows the target → the transition is recorded (audit entry,
commit); it does not → the intent is withdrawn. A stale write is never applied later, over a
change someone made by hand meanwhile.

The flag document itself is reached through :class:`FlagWriter`, a Protocol: ``rollout`` may not
import ``flags``, and the document format lives with the adapter in ``handlers/rollout_flags.py``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rollout.audit import GENESIS, AuditEntry, AuditIntegrityError, AuditLog, default_actor
from rollout.flag_writer import (
    FlagWriter,
    FlagWriteRefusedError,
    FlagWriteUnknownError,
    RolloutFlagState,
    set_flags,
)
from rollout.judge import Decision, Guardrail, Verdict, judge
from rollout.loop import (
    MIN_RECHECK_SECONDS,
    NotInitialisedError,
    RolloutConflictError,
    StateOutOfPlanError,
    TickResult,
    Timing,
    check_state,
)
from rollout.plan import PlanDigestError, RolloutPlan, parse_plan
from rollout.signing import Anchor, AuditKey, AuditKeyError
from rollout.sources import MetricRecord, MetricSource, incomplete_read
from rollout.state import (
    RolloutState,
    StateConflictError,
    StateStore,
    Status,
    Transition,
    location_of,
)
from rollout.verify import RecordMismatchError, check_record
from snapmerge.errors import InvalidEventError, SnapmergeError

JudgeFn = Callable[..., Verdict]
_RECOVER_ATTEMPTS = 5
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


class RolloutController:
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
        self.states, self.flags, self.audit, self.source = states, flags, audit, source
        self.key = key
        self.location = location_of(states)  # bound into every signature
        # the state's sequence number the command was given on (the CLI's first read): an
        # operation refuses to act on a state another controller has moved on since
        self.based_on = based_on
        self.clock, self.sleep = clock, sleep
        self.timing = timing or Timing()
        self.actor = actor or default_actor()
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
        t = self._transition(base, "init", 0, first.routed, Status.RUNNING, "start rollout", clear)
        t = replace(t, from_status=state.status.value if state else "none")
        return self._apply(base, version, t, restore=state)

    def advance(self, to_pct: float | None = None, reason: str = "manual advance") -> RolloutState:
        state, version = self._current()
        plan = parse_plan(state.plan)
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
            t = self._transition(
                state, "complete", state.stage_index, last, Status.COMPLETE, reason
            )
        else:
            pct = plan.stages[target].routed
            t = self._transition(state, "advance", target, pct, Status.RUNNING, reason)
        return self._apply(state, version, t)

    def rollback(
        self, reason: str = "manual rollback", evidence: dict[str, Any] | None = None
    ) -> RolloutState:
        """Percentage 0 and the kill switch on, in one flag-document write.

        Goes on after finishing another controller's pending transition (the lever must work
        whatever else is in flight), and tries again when another controller's transition won
        the state write first (its intent lost, it applied nothing), but not when the rollout is
        already rolled back.
        """
        for attempt in range(_RECOVER_ATTEMPTS):
            state, version = self._current(finish_then_continue=True)
            if state.status is Status.ROLLED_BACK:
                last = (state.last_action or {}).get("description", "an earlier rollback")
                raise RolloutConflictError(repr(self.states), version, version, str(last))
            t = self._transition(
                state,
                "rollback",
                state.stage_index,
                0.0,
                Status.ROLLED_BACK,
                reason,
                True,
                evidence,
            )
            try:
                return self._apply(state, version, t)
            except RolloutConflictError:
                if attempt + 1 == _RECOVER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def pause(self, reason: str = "manual pause") -> RolloutState:
        state, version = self._current()
        self._require_status(state, Status.RUNNING)
        t = self._transition(
            state, "pause", state.stage_index, state.percent, Status.PAUSED, reason
        )
        return self._apply(state, version, t)

    def resume(self, reason: str = "manual resume") -> RolloutState:
        state, version = self._current()
        self._require_status(state, Status.PAUSED)
        t = self._transition(
            state, "resume", state.stage_index, state.percent, Status.RUNNING, reason
        )
        return self._apply(state, version, t)

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
        if short is None:
            return verdict
        # the judge saw fewer records than the source holds: never promote on a partial read
        decision: Decision = "rollback" if verdict.decision == "rollback" else "hold"
        evidence = {**verdict.evidence, "incomplete_read": short}
        return replace(
            verdict, decision=decision, reasons=[*verdict.reasons, short], evidence=evidence
        )

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
        if verdict.decision == "rollback":
            return TickResult("rollback", self.rollback(f"judge: {reason}", evidence), verdict)
        if verdict.decision == "hold":
            recheck = now + int(self.timing.recheck(stage) * 1000)
            t = self._transition(
                state,
                "hold",
                state.stage_index,
                state.percent,
                Status.RUNNING,
                reason,
                None,
                evidence,
            )
            new = self._apply(state, version, replace(t, recheck_ms=recheck))
            return TickResult("hold", new, verdict, (recheck - now) / 1000)
        if state.stage_index + 1 >= len(plan.stages):
            t = self._transition(
                state,
                "complete",
                state.stage_index,
                stage.percent,  # a holdback ends here
                Status.COMPLETE,
                reason,
                None,
                evidence,
            )
            return TickResult("complete", self._apply(state, version, t), verdict)
        target = state.stage_index + 1
        pct = plan.stages[target].routed
        t = self._transition(state, "promote", target, pct, Status.RUNNING, reason, None, evidence)
        return TickResult("promote", self._apply(state, version, t), verdict)

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

    # -- machinery ----------------------------------------------------------------------------
    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _current(self, *, finish_then_continue: bool = False) -> tuple[RolloutState, str | None]:
        state, version = self._current_or_none(strict=not finish_then_continue)
        if state is None:
            raise NotInitialisedError("no rollout state: run `snapmerge rollout init --plan P`")
        return state, version

    def _current_or_none(self, *, strict: bool) -> tuple[RolloutState | None, str | None]:
        """One read of the state and its version, checked, with no transition pending in it.

        A pending transition is settled first (:meth:`_settle`); with ``strict`` the command then
        stops with :class:`RolloutConflictError` naming it (see the module docstring).
        """
        settled: str | None = None
        for _ in range(_RECOVER_ATTEMPTS):
            state, version = self._read_checked(strict=strict)
            if state is None or state.pending is None:
                if settled is not None and strict:
                    raise RolloutConflictError(repr(self.states), version, version, settled)
                if strict and state is not None and self.based_on not in (None, state.seq):
                    last = (state.last_action or {}).get("description") or f"seq {state.seq}"
                    raise RolloutConflictError(repr(self.states), version, version, str(last))
                return state, version
            settled = self._settle(state, version, state.pending)
        raise RolloutConflictError(repr(self.states), None, None, "a transition still pending")

    def _read_checked(self, *, strict: bool = False) -> tuple[RolloutState | None, str | None]:
        """The state, refused unless the record backs it (:func:`rollout.verify.check_record`).

        The state is read before the log; a controller that commits in between makes the log
        look longer than the state says, so a failed check is believed only if the state did
        not move meanwhile. If it moved, another controller acted since our first read: with
        ``strict`` that is a lost race (:class:`RolloutConflictError` naming the winner), exactly
        as if our conditional write had lost; otherwise (rollback) read again and go on.
        """
        for _ in range(_RECOVER_ATTEMPTS):
            state, version = self.states.read()
            try:
                if state is not None:
                    check_state(state)
                check_record(self.audit, state, self.key, self.location)
                return state, version
            except AuditIntegrityError:
                now = self.states.read()[1]
                if now == version:
                    raise
                if strict and state is not None:
                    raise RolloutConflictError(
                        repr(self.states), version, now, self._winner()
                    ) from None
        raise RolloutConflictError(repr(self.states), None, None, "the state kept changing")

    def _settle(self, state: RolloutState, version: str | None, t: Transition) -> str:
        """Finish a pending transition (it is authenticated: the record check passed), or — when
        its flag write had an unknown outcome — reconcile it by reading the flag document:
        recorded if the document shows it, withdrawn if not. Never re-applies a stale write."""
        if not t.outcome_unknown:
            # finished by another command than the one that asked: it never turns the kill
            # switch off (one pulled by hand since the intent stays on)
            self._act_and_commit(state, version, t, keep_kill_switch=True)
            return t.describe()
        try:
            flags, _ = self.flags.read()
        except Exception as exc:
            raise FlagWriteUnknownError(
                f"{t.describe()}: its flag write had an unknown outcome and the flag document "
                f"still cannot be read ({exc}); nothing changed"
            ) from exc
        kill = flags.kill_switch if t.kill_switch is None else t.kill_switch
        if flags.same_as(RolloutFlagState(t.to_percent, kill)):
            # it landed: record it (no flag write; the switch is not turned off if pulled since)
            self._act_and_commit(state, version, t, keep_kill_switch=True)
            return f"{t.describe()} (its flag write landed: recorded)"
        withdrawn = self._seal(replace(state, pending=None), *self._head(state))
        try:
            self.states.write(withdrawn, version)
        except StateConflictError as exc:
            raise RolloutConflictError(
                exc.where, exc.expected, exc.current, self._winner()
            ) from None
        return (
            f"withdrew {t.describe()}: its flag write had an unknown outcome and the flag "
            f"document does not show it ({flags.percent:g} %, kill switch "
            f"{'on' if flags.kill_switch else 'off'})"
        )

    def _seal(self, state: RolloutState, count: int, head: str) -> RolloutState:
        return state.sealed(self.key, self.location, count, head)

    @staticmethod
    def _head(state: RolloutState | None) -> tuple[int, str]:
        """The anchored head of a checked state (an empty log when there is none)."""
        if state is None or state.audit_anchor is None:
            return 0, GENESIS
        anchor = Anchor.from_json(state.audit_anchor)
        return anchor.count, anchor.head

    @staticmethod
    def _require_status(state: RolloutState, wanted: Status) -> None:
        if state.status is not wanted:
            raise InvalidEventError(f"the rollout is {state.status}, not {wanted}")

    def _transition(
        self,
        state: RolloutState,
        action: str,
        stage: int,
        percent: float,
        status: Status,
        reason: str,
        kill_switch: bool | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Transition:
        return Transition(
            who=self.actor,
            id=f"{state.seq + 1:06d}-{action}-{uuid.uuid4().hex[:12]}",
            action=action,
            from_percent=state.percent,
            to_percent=percent,
            from_status=state.status.value,
            to_status=status.value,
            to_stage=stage,
            kill_switch=kill_switch,
            reason=reason,
            at_ms=self._now(),
            evidence=evidence or {},
        )

    def _apply(
        self,
        state: RolloutState,
        version: str | None,
        t: Transition,
        restore: RolloutState | None = None,
    ) -> RolloutState:
        """Intent, act, commit; on a refused flag write put back ``restore`` (else ``state``)."""
        if state.pending is not None:  # only ever built from _current_or_none's answer
            raise RolloutConflictError(repr(self.states), version, "a transition pending")
        intent = self._seal(replace(state, pending=t), *self._head(state))
        try:
            intent_version = self.states.write(intent, version)
        except StateConflictError as exc:
            raise RolloutConflictError(
                exc.where, exc.expected, exc.current, self._winner()
            ) from None
        try:
            done = self._act_and_commit(intent, intent_version, t)
        except FlagWriteRefusedError:  # read back: the document does not have the change
            self.states.write(restore or state, intent_version)  # withdraw the intent
            raise
        if self.based_on is not None:
            self.based_on = done.seq  # our own change: the loop goes on from it
        return done
        # FlagWriteUnknownError: the intent stays pending; the next command reads the document
        # back and finishes or withdraws it

    def _mark_unknown(self, intent: RolloutState, version: str | None, t: Transition) -> None:
        """Say in the state that ``t``'s flag write had an unknown outcome, so the next command
        reconciles it by reading the flag document instead of applying it again later."""
        if t.outcome_unknown:
            return
        marked = replace(intent, pending=replace(t, outcome_unknown=True))
        # unmarked (this write failed too), it is finished — applied — by the next command
        with contextlib.suppress(SnapmergeError):
            self.states.write(self._seal(marked, *self._head(intent)), version)

    def _winner(self) -> str:
        """The transition that beat us to the state: pending in it, or the last one committed."""
        state, _ = self.states.read()
        if state is None:
            return "the state was removed"
        if state.pending is not None:
            return state.pending.describe()
        last = state.last_action or {}
        return str(last.get("description") or f"{last.get('action', 'a change')} (seq {state.seq})")

    def _act_and_commit(
        self,
        intent: RolloutState,
        version: str | None,
        t: Transition,
        *,
        keep_kill_switch: bool = False,
    ) -> RolloutState:
        if t.touches_flags:
            kill = None if keep_kill_switch and t.kill_switch is False else t.kill_switch
            try:
                set_flags(self.flags, t.to_percent, kill, f"{t.action} ({t.id})")
            except FlagWriteUnknownError:
                self._mark_unknown(intent, version, t)
                raise
        entry = self.audit.append(
            AuditEntry(
                transition_id=t.id,
                action=t.action,
                from_percent=t.from_percent,
                to_percent=t.to_percent,
                from_status=t.from_status,
                to_status=t.to_status,
                reason=t.reason,
                who=t.who or self.actor,
                at=datetime.fromtimestamp(t.at_ms / 1000, UTC).isoformat(timespec="milliseconds"),
                plan_digest=intent.plan_digest,
                evidence=t.evidence,
                rollout=self.location,
            )
        )
        done = self._seal(intent.after(t), entry.seq + 1, entry.digest or GENESIS)
        try:
            self.states.write(done, version)
        except StateConflictError:
            current, _ = self.states.read()
            if current is None or current.seq != done.seq or current.pending is not None:
                raise
            return current  # another controller finished the same transition
        return done
