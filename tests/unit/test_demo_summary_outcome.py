"""The demo's act-1 outcome: complete, or stopped by FinalMergeDuration alone — never another."""

from __future__ import annotations

from typing import Any

from handlers.demo_summary import healthy_act_outcome
from rollout.judge import Verdict


def _verdict(statuses: dict[str, str], decision: str = "hold") -> Verdict:
    guardrails: dict[str, Any] = {}
    for metric, status in statuses.items():
        side = {"status": status, "upper_bound": 2.5, "allowed_ratio": 1.4}
        guardrails[metric] = {"status": status, "comparisons": {"baseline": side}}
    return Verdict(decision, ["r"], {"guardrails": guardrails})  # type: ignore[arg-type]


def test_a_completed_act_is_ok() -> None:
    ok, line = healthy_act_outcome("complete", None)
    assert ok and "promoted to 100 %" in line


def test_a_hold_by_final_merge_duration_alone_is_ok_and_says_why() -> None:
    verdict = _verdict({"FinalMergeDuration": "insufficient", "LockHoldTime": "pass"})
    ok, line = healthy_act_outcome("running", verdict)
    assert ok and "only FinalMergeDuration stopped it" in line and "2.50 > allowed 1.40" in line


def test_a_stop_by_any_other_guardrail_is_a_defect() -> None:
    for statuses in (
        {"FinalMergeDuration": "pass", "MergeErrors": "fail"},
        {"FinalMergeDuration": "insufficient", "ChunkCount": "fail"},
        {"FinalMergeDuration": "pass", "LockHoldTime": "insufficient"},
    ):
        ok, line = healthy_act_outcome("running", _verdict(statuses))
        assert not ok and "stopped by" in line, statuses


def test_an_act_without_any_verdict_is_a_defect() -> None:
    ok, line = healthy_act_outcome("running", None)
    assert not ok and "before any verdict" in line
