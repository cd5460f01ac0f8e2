"""Fixtures for the rollout controller tests: a controller on local state, a memory flag store,
a JSONL audit log, a list metric source and a manual clock; and a scratch directory for the
``snapmerge rollout`` CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.rollout_flags import DocumentFlagWriter
from rollout.audit import JsonlAuditLog
from rollout.controller import RolloutController, Timing
from rollout.plan import RolloutPlan, parse_plan
from rollout.state import FileStateStore
from tests.unit.rollout_ctl.helpers import CountingStore, ListSource, ManualClock, ScriptedJudge


def guardrail(
    metric: str, kind: str, tolerance: float, *, critical: bool = True, margin: float | None = None
) -> dict[str, Any]:
    """One guardrail of a test plan (a new dict each call: a test may change its copy).
    ``margin``: against a side a rate passes only within an absolute margin, so the test plans'
    rates carry one."""
    found: dict[str, Any] = {
        "metric": metric,
        "kind": kind,
        "worse": "higher",
        "tolerance": tolerance,
        "critical": critical,
    }
    if margin is not None:
        found["margin"] = margin
    return found


PLAN = {
    "name": "test",
    "defaults": {"bake_seconds": 600, "min_samples": 30, "recheck_seconds": 120},
    "stages": [1, 5, 25, 50, 100],
    "guardrails": [
        guardrail("LockHoldTime", "latency", 0.25),
        guardrail("CASFailures", "rate", 0.02, margin=0.05),
        guardrail("LockWaitTime", "latency", 0.5, critical=False),
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


# Every variable that points the rollout CLI at a location or a key. A test that runs the CLI
# clears them all, so the shell it runs in cannot point it at a real record or at AWS.
CLI_VARIABLES = (
    "SNAPMERGE_FLAGS_FILE",
    "SNAPMERGE_FLAGS_S3",
    "SNAPMERGE_FLAGS_SSM",
    "SNAPMERGE_FLAGS_APPCONFIG",
    "SNAPMERGE_EMF_FILE",
    "SNAPMERGE_ROLLOUT_STATE",
    "SNAPMERGE_AUDIT",
    "SNAPMERGE_AUDIT_KEY",
    "SNAPMERGE_AUDIT_KEY_SSM",
    "SNAPMERGE_LOG_GROUP",
)
CliDir = Callable[..., Path]


@pytest.fixture
def cli_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliDir:
    """``cli_dir(plan, **env)``: run the CLI in ``tmp_path`` with every variable of
    :data:`CLI_VARIABLES` cleared (so the local defaults under ``.snapmerge/`` apply), then
    ``env`` set, and ``plan`` written to ``plan.json``; returns the directory."""

    def make(plan: Mapping[str, Any], **env: str) -> Path:
        for name in CLI_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        return tmp_path

    return make
