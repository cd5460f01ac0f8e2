"""Fixtures for the rollout controller tests: a controller on local state, a memory flag store,
a JSONL audit log, a list metric source and a manual clock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.rollout_flags import DocumentFlagWriter
from rollout.audit import JsonlAuditLog
from rollout.controller import RolloutController, Timing
from rollout.plan import RolloutPlan, parse_plan
from rollout.state import FileStateStore
from tests.unit.rollout_ctl.helpers import CountingStore, ListSource, ManualClock, ScriptedJudge

PLAN = {
    "name": "test",
    "defaults": {"bake_seconds": 600, "min_samples": 30, "recheck_seconds": 120},
    "stages": [1, 5, 25, 50, 100],
    "guardrails": [
        {
            "metric": "LockHoldTime",
            "kind": "latency",
            "worse": "higher",
            "tolerance": 0.25,
            "critical": True,
        },
        {
            "metric": "CASFailures",
            "kind": "rate",
            "worse": "higher",
            "tolerance": 0.02,
            "critical": True,
            "margin": 0.05,  # against a side a rate passes only within an absolute margin
        },
        {
            "metric": "LockWaitTime",
            "kind": "latency",
            "worse": "higher",
            "tolerance": 0.5,
            "critical": False,
        },
    ],
}


@dataclass
class Rig:
    tmp: Path
    plan: RolloutPlan
    clock: ManualClock
    flags: CountingStore
    states: FileStateStore
    audit: JsonlAuditLog
    source: ListSource
    verdicts: ScriptedJudge

    def controller(self, **kwargs: object) -> RolloutController:
        params: dict[str, object] = {
            "clock": self.clock,
            "sleep": self.clock.sleep,
            "judge_fn": self.verdicts,
            "actor": "tester@host",
            "timing": Timing(poll_seconds=60),
        }
        params.update(kwargs)
        states = params.pop("states", self.states)
        return RolloutController(
            states,  # type: ignore[arg-type]
            DocumentFlagWriter(self.flags),
            self.audit,
            self.source,
            **params,  # type: ignore[arg-type]
        )


@pytest.fixture
def plan() -> RolloutPlan:
    return parse_plan(PLAN)


@pytest.fixture
def rig(tmp_path: Path, plan: RolloutPlan) -> Rig:
    return Rig(
        tmp=tmp_path,
        plan=plan,
        clock=ManualClock(),
        flags=CountingStore(),
        states=FileStateStore(tmp_path / "state.json"),
        audit=JsonlAuditLog(tmp_path / "audit.jsonl"),
        source=ListSource(),
        verdicts=ScriptedJudge("promote"),
    )
