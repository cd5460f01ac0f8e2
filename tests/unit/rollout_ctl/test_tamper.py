"""The record cannot be rewritten unnoticed: ``snapmerge rollout verify`` exits non-zero naming the
first bad entry for every tampering below, on the local log, on S3 and in DynamoDB, and passes on
the untouched record (the control). The attacker can write the log and the state but does not hold
the audit key: they may recompute the hash chain, and sign with a key of their own."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rollout.audit import JsonlAuditLog
from rollout.audit_entry import GENESIS, AuditEntry
from rollout.signing import AuditKey
from rollout.state import FileStateStore
from snapmerge.cli import main
from snapmerge.errors import StoreError
from tests.unit.rollout_ctl.conftest import CliDir, guardrail

KEY = "operator-audit-key-0123456789abcdef"
ATTACKER = AuditKey(b"attacker-key-0123456789abcdef")
PLAN = {
    "name": "tamper",
    "defaults": {"bake_seconds": 3600, "min_samples": 20},
    "stages": [10, 50, 100],
    "guardrails": [guardrail("LockHoldTime", "latency", 0.25)],
}

Entries = list[dict[str, Any]]


def rechain(entries: Entries, key: AuditKey | None = None) -> Entries:
    """What an attacker with write access can do: renumber, recompute every digest (and sign
    with their own key, or keep the old MACs when ``key`` is None)."""
    out, prev = [], GENESIS
    for seq, raw in enumerate(entries):
        key_id = key.key_id if key is not None else raw.get("key_id", "")
        fields = {**raw, "seq": seq, "prev_digest": prev, "digest": "", "key_id": key_id}
        entry = AuditEntry.from_json(fields)
        digest = entry.content_digest(prev)
        mac = key.sign(f"entry|{digest}") if key is not None else raw.get("mac", "")
        out.append({**entry.to_json(), "digest": digest, "mac": mac})
        prev = digest
    return out


def _remove_middle(e: Entries) -> Entries:
    return e[:1] + e[2:]


def _remove_middle_rechained(e: Entries) -> Entries:
    return rechain(e[:1] + e[2:])


def _insert_rechained(e: Entries) -> Entries:
    forged = {**e[1], "transition_id": "forged", "reason": "looked fine to me", "who": "mallory"}
    return rechain([*e[:2], forged, *e[2:]], ATTACKER)


def _edit_rechained(e: Entries) -> Entries:
    edited = {**e[1], "who": "someone-else@host", "reason": "approved by the CAB"}
    return rechain([e[0], edited, *e[2:]])


def _edit_rechained_signed(e: Entries) -> Entries:
    edited = {**e[1], "who": "someone-else@host", "reason": "approved by the CAB"}
    return rechain([e[0], edited, *e[2:]], ATTACKER)


def _reorder(e: Entries) -> Entries:
    return [e[0], e[2], e[1], *e[3:]]


def _reorder_rechained(e: Entries) -> Entries:
    return rechain([e[0], e[2], e[1], *e[3:]])


def _truncate_last(e: Entries) -> Entries:
    return e[:-1]


def _truncate_to_first(e: Entries) -> Entries:
    return e[:1]


def _unknown_field(e: Entries) -> Entries:
    return [e[0], {**e[1], "approved_by": "nobody"}, *e[2:]]


TAMPERS: dict[str, tuple[Callable[[Entries], Entries], str]] = {
    # name: (tampering, what the error must say: the first bad entry)
    "remove": (_remove_middle, r"entry 1 .*out of sequence"),
    "remove-rechained": (_remove_middle_rechained, r"entry 1 .*signature does not match"),
    "insert-rechained": (_insert_rechained, r"entry 0 .*signed with key"),
    "edit-rechained": (_edit_rechained, r"entry 1 .*signature does not match"),
    "edit-rechained-signed": (_edit_rechained_signed, r"entry 0 .*signed with key"),
    "reorder": (_reorder, r"entry 1 .*out of sequence"),
    "reorder-rechained": (_reorder_rechained, r"entry 1 .*signature does not match"),
    "truncate-last": (_truncate_last, r"entry 3 is missing.*anchors 4"),
    "truncate-to-first": (_truncate_to_first, r"entry 1 is missing.*anchors 4"),
    "unknown-field": (_unknown_field, r":2: unreadable: unknown field"),
}


CLI_ENV = {
    "SNAPMERGE_FLAGS_FILE": ".snapmerge/flags.json",
    "SNAPMERGE_EMF_FILE": ".snapmerge/emf.jsonl",
    "SNAPMERGE_AUDIT_KEY": KEY,
    "SNAPMERGE_ACTOR": "operator@laptop",
}


@pytest.fixture
def record(cli_dir: CliDir) -> Path:
    """init → advance → advance → rollback, signed, in a scratch directory."""
    root = cli_dir(PLAN, **CLI_ENV)
    for argv in (["init", "--plan", "plan.json"], ["advance"], ["advance"], ["rollback"]):
        assert main(["rollout", *argv]) == 0
    return root


def audit_path(root: Path) -> Path:
    return root / ".snapmerge" / "audit.jsonl"


def state_path(root: Path) -> Path:
    return root / ".snapmerge" / "rollout-state.json"


def read_entries(root: Path) -> Entries:
    return [json.loads(line) for line in audit_path(root).read_text().splitlines()]


def write_entries(root: Path, entries: Entries) -> None:
    body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
    audit_path(root).write_text(body)


def verify(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["rollout", "verify"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_untouched_record_verifies(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = verify(capsys)
    assert code == 0 and "4 entries signed" in text
    assert [e["action"] for e in read_entries(record)] == ["init", "advance", "advance", "rollback"]


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_verify_names_the_first_bad_entry(
    record: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tamper, expected = TAMPERS[name]
    original = read_entries(record)
    tampered = tamper(original)
    assert tampered != original  # the tampering happened
    write_entries(record, tampered)
    code, text = verify(capsys)
    assert code != 0
    assert re.search(expected, text), text
    # history refuses a record it cannot vouch for, too
    capsys.readouterr()
    assert main(["rollout", "history"]) != 0


def test_a_deleted_log_fails_verify_and_history_says_there_is_none(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_path(record).unlink()
    code, text = verify(capsys)
    assert code != 0 and "no audit log" in text
    assert main(["rollout", "history"]) != 0
    assert "no audit log at" in capsys.readouterr().err


def test_history_without_any_rollout_says_there_is_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAPMERGE_AUDIT", raising=False)
    assert main(["rollout", "history"]) != 0
    assert "no audit log at" in capsys.readouterr().err


def _edit_state(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(state_path(root).read_text())
    change(data)
    state_path(root).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _one_big_stage(data: dict[str, Any]) -> None:
    data["plan"]["stages"] = [100]
    data["plan"]["defaults"]["min_samples"] = 1


@pytest.mark.parametrize("command", [["verify"], ["status"], ["advance"], ["rollback"]])
def test_a_plan_rewritten_under_its_digest_is_refused(
    record: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    _edit_state(record, _one_big_stage)
    before = read_entries(record)
    capsys.readouterr()
    assert main(["rollout", *command]) != 0
    assert "does not match its digest" in capsys.readouterr().err
    assert read_entries(record) == before


def test_a_plan_rewritten_with_a_new_digest_fails_on_the_signed_anchor(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rollout.plan import digest_of

    def rewrite(data: dict[str, Any]) -> None:
        _one_big_stage(data)
        data["plan_digest"] = digest_of(data["plan"])

    _edit_state(record, rewrite)
    code, text = verify(capsys)
    assert code != 0 and "anchor" in text


def test_a_removed_anchor_fails(record: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit_state(record, lambda d: d.update(audit_anchor=None))
    code, text = verify(capsys)
    assert code != 0 and "no audit anchor" in text


def test_a_rewritten_log_and_anchor_without_the_key_fail(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Truncate the log and move the anchor to match: the anchor's MAC gives it away."""
    entries = read_entries(record)[:2]
    write_entries(record, entries)

    def move(data: dict[str, Any]) -> None:
        data["audit_anchor"].update(count=2, head=entries[-1]["digest"])

    _edit_state(record, move)
    code, text = verify(capsys)
    assert code != 0 and "not signed with this key" in text


def test_verify_needs_the_key(
    record: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SNAPMERGE_AUDIT_KEY")
    code, text = verify(capsys)
    assert code != 0 and "needs the audit key" in text
    monkeypatch.setenv("SNAPMERGE_AUDIT_KEY", "a-different-key-0123456789")
    code, text = verify(capsys)
    assert code != 0 and re.search(r"signed with key \w+, not \w+", text), text


def test_a_pending_transition_whose_entry_is_written_verifies(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A controller that died between the audit append and the commit leaves one entry beyond
    the anchor; it is the state's pending transition, so the record is consistent."""
    shutil.copy(state_path(record), record / "state.bak")
    states = FileStateStore(state_path(record))
    state, _ = states.read()
    assert state is not None
    log = JsonlAuditLog(audit_path(record), AuditKey(KEY.encode()))
    from dataclasses import replace

    from rollout.state_types import Transition

    t = Transition("000005-init-x", "init", 0.0, 10.0, "rolled_back", "running", 0, False, "r", 1)
    key, where = AuditKey(KEY.encode()), states.location
    intent = replace(state, pending=t).sealed(key, where, 4, read_entries(record)[-1]["digest"])
    states.write(intent, states.read()[1])  # the controller's intent, then its append
    entry = AuditEntry(t.id, t.action, 0.0, 10.0, "rolled_back", "running", "r", "w", "at", "d")
    log.append(replace(entry, rollout=where))
    code, text = verify(capsys)
    assert code == 0 and "pending" in text, text


# -- review findings through the CLI: `rollout status` only reads ------------------------------
def _flags_file(root: Path) -> dict[str, Any]:
    return json.loads((root / ".snapmerge" / "flags.json").read_text())  # type: ignore[no-any-return]


def test_status_refuses_a_forged_pending_transition_and_applies_nothing(
    record: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding (CRITICAL): a `pending` written into the state was applied — and signed —
    by the next command, even `rollout status`."""
    from dataclasses import asdict

    from rollout.state_types import Transition

    forged = Transition("000005-advance-f", "advance", 0.0, 100.0, "rolled_back", "running", 2,
                        False, "looks fine", 1)  # fmt: skip
    _edit_state(record, lambda d: d.update(pending=asdict(forged)))
    flags, entries = _flags_file(record), read_entries(record)
    for command in (["status"], ["advance"], ["rollback"], ["init", "--plan", "plan.json"]):
        capsys.readouterr()
        assert main(["rollout", *command]) != 0
        assert "field(s) pending do not match its signed audit anchor" in capsys.readouterr().err
    assert _flags_file(record) == flags and read_entries(record) == entries


class _UnknownOutcome:
    """A flag writer whose write times out before it lands and whose read-back then fails once
    (the flag stores' adapters raise a timeout as ``StoreError``)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.failed = inner, False

    def read(self) -> Any:
        if self.failed:
            self.failed = False
            raise StoreError("GetObject timed out", code="ReadTimeoutError")
        return self.inner.read()

    def write(self, state: Any, expected_version: str) -> str:
        self.failed = True
        raise StoreError("PutObject timed out", code="ReadTimeoutError")


def test_status_never_applies_an_unknown_outcome_flag_write(
    cli_dir: CliDir, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding (MEDIUM): the write whose outcome was unknown was applied by the next
    command, `rollout status` included; a read-only command now writes nothing anywhere."""
    from flags.stores import FileStore
    from handlers.rollout_flags import DocumentFlagWriter
    from rollout.controller import FlagWriteUnknownError, RolloutController

    tmp_path = cli_dir(PLAN, **CLI_ENV)
    assert main(["rollout", "init", "--plan", "plan.json"]) == 0
    states = FileStateStore(state_path(tmp_path))
    writer = _UnknownOutcome(DocumentFlagWriter(FileStore(tmp_path / ".snapmerge/flags.json")))
    key = AuditKey(KEY.encode())
    ctl = RolloutController(states, writer, JsonlAuditLog(audit_path(tmp_path), key), key=key)
    with pytest.raises(FlagWriteUnknownError):
        ctl.advance()
    assert writer.failed is False  # the fault fired: write timed out, read-back failed
    flags, entries = _flags_file(tmp_path), read_entries(tmp_path)
    state_bytes = state_path(tmp_path).read_bytes()
    capsys.readouterr()
    main(["rollout", "status"])
    assert _flags_file(tmp_path) == flags and read_entries(tmp_path) == entries
    assert state_path(tmp_path).read_bytes() == state_bytes  # nothing written anywhere
    assert "flag write outcome unknown" in capsys.readouterr().out
    assert main(["rollout", "verify"]) == 0
    # the next command that changes the rollout reconciles: not in the document → withdrawn
    capsys.readouterr()
    assert main(["rollout", "advance"]) != 0
    assert "withdrew advance 10→50" in capsys.readouterr().err
    assert main(["rollout", "advance"]) == 0  # decided again, applied once
    assert [e["action"] for e in read_entries(tmp_path)] == ["init", "advance"]
