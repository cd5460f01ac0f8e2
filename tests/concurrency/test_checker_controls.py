"""Negative controls for the checker: one constructed history per branch of ``invariants.check``.

Each case starts from a clean two-batch history (A then B, both rewriting seed record 0, the
victim's first attempt of A crashed after its swap) that the checker must accept, breaks exactly
one thing, and asserts the checker reports exactly that. Replace any branch of the checker by
``return []`` (or delete its ``append``) and its case here fails. Pure: no server, no engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from snapmerge import synth
from snapmerge.domain import (
    Database,
    FinalMergeResult,
    Keys,
    MergePath,
    Record,
    VersionId,
)
from snapmerge.snapshots import VersionManifest
from tests.concurrency.generator import BatchPlan, HistoryPlan, WorkerPlan
from tests.concurrency.history import Enqueue, History, Outcome, Publish
from tests.concurrency.invariants import FinalState, check
from tests.concurrency.nemesis import Fault, WorkerCrash

V0, VA, VB = VersionId("v0"), VersionId("vA"), VersionId("vB")
SEED = tuple(synth.records(1, 3, 4, id_prefix="seed-"))
A_ROWS = (*synth.records(2, 1, 4, id_prefix="a-"), *synth.overwrite(SEED[:1], 3, 1.0, 1.0))
B_ROWS = (*synth.records(4, 1, 4, id_prefix="b-"), *synth.overwrite(SEED[:1], 5, 1.0, 1.0))
LATER = datetime.now(UTC) + timedelta(hours=1)


@dataclass
class Case:
    plan: HistoryPlan
    history: History
    final: FinalState


def _manifest(version: VersionId, base: VersionId, batch: str) -> VersionManifest:
    return VersionManifest(version, base, batch, 0, 4, "two_phase", (), "2026-01-01T00:00:00")


def _result(batch: str, version: VersionId) -> FinalMergeResult:
    return FinalMergeResult(
        MergePath.TWO_PHASE, batch, Database.WORDS, version, None, "", 0, 0.0, 1, 0, 0, 0.0, 0.0
    )


def _clean() -> Case:
    batch_a = BatchPlan("A", MergePath.LEGACY, (A_ROWS,))
    batch_b = BatchPlan("B", MergePath.TWO_PHASE, (B_ROWS,))
    plan = HistoryPlan(
        0,
        1,
        SEED,
        (WorkerPlan(0, (batch_a,)), WorkerPlan(1, (batch_b,))),
        Fault.CRASH_AFTER_SWAP,
        0,
    )
    h = History(V0)
    h.manifests = {VA: _manifest(VA, V0, "A"), VB: _manifest(VB, VA, "B")}
    h.manifest_seq = {VA: 1, VB: 5}
    now = datetime.now(UTC)
    h.publishes = [Publish(2, 0, VA, 1, LATER, now), Publish(6, 1, VB, 2, LATER, now)]
    h.outcomes = [
        Outcome(3, 0, "A", 0, None, WorkerCrash("worker crashed at after_swap")),
        Outcome(4, 0, "A", 1, _result("A", VA), None),
        Outcome(8, 1, "B", 0, _result("B", VB), None),
    ]
    h.deleted_keys = [(7, Keys.intermediate_prefix("A", 0) + "data.json")]
    h.fault_fired = True
    expected = synth.expected_state([SEED, A_ROWS, B_ROWS])
    return Case(plan, h, FinalState(VB, True, dict(expected)))


def test_the_clean_history_passes() -> None:
    case = _clean()
    assert check(case.plan, case.history, case.final) == []


def test_the_clean_history_as_group_commit_passes() -> None:
    case = _clean()
    _group(case, a=1, b=2)
    assert check(case.plan, case.history, case.final) == []


def _drop_manifest(c: Case) -> None:
    del c.history.manifests[VB]


def _late_manifest(c: Case) -> None:
    c.history.manifest_seq[VB] = 7


def _fork(c: Case) -> None:
    c.history.manifests[VB] = _manifest(VB, V0, "B")


def _stale_pointer(c: Case) -> None:
    c.final = replace(c.final, pointer=VA)


def _incomplete(c: Case) -> None:
    c.final = replace(c.final, complete=False)


def _applied_twice(c: Case) -> None:
    """A published again after B: its rewrite of seed 0 reverts B's (issue 10, cases 1-2)."""
    again = VersionId("vA2")
    c.history.manifests[again] = _manifest(again, VB, "A")
    c.history.manifest_seq[again] = 9
    c.history.publishes.append(Publish(10, 0, again, 3, LATER, datetime.now(UTC)))
    records = dict(c.final.records)
    records.update({r.id: r for r in A_ROWS})
    c.final = FinalState(again, True, records)


def _extra_record(c: Case) -> None:
    stray = Record("stray-0", (1.0, 0.0, 0.0, 0.0))
    c.final = replace(c.final, records={**c.final.records, stray.id: stray})


def _lost(c: Case) -> None:
    c.final = replace(
        c.final, records={k: v for k, v in c.final.records.items() if k != B_ROWS[0].id}
    )


def _reverted(c: Case) -> None:
    seed0 = A_ROWS[1]  # A's rewrite of seed 0, where B's (published later) must be
    c.final = replace(c.final, records={**c.final.records, seed0.id: seed0})


def _no_lease(c: Case) -> None:
    c.history.publishes[1] = replace(c.history.publishes[1], fence=None)


def _expired(c: Case) -> None:
    p = c.history.publishes[1]
    c.history.publishes[1] = replace(p, confirmed_expires=p.sent_at - timedelta(seconds=1))


def _fence_backwards(c: Case) -> None:
    c.history.publishes[1] = replace(c.history.publishes[1], fence=1)


def _success_body(c: Case) -> None:
    c.history.outcomes[2] = replace(c.history.outcomes[2], result={"statusCode": 500})


def _unpublished_result(c: Case) -> None:
    c.history.outcomes[2] = replace(c.history.outcomes[2], result=_result("B", VersionId("vX")))


def _early_delete(c: Case) -> None:
    c.history.deleted_keys.append((0, Keys.intermediate_prefix("B", 0) + "data.json"))


def _never_succeeded(c: Case) -> None:
    c.history.outcomes[2] = replace(c.history.outcomes[2], result=None, error=WorkerCrash("x"))


def _not_fired(c: Case) -> None:
    c.history.fault_fired = False


def _retried_type_error(c: Case) -> None:
    c.history.outcomes.insert(2, Outcome(7, 1, "B", 0, None, TypeError("'NoneType' ...")))


def _retried_assertion(c: Case) -> None:
    c.history.outcomes.insert(2, Outcome(7, 1, "B", 0, None, AssertionError()))


def _victims_error_elsewhere(c: Case) -> None:
    c.history.outcomes.insert(2, Outcome(7, 1, "B", 0, None, WorkerCrash("not the victim")))


def _group(c: Case, a: int, b: int, applied_b: int | None = None) -> None:
    """Make A and B group-commit batches enqueued as numbers ``a`` and ``b`` (B applied as
    ``applied_b``); each still publishes alone, A first."""
    c.history.enqueues = [Enqueue(0, 0, "A", a), Enqueue(1, 1, "B", b)]
    for version, batch, number in ((VA, "A", a), (VB, "B", b if applied_b is None else applied_b)):
        c.history.manifests[version] = replace(
            c.history.manifests[version], batches=((batch, "d", number),)
        )


def _enqueued_later_applied_first(c: Case) -> None:
    """B was enqueued before A, but A was applied first: for seed 0 (both write it) the
    earlier-enqueued B's write wins, though the snapshot is consistent with the apply order."""
    _group(c, a=2, b=1)


def _applied_under_a_number_never_enqueued(c: Case) -> None:
    _group(c, a=1, b=2, applied_b=5)


CASES: dict[str, tuple[Callable[[Case], None], str, str]] = {
    "named with no manifest": (_drop_manifest, "2", "named with no manifest"),
    "named before complete": (_late_manifest, "2", "named before it was complete"),
    "chain not linear": (_fork, "2", "chain not linear"),
    "pointer not the last publish": (_stale_pointer, "2", "last publish was vB"),
    "pointer's version incomplete": (_incomplete, "2", "not complete/readable"),
    "batch applied twice": (_applied_twice, "1", "batch A applied 2 times"),
    "later-enqueued applied first": (
        _enqueued_later_applied_first,
        "1",
        "B (enqueued 1) applied after A (enqueued 2)",
    ),
    "applied under a number never enqueued": (
        _applied_under_a_number_never_enqueued,
        "1",
        "applied B as number 5, which no worker enqueued",
    ),
    "record never published": (_extra_record, "1", "stray-0 (of None) was never published"),
    "record lost": (_lost, "1", f"{B_ROWS[0].id} of B is lost"),
    "write reverted": (_reverted, "1", "expected B's, holds A's"),
    "publish holding no lease": (_no_lease, "3", "holding no lease"),
    "publish by an expired lease": (_expired, "3", "lease that expired"),
    "fence not rising": (_fence_backwards, "3", "fence 1 after fence 1"),
    "success body": (_success_body, "4", "success reported as {'statusCode': 500}"),
    "result names unpublished": (_unpublished_result, "4", "names unpublished vX"),
    "intermediates deleted early": (_early_delete, "4", "intermediates of B deleted before"),
    "batch never succeeded": (_never_succeeded, "liveness", "batch B never succeeded"),
    "fault did not fire": (_not_fired, "nemesis", "never fired"),
    "retried TypeError": (_retried_type_error, "errors", "undeclared TypeError"),
    "retried AssertionError": (_retried_assertion, "errors", "undeclared AssertionError"),
    "fault error off the victim": (_victims_error_elsewhere, "errors", "undeclared WorkerCrash"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_checker_reports_the_broken_invariant(name: str) -> None:
    breaker, invariant, detail = CASES[name]
    case = _clean()
    breaker(case)
    violations = check(case.plan, case.history, case.final)
    print(*violations, sep="\n")
    assert any(v.invariant == invariant and detail in v.detail for v in violations), violations


def test_a_second_application_is_seen_as_a_revert_too() -> None:
    """The content check alone (without the publish count) sees what the double apply did."""
    case = _clean()
    _applied_twice(case)
    details = [v.detail for v in check(case.plan, case.history, case.final)]
    assert any("expected B's, holds A's" in d for d in details), details


BRANCHES = (
    "_chain",
    "_exactly_once",
    "_enqueue_order",
    "_content",
    "_fencing",
    "_results",
    "_cleanup",
    "_liveness",
    "_nemesis",
    "_errors",
)


@pytest.mark.parametrize("branch", BRANCHES)
def test_silencing_any_checker_branch_lets_a_case_through(
    branch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mutation test itself: each branch replaced by ``return []`` misses some case."""
    from tests.concurrency import invariants

    assert hasattr(invariants, branch)
    monkeypatch.setattr(invariants, branch, lambda *args: [])
    missed = []
    for name, (breaker, invariant, detail) in CASES.items():
        case = _clean()
        breaker(case)
        found = invariants.check(case.plan, case.history, case.final)
        if not any(v.invariant == invariant and detail in v.detail for v in found):
            missed.append(name)
    assert missed, f"{branch} silenced and every case still caught: it checks nothing"
