"""Group-commit histories (issue 12) on the serialised embedded server, held to DESIGN §3.

Each scripts one builder holding the group-commit marker while others enqueue and wait for it,
then faults that builder: a crash mid-way (with a legacy publish while it builds), a lease lost
at the swap, a crash right after a swap that consumed the waiters' batches (then the retries of
consumed batches). The checker (``invariants.py``) demands every batch exactly once, each under
a number it enqueued, and for an id two batches write, the later-enqueued one's write; the
negative control shows it catches a builder that re-applies a consumed batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmerge import group_publish
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.domain import FinalMergeResult
from snapmerge.errors import LeaseLostError
from tests.concurrency import scenarios
from tests.concurrency.choreography import Script
from tests.concurrency.generator import HistoryPlan
from tests.concurrency.history import History
from tests.concurrency.invariants import FinalState, check
from tests.concurrency.nemesis import Fault, WorkerCrash
from tests.concurrency.runner import run_history
from tests.conftest import AwsEnv


def _run(aws: AwsEnv, tmp: Path, plan: HistoryPlan, script: Script) -> tuple[History, FinalState]:
    history, final = run_history(plan, aws.cloud, MemoryIndex(), tmp, script=script)
    assert script.timed_out == [], "the scripted interleaving did not happen"
    violations = check(plan, history, final)
    print(*violations, sep="\n")
    assert violations == []
    return history, final


def test_a_builder_crashing_mid_way_with_a_legacy_publish_between(
    aws: AwsEnv, tmp_path: Path
) -> None:
    plan, script = scenarios.group_builder_fault(Fault.CRASH_AFTER_UPLOAD, legacy_between=True)
    history, _ = _run(aws, tmp_path, plan, script)

    first = next(o for o in history.outcomes if o.worker == 0)
    assert history.fault_fired and isinstance(first.error, WorkerCrash)
    assert len(history.enqueues) >= 3  # every two-phase batch went through the queue
    assert "legacy" in history.successes()


def test_a_builder_losing_its_lease_while_others_wait(aws: AwsEnv, tmp_path: Path) -> None:
    plan, script = scenarios.group_builder_fault(Fault.HEARTBEAT_LOST)
    history, _ = _run(aws, tmp_path, plan, script)

    assert history.fault_fired
    first = next(o for o in history.outcomes if o.worker == 0)
    assert isinstance(first.error, LeaseLostError)  # refused at the swap, never published


def test_retries_of_batches_a_crashed_builder_consumed(aws: AwsEnv, tmp_path: Path) -> None:
    plan, script = scenarios.group_builder_fault(Fault.CRASH_AFTER_SWAP, redelivered=True)
    history, _ = _run(aws, tmp_path, plan, script)

    assert history.fault_fired
    (publish,) = [history.manifests[p.version] for p in history.publishes]
    order = [e.batch_id for e in sorted(history.enqueues, key=lambda e: e.number)]
    assert publish.consumed == tuple(dict.fromkeys(order))  # one build of all three, enqueue order
    assert set(publish.consumed) == set(scenarios.GROUP)
    results = {o.worker: o.result for o in history.outcomes if o.error is None}
    for waiter in (1, 2):  # answered with the crashed builder's publish, not a replay
        assert isinstance(result := results[waiter], FinalMergeResult)
        assert result.published_by == "g0" and not result.replayed
    for retry in (0, 3):  # the builder's own retry and a redelivery of g1: replays
        assert isinstance(result := results[retry], FinalMergeResult)
        assert result.replayed and result.version == publish.version


def test_negative_control_a_builder_that_reapplies_a_consumed_batch_is_caught(
    aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the broken builder: it no longer checks whether other pending batches are published
    monkeypatch.setattr(group_publish, "prior_publish", lambda *a, **k: None)
    plan, script = scenarios.reapplied_consumed()
    history, final = run_history(plan, aws.cloud, MemoryIndex(), tmp_path, script=script)
    assert script.timed_out == []

    violations = check(plan, history, final)
    print("negative control caught:", *violations, sep="\n  ")
    assert any(v.invariant == "1" and "g1 applied 2 times" in v.detail for v in violations)


def test_control_an_unmarked_published_batch_is_judged_by_its_claims(
    aws: AwsEnv, tmp_path: Path
) -> None:
    """The negative control's history with the real builder: g1 published by g0, its pending
    object back to ``pending`` (g0 died before its mark, or the mark's PUT failed) and its
    intermediates back too. The mark is best effort; g1's claims alone keep it from a second
    apply, and g2's build leaves it out."""
    plan, script = scenarios.reapplied_consumed()
    history, _ = _run(aws, tmp_path, plan, script)

    applied = [b for p in history.publishes for b in history.manifests[p.version].consumed]
    assert applied.count("g1") == 1
