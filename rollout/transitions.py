"""How the controller changes a rollout: one conditional state write ahead of every action.

Every change is a :class:`~rollout.state_types.Transition` applied in three steps
(:meth:`TransitionRunner._apply`):

1. **intent** — the current state plus ``pending=transition`` is written conditionally on the
   version just read. Of two controllers acting on one state exactly one write succeeds; the
   other raises :class:`RolloutConflictError` having touched nothing.
2. **act** — the flag document is set to the transition's target (percentage of ``two_phase``
   and, for a rollback, the kill switch: one write), then the audit entry is appended. Both are
   idempotent for a transition id: the flag write is skipped when the document already has the
   target, and the audit log returns the entry already written for that id.
3. **commit** — the state after the transition replaces the intent (again conditionally).

Nothing read from the state is acted on before it is checked against the record
(:class:`~rollout.checked_state.CheckedReader`).

A controller that crashes after step 1 leaves ``pending`` behind; the next read that may change
the rollout finishes it (:meth:`TransitionRunner._settle`) — and with ``strict`` then stops,
raising :class:`RolloutConflictError` naming that transition. Whether the pending transition was
left by a crash or is being applied right now by another process cannot be told apart and does
not need to be: the steps are idempotent, so two processes finishing one transition write it once.
A pending transition finished by a later command leaves the kill switch as it is (it cannot tell
the switch its command was asked to clear from one pulled since).

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
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rollout.audit import AuditLog
from rollout.audit_entry import GENESIS, AuditEntry, default_actor
from rollout.checked_state import RECOVER_ATTEMPTS, CheckedReader
from rollout.decisions import Step
from rollout.flag_writer import (
    FlagWriter,
    FlagWriteRefusedError,
    FlagWriteUnknownError,
    RolloutFlagState,
    set_flags,
)
from rollout.loop import NotInitialisedError, RolloutConflictError
from rollout.signing import AuditKey
from rollout.state import StateConflictError, StateStore
from rollout.state_types import RolloutState, Transition
from snapmerge.errors import SnapmergeError


class TransitionRunner(CheckedReader):
    """Applies transitions to the rollout's state (intent, act, commit), settling one a
    crashed or racing controller left pending; every read is checked (:class:`CheckedReader`).

    :class:`~rollout.controller.RolloutController` builds on it and decides which transition
    each command makes.
    """

    def __init__(
        self,
        states: StateStore,
        flags: FlagWriter,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        actor: str | None = None,
        key: AuditKey | None = None,
        based_on: int | None = None,
    ) -> None:
        super().__init__(states, audit, clock=clock, key=key)
        self.flags = flags
        # the state's sequence number the command was given on (the CLI's first read): an
        # operation refuses to act on a state another controller has moved on since
        self.based_on = based_on
        self.actor = actor or default_actor()

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
        for _ in range(RECOVER_ATTEMPTS):
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

    def _transition(
        self,
        state: RolloutState,
        step: Step,
        reason: str,
        *,
        kill_switch: bool | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Transition:
        """The transition making ``step`` from ``state``, by this controller, now."""
        return Transition(
            who=self.actor,
            id=f"{state.seq + 1:06d}-{step.action}-{uuid.uuid4().hex[:12]}",
            action=step.action,
            from_percent=state.percent,
            to_percent=step.percent,
            from_status=state.status.value,
            to_status=step.status.value,
            to_stage=step.stage,
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
