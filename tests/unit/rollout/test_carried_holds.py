"""A lock-hold budget is judged on the executions that held a lock to publish.

Under group commit most executions of a crowd are carried by another's publish: they take no
lock, and record LockHoldTime 0. Counted among the holds, those zeros keep the median under any
budget, so a publish made slower (act 2's injected regression) was never caught.
"""

from __future__ import annotations

from rollout.guardrails import Guardrail
from rollout.judge import judge
from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath

HOLD = MetricName.LOCK_HOLD_TIME.value
CARRIED = MetricName.COALESCED_BATCHES.value
BUDGET = Guardrail(
    MetricName.LOCK_HOLD_TIME, "latency", "higher", 0.0, critical=True,
    against="budget", budget=400,
)  # fmt: skip


def crowd(publishers: int, carried: int, hold_ms: float) -> list[MetricRecord]:
    """Each publisher held the lock ``hold_ms``; each carried execution recorded 0."""
    out = [
        MetricRecord(MergePath.TWO_PHASE, "words", i, {HOLD: hold_ms, CARRIED: 0.0}, {})
        for i in range(publishers)
    ]
    out += [
        MetricRecord(MergePath.TWO_PHASE, "words", 100 + i, {HOLD: 0.0, CARRIED: 1.0}, {})
        for i in range(carried)
    ]
    return out


def test_carried_executions_do_not_hide_slower_publishes() -> None:
    verdict = judge(crowd(publishers=12, carried=36, hold_ms=1_400), [BUDGET], min_samples=6)
    assert verdict.decision == "rollback"
    ev = verdict.evidence["guardrails"][HOLD]["comparisons"]["budget"]
    assert ev["n_candidate"] == 12  # the publishers' holds only


def test_healthy_publishes_beside_carried_executions_pass_on_the_publishes_alone() -> None:
    # the evidence is the publishers' holds: 12 are too few to show the median within the
    # budget at this α (the carried zeros used to make up the difference), 30 are enough
    few = judge(crowd(publishers=12, carried=36, hold_ms=150), [BUDGET], min_samples=6)
    assert few.decision == "hold" and "0/12 beyond it" in few.reasons[0]
    enough = judge(crowd(publishers=30, carried=36, hold_ms=150), [BUDGET], min_samples=6)
    assert enough.decision == "promote"
