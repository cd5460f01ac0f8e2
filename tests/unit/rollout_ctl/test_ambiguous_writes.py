"""A flag write whose outcome is unknown (a timeout, a lost reply) is read back, and the
transition is finished or withdrawn by what the document says — never withdrawn blindly.

The fault-injecting store times out *after* the write landed, *before* it landed, or also fails
the read-back. The checker (state, flag document and audit log agree) is shown to catch the
disagreement the old behaviour produced (negative control).
"""

from __future__ import annotations

from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.controller import FlagWriteRefusedError, FlagWriteUnknownError
from rollout.state_types import RolloutState
from snapmerge.errors import StoreError
from tests.unit.rollout_ctl.conftest import Rig
from tests.unit.rollout_ctl.helpers import CountingStore


class Timeout(StoreError):
    """What an adapter raises when the request timed out or its reply was lost."""


class FaultyFlagStore(CountingStore):
    """Times out once on save: ``after`` the write applied, or ``before``; ``then_unreadable``
    also fails the next ``reads_failing`` loads (the read-back)."""

    def __init__(self, doc: object, when: str, reads_failing: int = 0) -> None:
        super().__init__(doc)
        self.when, self.reads_failing, self.fired = when, reads_failing, 0
        self.saving = False

    def load(self) -> tuple[dict[str, Any], str]:
        if self.fired and self.reads_failing and not self.saving:
            self.reads_failing -= 1
            raise Timeout("GetObject timed out")
        return super().load()

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        if self.fired:
            return super().save(doc, expected_version)
        self.fired += 1
        if self.when == "after":
            self.saving = True
            try:
                super().save(doc, expected_version)
            finally:
                self.saving = False
        raise Timeout(f"PutObject timed out ({self.when} the write landed)")


def consistent(state: RolloutState, flags: Any, audit: list[Any]) -> list[str]:
    """The checker: the flag document, the state and the audit log's last entry agree."""
    problems = []
    doc = rollout_state_of(flags.load()[0])
    if state.pending is None and abs(doc.percent - state.percent) > 1e-9:
        problems.append(f"flags say {doc.percent} %, the state {state.percent} %")
    if state.pending is None and audit and abs(audit[-1].to_percent - state.percent) > 1e-9:
        problems.append(f"the audit says {audit[-1].to_percent} %, the state {state.percent} %")
    return problems


def _arm(rig: Rig, when: str, reads_failing: int = 0) -> FaultyFlagStore:
    rig.controller().init(rig.plan)
    faulty = FaultyFlagStore(rig.flags.raw, when, reads_failing)
    rig.flags = faulty
    return faulty


def test_timeout_after_the_write_landed_finishes_the_transition(rig: Rig) -> None:
    faulty = _arm(rig, "after")
    state = rig.controller().advance()
    assert faulty.fired == 1  # the fault happened
    assert state.percent == 5.0 and state.pending is None
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]
    assert consistent(state, faulty, rig.audit.history()) == []


def test_timeout_before_the_write_landed_withdraws_the_intent(rig: Rig) -> None:
    faulty = _arm(rig, "before")
    before = rig.states.read()[0]
    with pytest.raises(FlagWriteRefusedError, match="timed out"):
        rig.controller().advance()
    assert faulty.fired == 1
    state = rig.states.read()[0]
    assert state == before  # withdrawn: as it was
    assert [e.action for e in rig.audit.history()] == ["init"]
    assert state is not None and consistent(state, faulty, rig.audit.history()) == []


@pytest.mark.parametrize(("when", "settled_at", "logged"), [("after", 5.0, 2), ("before", 1.0, 1)])
def test_unknown_outcome_is_reconciled_by_reading_the_flag_document(
    rig: Rig, when: str, settled_at: float, logged: int
) -> None:
    """The rule: an unknown-outcome write is marked in the state; the next command that changes
    the rollout reads the flag document and records the transition if the document shows it,
    else withdraws it — it never writes the flag document for it."""
    faulty = _arm(rig, when, reads_failing=1)
    with pytest.raises(FlagWriteUnknownError, match="may or may not"):
        rig.controller().advance()
    assert faulty.fired == 1 and faulty.reads_failing == 0
    pending = rig.states.read()[0]
    assert pending is not None and pending.pending is not None  # not withdrawn blindly
    assert pending.pending.outcome_unknown  # marked for reconciliation
    saves = faulty.saves
    state = rig.controller().recover()  # the store answers again: settle by what is there
    assert faulty.saves == saves  # reconciled by reading: the flag document is not written
    assert state is not None and state.pending is None
    assert state.percent == settled_at  # after: it was there (recorded); before: withdrawn
    assert consistent(state, faulty, rig.audit.history()) == []
    assert [e.action for e in rig.audit.history()] == ["init", "advance"][:logged]


def test_read_only_commands_never_apply_an_unknown_outcome_write(rig: Rig) -> None:
    """Review finding (MEDIUM): `rollout status` applied a pending unknown-outcome write later,
    e.g. over a rollback the operator made by hand meanwhile."""
    faulty = _arm(rig, "before", reads_failing=1)
    with pytest.raises(FlagWriteUnknownError):
        rig.controller().advance()
    before, version = rig.states.read()
    saves, entries = faulty.saves, rig.audit.history()
    ctl = rig.controller()
    shown = ctl.status()
    ctl.judge()
    assert shown.pending is not None and shown.pending.action == "advance"
    assert faulty.saves == saves and rig.audit.history() == entries  # nothing written ...
    assert rig.states.read() == (before, version)  # ... anywhere
    assert rollout_state_of(faulty.load()[0]).percent == 1.0


def test_an_unknown_outcome_write_is_not_reapplied_over_a_manual_rollback(rig: Rig) -> None:
    """The operator pulls the kill switch by hand after the unknown outcome; the next command
    withdraws the stale advance instead of writing it over the operator's change."""
    faulty = _arm(rig, "before", reads_failing=1)
    with pytest.raises(FlagWriteUnknownError):
        rig.controller().advance()
    writer = DocumentFlagWriter(faulty)
    current, version = writer.read()
    writer.write(current.__class__(0.0, True), version)  # "Rolling back by hand"
    state = rig.controller().recover()
    assert state is not None and state.pending is None and state.percent == 1.0
    doc = rollout_state_of(faulty.load()[0])
    assert (doc.percent, doc.kill_switch) == (0.0, True)  # the operator's change stands
    assert [e.action for e in rig.audit.history()] == ["init"]


def test_negative_control_blind_withdrawal_is_caught_by_the_checker(rig: Rig) -> None:
    """What the old code did on a timeout after the write landed: withdraw without reading back."""
    faulty = _arm(rig, "after")
    state = rig.states.read()[0]
    assert state is not None
    writer = DocumentFlagWriter(faulty)
    current, version = writer.read()
    with pytest.raises(Timeout):
        writer.write(current.__class__(5.0, False), version)  # lands, then "times out"
    # ... and the intent is withdrawn: state and audit stay at 1 %
    assert consistent(state, faulty, rig.audit.history()) != []
