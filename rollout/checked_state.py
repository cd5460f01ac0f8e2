"""The rollout's state as the controller reads it: checked against its record before any use.

Nothing read from the state is acted on before it is checked against the record
(:func:`rollout.verify.check_record`): every state write carries an anchor over all the state's
fields (``pending`` included), its location and the audit log's head, signed with the audit key
(:mod:`rollout.signing`); every command — a read-only one too — refuses a state whose fields do
not match it, a log that does not end at the anchored head, a missing anchor when a key is
configured, and a signed rollout when no key is.

A failed check is believed only if the state did not move meanwhile (:meth:`_read_checked`);
a state that moved is another controller's commit, not a forgery. Applying transitions to the
state is :mod:`rollout.transitions`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rollout.audit import AuditLog
from rollout.audit_entry import GENESIS, AuditIntegrityError
from rollout.loop import RolloutConflictError, check_state
from rollout.signing import Anchor, AuditKey
from rollout.state import StateStore, location_of
from rollout.state_types import RolloutState
from rollout.verify import check_record

RECOVER_ATTEMPTS = 5


class CheckedReader:
    """Reads the rollout's state and refuses one its record does not back; seals a state to
    be written (its anchor over the fields, the location and the log's head)."""

    def __init__(
        self,
        states: StateStore,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.time,
        key: AuditKey | None = None,
    ) -> None:
        self.states, self.audit = states, audit
        self.key = key
        self.location = location_of(states)  # bound into every signature
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _read_checked(self, *, strict: bool = False) -> tuple[RolloutState | None, str | None]:
        """The state, refused unless the record backs it (:func:`rollout.verify.check_record`).

        The state is read before the log; a controller that commits in between makes the log
        look longer than the state says, so a failed check is believed only if the state did
        not move meanwhile. If it moved, another controller acted since our first read: with
        ``strict`` that is a lost race (:class:`RolloutConflictError` naming the winner), exactly
        as if our conditional write had lost; otherwise (rollback) read again and go on.
        """
        for _ in range(RECOVER_ATTEMPTS):
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

    def _seal(self, state: RolloutState, count: int, head: str) -> RolloutState:
        return state.sealed(self.key, self.location, count, head)

    @staticmethod
    def _head(state: RolloutState | None) -> tuple[int, str]:
        """The anchored head of a checked state (an empty log when there is none)."""
        if state is None or state.audit_anchor is None:
            return 0, GENESIS
        anchor = Anchor.from_json(state.audit_anchor)
        return anchor.count, anchor.head

    def _winner(self) -> str:
        """The transition that beat us to the state: pending in it, or the last one committed."""
        state, _ = self.states.read()
        if state is None:
            return "the state was removed"
        if state.pending is not None:
            return state.pending.describe()
        last = state.last_action or {}
        return str(last.get("description") or f"{last.get('action', 'a change')} (seq {state.seq})")
