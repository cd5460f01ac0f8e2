"""The controller with its state and audit log on S3 (conditional writes through S3BlobStore), in
memory and on the embedded moto server, and in DynamoDB on the embedded server; tampering with
either backend is caught by verify."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.audit import S3AuditLog
from rollout.audit_entry import AuditIntegrityError, AuditMissingError, AuditSlotTakenError
from rollout.controller import RolloutController
from rollout.dynamo import DynamoAuditLog, DynamoStateStore
from rollout.plan import RolloutPlan
from rollout.signing import AuditKey
from rollout.state import BlobStateStore, StateConflictError
from rollout.state_types import Status
from rollout.verify import verify_record
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.ports import BlobStore
from tests.unit.rollout_ctl.helpers import CountingStore, ListSource, ManualClock, ScriptedJudge


def _drive(blobs: BlobStore, plan: RolloutPlan) -> tuple[RolloutController, CountingStore]:
    flags = CountingStore()
    clock = ManualClock()
    ctl = RolloutController(
        BlobStateStore(blobs, "rollout/state.json"),
        DocumentFlagWriter(flags),
        S3AuditLog(blobs, "rollout/audit/"),
        ListSource(),
        clock=clock,
        sleep=clock.sleep,
        judge_fn=ScriptedJudge("promote"),
        actor="ci",
    )
    ctl.init(plan)
    ctl.advance()
    clock.now += 600
    assert ctl.tick().action == "promote"
    state = ctl.rollback("done")
    assert state.status is Status.ROLLED_BACK
    return ctl, flags


def _check(ctl: RolloutController, flags: CountingStore) -> None:
    assert [e.action for e in ctl.audit.history()] == ["init", "advance", "promote", "rollback"]
    doc = rollout_state_of(flags.load()[0])
    assert (doc.percent, doc.kill_switch) == (0.0, True)
    state, version = ctl.states.read()
    assert state is not None and state.seq == 4
    stale = state.__class__(**{**state.__dict__, "percent": 99.0})
    with pytest.raises(StateConflictError):
        ctl.states.write(stale, '"not-the-etag"')
    with pytest.raises(StateConflictError):
        ctl.states.write(stale, None)  # create-only write on an existing state
    assert ctl.states.read() == (state, version)


def test_s3_state_and_audit_in_memory(plan: RolloutPlan) -> None:
    ctl, flags = _drive(MemoryBlobStore("rollout"), plan)
    _check(ctl, flags)


def test_s3_state_and_audit_on_the_embedded_server(aws: Any, plan: RolloutPlan) -> None:
    from snapmerge.adapters.s3_store import S3BlobStore

    ctl, flags = _drive(S3BlobStore(aws.bucket), plan)
    _check(ctl, flags)


# -- DynamoDB (the table a team shares between CI and laptops), and tampering on both ----------
KEY = AuditKey(b"backend-audit-key-0123456789")


def _controller(
    states: Any, audit: Any, flags: CountingStore
) -> tuple[RolloutController, ManualClock]:
    """A signed controller on ``states`` and ``audit`` that promotes whenever it judges."""
    clock = ManualClock()
    ctl = RolloutController(
        states,
        DocumentFlagWriter(flags),
        audit,
        ListSource(),
        clock=clock,
        sleep=clock.sleep,
        judge_fn=ScriptedJudge("promote"),
        actor="ci",
        key=KEY,
    )
    return ctl, clock


def _signed(states: Any, audit: Any, plan: RolloutPlan) -> RolloutController:
    ctl, _ = _controller(states, audit, CountingStore())
    ctl.init(plan)
    ctl.advance()
    ctl.advance()
    return ctl


def test_dynamodb_state_and_audit_on_the_embedded_server(aws: Any, plan: RolloutPlan) -> None:
    states = DynamoStateStore(aws.table, "final-merge")
    audit = DynamoAuditLog(aws.table, "final-merge", KEY)
    ctl, flags = _drive_with(states, audit, plan)
    _check(ctl, flags)
    report = verify_record(audit, states.read()[0], KEY, states.location)
    assert report.entries == 4


def _drive_with(states: Any, audit: Any, plan: RolloutPlan) -> tuple[RolloutController, Any]:
    flags = CountingStore()
    ctl, clock = _controller(states, audit, flags)
    ctl.init(plan)
    ctl.advance()
    clock.now += 600
    assert ctl.tick().action == "promote"
    ctl.rollback("done")
    return ctl, flags


def test_dynamodb_audit_slots_are_write_once(aws: Any, plan: RolloutPlan) -> None:
    audit = DynamoAuditLog(aws.table, "slots", KEY)
    ctl = _signed(DynamoStateStore(aws.table, "slots"), audit, plan)
    first = ctl.audit.history()[0]
    with pytest.raises(AuditSlotTakenError):
        audit._write_slot(replace(first, reason="rewritten"))
    assert audit.history()[0] == first


def test_dynamodb_tampering_is_caught(aws: Any, plan: RolloutPlan) -> None:
    from snapmerge import aws as aws_clients

    states = DynamoStateStore(aws.table, "tamper")
    audit = DynamoAuditLog(aws.table, "tamper", KEY)
    _signed(states, audit, plan)
    assert verify_record(audit, states.read()[0], KEY, states.location).entries == 3
    aws_clients.client("dynamodb").delete_item(
        TableName=aws.table,
        Key={"PK": {"S": "ROLLOUT#tamper#AUDIT"}, "SK": {"S": "ENTRY#0000000002"}},
    )
    with pytest.raises(AuditIntegrityError, match=r"entry 2 is missing"):
        verify_record(audit, states.read()[0], KEY, states.location)


def test_s3_tampering_is_caught(plan: RolloutPlan) -> None:
    blobs = MemoryBlobStore("rollout")
    states = BlobStateStore(blobs, "rollout/state.json")
    audit = S3AuditLog(blobs, "rollout/audit/", KEY)
    _signed(states, audit, plan)
    assert verify_record(audit, states.read()[0], KEY, states.location).entries == 3
    edited = json.loads(blobs.get(audit.slot_key(1)).body)  # type: ignore[union-attr]
    edited["who"] = "mallory"
    blobs.delete([audit.slot_key(1)])
    blobs.put(audit.slot_key(1), json.dumps(edited).encode())
    with pytest.raises(AuditIntegrityError, match=r"entry 1 was modified"):
        verify_record(audit, states.read()[0], KEY, states.location)
    blobs.delete([audit.slot_key(n) for n in range(3)])
    with pytest.raises(AuditMissingError):
        verify_record(audit, states.read()[0], KEY, states.location)
