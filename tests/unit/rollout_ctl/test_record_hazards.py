"""The record under an unlucky operator and an adversary, on the local file, S3 and DynamoDB:

* a state or audit entry that is not what the controller writes — wrong JSON type, a field of the
  wrong type, nesting deeper than the parser goes — is refused with the project's error naming
  the field, by every command and by ``rollout verify``; nothing is written (before, these
  crashed with ``TypeError``/``AttributeError``/``RecursionError`` tracebacks, or were reported
  as tampering);
* an earlier signed record put back whole verifies (the documented limit), either half is caught;
* a rotated key needs a new rollout at a new audit location (ADR 0009);
* a controller killed after each step of a transition is finished once by the next command
  (with a negative control for the checker).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter
from rollout.audit import AuditLog, JsonlAuditLog, S3AuditLog
from rollout.audit_entry import AuditIntegrityError
from rollout.controller import RolloutController
from rollout.dynamo import DynamoAuditLog, DynamoStateStore
from rollout.plan import parse_plan
from rollout.signing import AuditKey
from rollout.state import BlobStateStore, FileStateStore
from rollout.verify import verify_record
from snapmerge.errors import SnapmergeError, StoreError
from tests.unit.rollout_ctl.conftest import PLAN, Rig
from tests.unit.rollout_ctl.test_record_binding import (  # noqa: F401 (fixtures)
    KEY,
    Rollout,
    at,
    rollout,
)


def _write_raw_state(r: Rollout, body: bytes) -> None:
    states = r.where.states
    if isinstance(states, FileStateStore):
        states.path.write_bytes(body)
    elif isinstance(states, BlobStateStore):
        states.blobs.put(states.key, body)
    else:
        from snapmerge import aws as clients

        assert isinstance(states, DynamoStateStore)
        item = {**states._key(), "body": {"S": body.decode()}, "version": {"S": "hand"}}
        clients.client("dynamodb").put_item(TableName=states.table, Item=item)


def _edited(r: Rollout, edit: Callable[[dict[str, Any]], object]) -> bytes:
    data = r.where.read_state()
    edit(data)
    return json.dumps(data).encode()


STATES: dict[str, tuple[Callable[[Rollout], bytes], str]] = {
    "a JSON list": (lambda r: b'["not", "a", "state"]', "a rollout state is a JSON object"),
    "stage_index a string": (
        lambda r: _edited(r, lambda d: d.update(stage_index="2")),
        "field 'stage_index' is str",
    ),
    "percent a bool": (
        lambda r: _edited(r, lambda d: d.update(percent=True)),
        "field 'percent' is bool",
    ),
    "percent NaN": (lambda r: _edited(r, lambda d: d.update(percent=float("nan"))), "nan"),
    "pending percent a string": (
        lambda r: _edited(
            r,
            lambda d: d.update(
                pending={
                    "id": "x",
                    "action": "advance",
                    "from_percent": 25.0,
                    "to_percent": "100",
                    "from_status": "running",
                    "to_status": "running",
                    "to_stage": 4,
                    "kill_switch": None,
                    "reason": "r",
                    "at_ms": 1,
                }
            ),
        ),
        "field 'to_percent' is str",
    ),
    "nested past the parser's depth": (lambda r: b"[" * 100_000 + b"]" * 100_000, "Recursion"),
}


@pytest.mark.parametrize("shape", list(STATES))
def test_a_malformed_state_is_refused_by_every_command(rollout: Rollout, shape: str) -> None:  # noqa: F811
    make, named = STATES[shape]
    body = make(rollout)
    _write_raw_state(rollout, body)
    log = rollout.where.read_log()
    for command in ("status", "recover", "advance", "rollback"):
        with pytest.raises(StoreError, match="unreadable") as caught:
            getattr(rollout.controller(), command)()
        assert named in str(caught.value)
    with pytest.raises(StoreError, match="unreadable"):
        verify_record(rollout.where.audit, rollout.where.states.read()[0], KEY, "x")
    rollout.unchanged(log, 25.0)  # nothing written anywhere


def _entry_edit(field: str, value: object) -> Callable[[Rollout], None]:
    def edit(r: Rollout) -> None:
        entries = r.where.read_log()
        entries[1][field] = value
        r.where.write_log(entries)

    return edit


ENTRIES = {
    "evidence a list": (_entry_edit("evidence", [1, 2]), "field 'evidence' is list"),
    "to_percent a string": (_entry_edit("to_percent", "5"), "field 'to_percent' is str"),
    "who a number": (_entry_edit("who", 7), "field 'who' is int"),
}


@pytest.mark.parametrize("shape", list(ENTRIES))
def test_a_malformed_audit_entry_is_refused(rollout: Rollout, shape: str) -> None:  # noqa: F811
    edit, named = ENTRIES[shape]
    edit(rollout)
    log = rollout.where.read_log()
    for command in ("status", "advance"):
        with pytest.raises(SnapmergeError, match="unreadable") as caught:
            getattr(rollout.controller(), command)()
        assert named in str(caught.value)
    state = rollout.where.states.read()[0]
    with pytest.raises(AuditIntegrityError, match=named):
        verify_record(rollout.where.audit, state, KEY, rollout.where.states.location)  # type: ignore[attr-defined]
    rollout.unchanged(log, 25.0)


# -- replay: the whole record put back to an earlier signed point ---------------------------------
def test_an_earlier_signed_record_put_back_whole_verifies_but_halves_do_not(
    rollout: Rollout,  # noqa: F811
) -> None:
    """The documented limit (ADR 0009, runbook "The record"): an earlier state *and* log,
    restored together, verify — nothing in them can tell. Restoring only one of them is caught."""
    old_state, old_log = rollout.where.read_state(), rollout.where.read_log()
    rollout.controller().advance()
    new_state, new_log = rollout.where.read_state(), rollout.where.read_log()
    assert new_state["percent"] == 50.0 and len(new_log) == 4

    rollout.where.write_state(old_state)  # the state alone: the log goes on past its anchor
    with pytest.raises(AuditIntegrityError, match=r"entry 3 .* follows the anchored head"):
        rollout.controller().status()
    rollout.where.write_state(new_state)
    rollout.where.write_log(old_log)  # the log alone: its tail is missing
    with pytest.raises(AuditIntegrityError, match="entry 3 is missing"):
        rollout.controller().status()

    rollout.where.write_state(old_state)  # both: undetectable without history kept elsewhere
    where = rollout.where
    report = verify_record(where.audit, where.states.read()[0], KEY, where.states.location)  # type: ignore[attr-defined]
    assert report.entries == 3
    assert rollout.controller().status().percent == 25.0
    assert rollout.flag_percent() == 50.0  # what gives it away: the flags `status` prints


def test_the_whole_record_deleted_is_a_fresh_location(rig: Rig) -> None:
    """The earliest earlier point: with state and log both gone there is nothing to check
    against (docs/runbook.md, "Not detected"); the flag document still shows the old rollout."""
    from handlers.rollout_flags import rollout_state_of
    from rollout.controller import NotInitialisedError

    rig.controller().init(rig.plan)
    rig.controller().advance()
    rig.states.path.unlink()
    rig.audit.path.unlink()
    with pytest.raises(NotInitialisedError):
        rig.controller().status()
    assert rollout_state_of(rig.flags.load()[0]).percent == 5.0  # what gives it away
    assert rig.controller().init(rig.plan).percent == 1.0


# -- key rotation ---------------------------------------------------------------------------------
def _fresh_audit(r: Rollout, key: AuditKey) -> AuditLog:
    states = r.where.states
    if isinstance(states, FileStateStore):
        return JsonlAuditLog(states.path.parent / "audit-rotated.jsonl", key)
    if isinstance(states, BlobStateStore):
        return S3AuditLog(states.blobs, "alpha/audit-rotated/", key)
    assert isinstance(states, DynamoStateStore)
    return DynamoAuditLog(states.table, "alpha-rotated", key)


def test_a_rotated_key_needs_a_new_rollout_at_a_new_audit_location(
    rollout: Rollout,  # noqa: F811
) -> None:
    """ADR 0009: a state signed with another key is refused by every command; `init --force`
    does not sign with the new key on top of the old log; a new audit location does."""
    new = AuditKey(b"the-rotated-audit-key-98765")
    log = rollout.where.read_log()
    for command in ("status", "recover", "advance", "rollback", "pause"):
        with pytest.raises(AuditIntegrityError, match=r"signed with key \w+, not \w+"):
            getattr(rollout.controller(key=new), command)()
    with pytest.raises(AuditIntegrityError, match="init --force does not sign on top"):
        rollout.controller(key=new).init(parse_plan(PLAN), force=True)
    rollout.unchanged(log, 25.0)
    fresh = _fresh_audit(rollout, new)
    ctl = RolloutController(
        rollout.where.states,
        DocumentFlagWriter(rollout.flags),
        fresh,
        clock=rollout.clock,
        actor="ci",
        key=new,
    )
    assert ctl.init(parse_plan(PLAN), force=True).percent == 1.0
    where = rollout.where.states
    report = verify_record(fresh, where.read()[0], new, where.location)  # type: ignore[attr-defined]
    assert report.entries == 1 and report.key_id == new.key_id
    assert rollout.where.read_log() == log  # the old log kept as it was, for investigation


# -- kill -9 after each step of a transition, on the three backends -------------------------------
class Killed(BaseException):
    """The process is gone at that point (no ``except Exception`` runs)."""


class _States:
    def __init__(self, inner: Any, die_after_write: int) -> None:
        self.inner, self.left, self.location = inner, die_after_write, inner.location

    def read(self) -> Any:
        return self.inner.read()

    def write(self, state: Any, expected: Any) -> str:
        version = self.inner.write(state, expected)
        self.left -= 1
        if self.left == 0:
            raise Killed("after the state write")
        return str(version)


class _Audit:
    def __init__(self, inner: Any, die: bool) -> None:
        self.inner, self.die = inner, die

    def append(self, entry: Any) -> Any:
        written = self.inner.append(entry)
        if self.die:
            raise Killed("after the audit append")
        return written

    def history(self) -> Any:
        return self.inner.history()

    def exists(self) -> bool:
        return bool(self.inner.exists())


class _Flags(DocumentFlagWriter):
    def write(self, state: Any, expected_version: str) -> str:
        super().write(state, expected_version)
        raise Killed("after the flag write")


@pytest.mark.parametrize("step", ["intent", "flag write", "audit append", "commit"])
def test_killed_after_each_step_the_next_command_finishes_it_once(
    rollout: Rollout,  # noqa: F811
    step: str,
) -> None:
    r, where = rollout, rollout.where
    states: Any = _States(where.states, {"intent": 1, "commit": 2}.get(step, 0))
    flags = _Flags(r.flags) if step == "flag write" else DocumentFlagWriter(r.flags)
    audit: Any = _Audit(where.audit, step == "audit append")
    ctl = RolloutController(states, flags, audit, clock=r.clock, actor="ci", key=KEY)
    with pytest.raises(Killed):
        ctl.advance()
    left = where.states.read()[0]
    assert left is not None and (left.pending is not None) == (step != "commit")  # it fired
    state = r.controller().recover()
    assert state is not None and state.pending is None
    assert finished_once(r) == []


def finished_once(r: Rollout) -> list[str]:
    """The checker: the killed advance (25 → 50 %) is in the state, the flags and the log once."""
    where, problems = r.where, []
    state = where.states.read()[0]
    if state is None or state.pending is not None or state.percent != 50.0:
        problems.append(f"state {state and state.percent} %, pending {state and state.pending}")
    if r.flag_percent() != 50.0:
        problems.append(f"flags {r.flag_percent()} %")
    log = where.read_log()
    if [e["to_percent"] for e in log] != [1.0, 5.0, 25.0, 50.0]:
        problems.append(f"log {[e['to_percent'] for e in log]}")
    try:
        verify_record(where.audit, state, KEY, where.states.location)  # type: ignore[attr-defined]
    except AuditIntegrityError as exc:
        problems.append(str(exc))
    return problems


def test_negative_control_an_advance_applied_twice_is_caught(rollout: Rollout) -> None:  # noqa: F811
    rollout.controller().advance()
    assert finished_once(rollout) == []
    rollout.controller().advance()  # what a blind replay of the transition would add
    assert finished_once(rollout) != []
