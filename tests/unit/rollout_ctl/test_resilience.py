"""Crash and race: resume after a crash at each step, two controllers racing (exactly one wins,
with a negative control), a refused flag write changing nothing, a concurrent flag edit kept."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.controller import FlagWriteRefusedError, RolloutConflictError
from rollout.flag_writer import RolloutFlagState
from rollout.state import FileStateStore, StateConflictError
from rollout.state_types import RolloutState, Status
from tests.unit.rollout_ctl.conftest import Rig
from tests.unit.rollout_ctl.helpers import CountingStore, refusal


class Crash(BaseException):
    """Stands for the process dying at that point (no ``except Exception`` handler runs)."""


class CrashingAudit:
    def __init__(self, inner: Any) -> None:
        self.inner, self.crash = inner, True

    def append(self, entry: Any) -> Any:
        if self.crash:
            self.crash = False
            raise Crash("died before the audit append")
        return self.inner.append(entry)

    def history(self) -> Any:
        return self.inner.history()

    def exists(self) -> bool:
        return bool(self.inner.exists())


class CrashOnWrite(FileStateStore):
    """Fails the ``n``-th write (1-based) once."""

    def __init__(self, path: Any, n: int) -> None:
        super().__init__(path)
        self.n, self.writes = n, 0

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        self.writes += 1
        if self.writes == self.n:
            raise Crash("died before committing the state")
        return super().write(state, expected_version)


def test_crash_before_the_flag_write_is_finished_by_the_next_controller(rig: Rig) -> None:
    rig.controller().init(rig.plan)
    crashing = CountingStore(rig.flags.raw)
    crashing.refuse = Crash("died mid flag write")  # not a refusal: the process is gone
    ctl = rig.controller()
    ctl.flags = DocumentFlagWriter(crashing)
    with pytest.raises(Crash):
        ctl.advance()
    pending = rig.states.read()[0]
    assert pending is not None and pending.pending is not None and pending.percent == 1.0
    assert rollout_state_of(rig.flags.load()[0]).percent == 1.0
    state = rig.controller().recover()
    assert state is not None and state.percent == 5.0 and state.pending is None
    assert rollout_state_of(rig.flags.load()[0]).percent == 5.0
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]


def test_crash_after_the_flag_write_does_not_write_twice(rig: Rig) -> None:
    rig.controller().init(rig.plan)
    ctl = rig.controller()
    ctl.audit = CrashingAudit(rig.audit)
    with pytest.raises(Crash):
        ctl.advance()
    saves = rig.flags.saves
    state = rig.controller().status()
    assert state.pending is not None  # status only reads
    state = rig.controller().recover()
    assert state is not None and state.percent == 5.0 and state.pending is None
    assert rig.flags.saves == saves  # already at the target: no second write
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]


def test_crash_before_commit_does_not_duplicate_the_audit_entry(rig: Rig) -> None:
    rig.controller().init(rig.plan)
    crashing = CrashOnWrite(rig.tmp / "state.json", n=2)  # 1: intent, 2: commit
    with pytest.raises(Crash):
        rig.controller(states=crashing).advance()
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]
    # the next advance finishes the pending one and stops: the operator asked to advance from
    # the state they saw (1 %), not from the one the pending transition made (5 %)
    with pytest.raises(RolloutConflictError, match=r"advance 1→5 %.*by tester@host"):
        rig.controller().advance()
    assert rig.controller().status().percent == 5.0
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]
    state = rig.controller().advance()
    assert state.percent == 25.0
    assert [e.action for e in rig.audit.history()] == ["init", "advance", "advance"]
    assert len({e.transition_id for e in rig.audit.history()}) == 3


class ReadTogether(FileStateStore):
    """Every thread's first read returns only once both threads have read: both see one version."""

    def __init__(self, path: Any, barrier: threading.Barrier) -> None:
        super().__init__(path)
        self.barrier, self.seen = barrier, threading.local()

    def read(self) -> Any:
        answer = super().read()
        if not getattr(self.seen, "done", False):
            self.seen.done = True
            self.barrier.wait(timeout=10)
        return answer


class LastWriterWins(ReadTogether):
    """Negative control: a store that ignores the expected version. Each thread's first write
    also waits for the other's, so both have read the state *and* the log before either writes
    (else a slow thread reads the winner's log entry and stops, and the control proves nothing)."""

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        if not getattr(self.seen, "wrote", False):
            self.seen.wrote = True
            self.barrier.wait(timeout=10)
        while True:  # whatever the version is now: the check is gone
            try:
                return super().write(state, FileStateStore.read(self)[1])
            except StateConflictError:
                continue


def _race(rig: Rig, store_type: type[ReadTogether]) -> tuple[list[Any], list[Exception]]:
    rig.controller().init(rig.plan)
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[Exception] = []

    def one() -> None:
        ctl = rig.controller(states=store_type(rig.tmp / "state.json", barrier))
        try:
            results.append(ctl.advance(reason=threading.current_thread().name))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, name=f"controller-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results, errors


def test_two_controllers_racing_exactly_one_acts(rig: Rig) -> None:
    results, errors = _race(rig, ReadTogether)
    assert len(results) == 1 and len(errors) == 1, (results, errors)
    assert isinstance(errors[0], RolloutConflictError)
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]
    assert rig.controller().status().seq == 2


def test_negative_control_unconditional_state_writes_let_both_act(rig: Rig) -> None:
    _, errors = _race(rig, LastWriterWins)
    advances = [e for e in rig.audit.history() if e.action == "advance"]
    assert len(advances) == 2, "the checker must see two controllers acting"
    assert errors == []


@pytest.mark.parametrize("operation", ["advance", "rollback", "init"])
def test_refused_flag_write_leaves_flags_audit_and_state_unchanged(
    rig: Rig, operation: str
) -> None:
    if operation != "init":
        rig.controller().init(rig.plan)
    flags_before = rig.flags.load()
    audit_before = rig.audit.history()
    state_before = rig.states.read()[0]
    rig.flags.refuse = refusal()
    ctl = rig.controller()
    with pytest.raises(FlagWriteRefusedError, match="AccessDenied"):
        if operation == "init":
            ctl.init(rig.plan)
        else:
            getattr(ctl, operation)()
    assert rig.flags.load() == flags_before
    assert rig.audit.history() == audit_before
    after = rig.states.read()[0]
    if state_before is None:
        assert after is not None and after.stage_index == -1 and after.pending is None
    else:
        assert after == state_before
    rig.flags.refuse = None  # the store is fixed: the same command now works
    if operation == "init":
        assert ctl.init(rig.plan).percent == 1.0
    else:
        getattr(ctl, operation)()
        assert len(rig.audit.history()) == len(audit_before) + 1


class EditedUnderUs(CountingStore):
    """Another writer edits the document between our read and our save, once."""

    def save(self, doc: dict[str, Any], expected_version: str | None) -> str:
        if self.saves == 1 and not getattr(self, "edited", False):
            self.edited = True
            other = self.load()[0]
            other["group-size"] = {"default": 7, "boolean_type": False}
            super().save(other, self.load()[1])
        return super().save(doc, expected_version)


def test_a_concurrent_flag_edit_is_kept_and_the_change_reapplied(rig: Rig) -> None:
    rig.flags = EditedUnderUs()
    ctl = rig.controller()
    ctl.init(rig.plan)
    ctl.advance()
    doc = rig.flags.load()[0]
    assert doc["group-size"]["default"] == 7
    assert rollout_state_of(doc) == RolloutFlagState(5.0, False)
    assert ctl.status().status is Status.RUNNING


class OtherCommitsAfterFirstRead(FileStateStore):
    """Another controller's whole advance lands between our first state read and our log read
    (the interleaving the threaded race above hits about one run in twelve under load)."""

    def __init__(self, path: Any, other: Any) -> None:
        super().__init__(path)
        self.other, self.fired = other, False

    def read(self) -> Any:
        answer = super().read()
        if not self.fired:
            self.fired = True
            self.other()  # it commits: state and log move on before we read the log
        return answer


def test_a_commit_between_our_state_read_and_log_read_is_a_lost_race(rig: Rig) -> None:
    """Found in the merged tree: the record check re-read the moved state and advanced from it,
    so both racing advances acted (1 → 5 → 25 %). The command now stops as if its conditional
    write had lost, naming the winner."""
    rig.controller().init(rig.plan)
    store = OtherCommitsAfterFirstRead(rig.tmp / "state.json", lambda: rig.controller().advance())
    with pytest.raises(RolloutConflictError, match=r"advance 1→5 %"):
        rig.controller(states=store).advance()
    assert store.fired
    assert [e.action for e in rig.audit.history()] == ["init", "advance"]
    assert rig.controller().status().percent == 5.0


def test_a_rollback_whose_first_read_is_overtaken_still_rolls_back(rig: Rig) -> None:
    """The lever is not strict: the same interleaving reads again and rolls back."""
    rig.controller().init(rig.plan)
    store = OtherCommitsAfterFirstRead(rig.tmp / "state.json", lambda: rig.controller().advance())
    state = rig.controller(states=store).rollback()
    assert store.fired and state.status is Status.ROLLED_BACK
    assert [e.action for e in rig.audit.history()] == ["init", "advance", "rollback"]
