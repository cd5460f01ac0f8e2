"""The controller with its state and audit log on S3 (conditional writes through S3BlobStore):
in memory and on the embedded moto server."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter, rollout_state_of
from rollout.audit import S3AuditLog
from rollout.controller import RolloutController
from rollout.plan import RolloutPlan
from rollout.state import BlobStateStore, StateConflictError, Status
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
