"""The controller never turns off a kill switch pulled by hand ("Rolling back by hand" in
docs/runbook.md) — not when it finishes a transition a killed controller left pending, not in a
rollback that first finishes one, and not when the switch is pulled while ``init`` runs.

Also: a rollback that loses the state write to an advance still rolls back, and what a clock
running ahead does to the bake (a documented limit).

Each fault is shown to have fired (the transition is pending, the switch is on before the next
command); the checker (:func:`kill_switch_kept`) is shown to catch the old behaviour (negative
control).
"""

from __future__ import annotations

from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.controller import RolloutConflictError
from rollout.flag_writer import RolloutFlagState, set_flags
from rollout.state import FileStateStore
from rollout.state_types import RolloutState, Status
from tests.unit.rollout_ctl.conftest import Rig
from tests.unit.rollout_ctl.helpers import CountingStore, ManualClock
from tests.unit.rollout_ctl.test_resilience import Crash, CrashOnWrite


class RecordingStore(CountingStore):
    """Remembers what every save set (percent, kill switch)."""

    def __init__(self, doc: object | None = None) -> None:
        super().__init__(doc)
        self.written: list[tuple[float, bool]] = []

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        version = super().save(doc, expected_version)
        seen = rollout_state_of(doc)
        self.written.append((seen.percent, seen.kill_switch))
        return version


def kill_switch_kept(store: RecordingStore, since: int) -> list[str]:
    """The checker: after the manual pull (save ``since``), no save turned the switch off."""
    later = enumerate(store.written[since:], start=since)
    return [f"save {i} set the kill switch off" for i, (_, kill) in later if not kill]


def pull_by_hand(store: CountingStore) -> None:
    """The operator's manual kill switch: the fleet goes legacy, whatever the controller says."""
    writer = DocumentFlagWriter(store)
    current, version = writer.read()
    writer.write(RolloutFlagState(current.percent, True), version)


def _pending_after_crash(rig: Rig, step: str, **init: Any) -> None:
    """Kill the controller in the middle of ``step`` (before its flag write lands)."""
    ctl = rig.controller()
    crashing = CountingStore(rig.flags.raw)
    crashing.refuse = Crash("killed mid flag write")  # the process is gone
    ctl.flags = DocumentFlagWriter(crashing)
    with pytest.raises(Crash):
        ctl.init(rig.plan, **init) if step == "init" else ctl.advance()
    state = rig.states.read()[0]
    assert state is not None and state.pending is not None and state.pending.action == step


@pytest.mark.parametrize("command", ["recover", "advance", "rollback"])
def test_a_pending_init_is_not_finished_over_a_manual_kill_switch(rig: Rig, command: str) -> None:
    rig.flags = RecordingStore()
    _pending_after_crash(rig, "init")
    pull_by_hand(rig.flags)
    assert rollout_state_of(rig.flags.load()[0]).kill_switch  # the pull happened
    since = len(rig.flags.written)
    ctl = rig.controller()
    if command == "recover":
        state = ctl.recover()
        assert state is not None and state.pending is None and state.stage_index == 0
    elif command == "advance":  # finishes the init, then stops (it asked from another state)
        with pytest.raises(RolloutConflictError, match="init"):
            ctl.advance()
    else:
        state = ctl.rollback("saw errors")
        assert state.status is Status.ROLLED_BACK
    assert kill_switch_kept(rig.flags, since) == []
    assert rollout_state_of(rig.flags.load()[0]).kill_switch
    rig.controller().status()  # the record still verifies


def test_init_asked_to_clear_the_switch_does_not_clear_it_after_a_crash(rig: Rig) -> None:
    """``--clear-kill-switch`` is the operator's word for *that* command: a pending init finished
    by a later one cannot tell the switch it was asked to clear from one pulled since."""
    rig.flags = RecordingStore()
    pull_by_hand(rig.flags)
    _pending_after_crash(rig, "init", clear_kill_switch=True)
    since = len(rig.flags.written)
    state = rig.controller().recover()
    assert state is not None and state.pending is None and state.stage_index == 0
    assert kill_switch_kept(rig.flags, since) == []
    assert rollout_state_of(rig.flags.load()[0]) == RolloutFlagState(1.0, True)
    assert [e.action for e in rig.audit.history()] == ["init"]


@pytest.mark.parametrize("crash_at", ["flag write", "commit"])
def test_a_pending_advance_keeps_a_manual_rollback(rig: Rig, crash_at: str) -> None:
    rig.controller().init(rig.plan)
    rig.flags = RecordingStore(rig.flags.raw)
    if crash_at == "flag write":
        _pending_after_crash(rig, "advance")
    else:
        crashing = CrashOnWrite(rig.tmp / "state.json", n=2)  # 1: intent, 2: commit
        with pytest.raises(Crash):
            rig.controller(states=crashing).advance()
    writer = DocumentFlagWriter(rig.flags)
    _, version = writer.read()
    writer.write(RolloutFlagState(0.0, True), version)  # the runbook's rollback by hand
    since = len(rig.flags.written)
    state = rig.controller().recover()
    assert state is not None and state.pending is None and state.percent == 5.0
    assert kill_switch_kept(rig.flags, since) == []
    assert rollout_state_of(rig.flags.load()[0]).kill_switch  # the operator's pull stands
    # ... and the runbook's next step records it
    assert rig.controller().rollback("pulled by hand").status is Status.ROLLED_BACK
    assert rollout_state_of(rig.flags.load()[0]) == RolloutFlagState(0.0, True)
    assert [e.action for e in rig.audit.history()] == ["init", "advance", "rollback"]


def test_a_pending_init_already_logged_is_recorded_without_touching_the_switch(rig: Rig) -> None:
    """Killed between the audit append and the commit, then the switch pulled: the next command
    records the init and leaves the switch on."""
    rig.flags = RecordingStore()
    pull_by_hand(rig.flags)
    crashing = CrashOnWrite(rig.tmp / "state.json", n=2)  # 1: intent, 2: commit
    with pytest.raises(Crash):
        rig.controller(states=crashing).init(rig.plan, clear_kill_switch=True)
    assert [e.action for e in rig.audit.history()] == ["init"]
    assert not rollout_state_of(rig.flags.load()[0]).kill_switch  # init cleared it, as asked
    pull_by_hand(rig.flags)  # pulled again after the init's write
    since = len(rig.flags.written)
    state = rig.controller().recover()
    assert state is not None and state.pending is None and state.stage_index == 0
    assert kill_switch_kept(rig.flags, since) == []
    assert rollout_state_of(rig.flags.load()[0]).kill_switch
    rig.controller().status()  # the record still verifies


class PullDuringInit(DocumentFlagWriter):
    """The operator pulls the switch right after ``init`` checked it (its second read)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.reads = 0

    def read(self) -> tuple[RolloutFlagState, str]:
        self.reads += 1
        if self.reads == 2:
            pull_by_hand(self.store)
        return super().read()


def test_a_switch_pulled_while_init_runs_stays_on(rig: Rig) -> None:
    rig.flags = RecordingStore()
    ctl = rig.controller()
    ctl.flags = PullDuringInit(rig.flags)
    state = ctl.init(rig.plan)
    assert ctl.flags.reads >= 2 and len(rig.flags.written) >= 2  # the pull happened
    assert state.percent == 1.0
    assert kill_switch_kept(rig.flags, 1) == []
    assert rollout_state_of(rig.flags.load()[0]).kill_switch


def test_negative_control_finishing_a_pending_init_as_before_is_caught(rig: Rig) -> None:
    """What the old code did: write the init's target with the switch off, over the pull."""
    rig.flags = RecordingStore()
    pull_by_hand(rig.flags)
    since = len(rig.flags.written)
    set_flags(DocumentFlagWriter(rig.flags), 1.0, False, "init (replayed)")
    assert kill_switch_kept(rig.flags, since) != []


class AdvanceFirst(FileStateStore):
    """Another controller's ``advance`` wins the state write this controller's first intent
    was going to make (both read the same version: the ``together`` interleaving)."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(rig.states.path)
        self.rig, self.fired = rig, 0

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        if not self.fired:
            self.fired += 1
            self.rig.controller(actor="ci@runner").advance()
        return super().write(state, expected_version)


def test_a_rollback_racing_an_advance_still_rolls_back(rig: Rig) -> None:
    """The lever works whatever else is in flight: the rollback that lost the state write to an
    advance reads again and rolls back (before, it exited naming the advance, and the rollout
    went on at the advanced stage)."""
    rig.controller().init(rig.plan)
    racing = AdvanceFirst(rig)
    state = rig.controller(states=racing).rollback("saw errors")
    assert racing.fired == 1  # the advance won the first write
    assert state.status is Status.ROLLED_BACK and state.percent == 0.0
    assert rollout_state_of(rig.flags.load()[0]) == RolloutFlagState(0.0, True)
    assert [e.action for e in rig.audit.history()] == ["init", "advance", "rollback"]
    rig.controller().status()  # the record verifies


def test_a_controller_whose_clock_runs_ahead_shortens_the_bake_by_that_much(rig: Rig) -> None:
    """The documented limit (docs/runbook.md, "Clocks"): the bake is measured from the stage's
    start, stamped by the controller that started it, with the clock of the one that judges."""
    rig.controller().init(rig.plan)  # bake 600 s
    assert rig.controller().tick().action == "baking"  # a clock in step waits
    ahead = ManualClock(rig.clock.now + 600)
    result = rig.controller(clock=ahead, sleep=ahead.sleep).tick()
    assert result.action == "promote"  # judged at once: the bake was skipped
    behind = ManualClock(rig.clock.now - 600)
    assert rig.controller(clock=behind, sleep=behind.sleep).tick().action == "baking"
