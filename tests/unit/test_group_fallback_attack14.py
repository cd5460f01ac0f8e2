"""Attacks on the group-commit fallback (issue 14 moved it onto the legacy algorithm).

After ``max_rebases`` lost CASes a group-commit builder now runs the legacy locked merge for its
own batch alone. These tests drive it on the in-memory fakes, single-threaded, with the other
executions' steps placed exactly: a batch enqueued before ours that is still pending when we fall
back, our pending object left behind, a retry of our batch, another builder's claim on our batch.
The invariants are DESIGN §3's and issue 12's: every batch applied exactly once, and for an id
two enqueued batches write, the later-enqueued one's write wins.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from legacy.merge_under_lease import merge_under_lease
from snapmerge.domain import FinalMergeRequest, Record, VersionId
from snapmerge.exactly_once import inputs_digest
from snapmerge.group_commit import PendingQueue
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.unit.test_two_phase import DB, Rig, make_rig, rows


def _group_rig(tmp_path: Path) -> Rig:
    rig = make_rig(tmp_path)
    rig.kit.settings = replace(rig.kit.settings, group_commit=True)
    rig.plain.settings = rig.kit.settings
    return rig


def _merge(rig: Rig, *, max_rebases: int) -> TwoPhaseFinalMerge:
    return TwoPhaseFinalMerge(
        rig.kit,
        fallback=merge_under_lease,
        max_rebases=max_rebases,
        rng=random.Random(5),
        sleep=lambda _s: None,
    )


def _enqueue_as_another_execution(rig: Rig, request: FinalMergeRequest) -> int:
    """What another execution of ``request`` does first: fetch, digest, enqueue (then it waits
    for the live builder, which here is the execution under test)."""
    sources = rig.plain.fetch_sources(request, rig.root / f"other-{request.batch_id}")
    batch = PendingQueue(rig.blobs, DB).enqueue(request, inputs_digest(DB, sources))
    return batch.seq


def _interlopers(rig: Rig, times: int) -> list[VersionId]:
    """At each of the next ``times`` uploads a writer outside the lock publishes (ids 900+)."""
    landed: list[VersionId] = []

    def publish_other() -> None:
        if len(landed) < times:
            landed.append(rig.seed(rows(50 + len(landed), 2, start=900 + 2 * len(landed))).version)

    rig.on_step["after_upload"] = publish_other
    return landed


def _shared_writes(seed: int) -> list[Record]:
    return rows(seed, 3)  # ids 0..2: every batch of these tests writes them, content per seed


def test_fallback_leaves_the_later_enqueued_write_winning(tmp_path: Path) -> None:
    """A (enqueued first) and B (enqueued second) both write ids 0..2. B's execution builds the
    group [A, B], loses its CAS and falls back, publishing B alone while A is still pending;
    A's own execution then publishes A on top: A's older write must not win over B's."""
    rig = _group_rig(tmp_path)
    base = rows(1, 10)
    rig.seed(base)
    a_rows, b_rows = _shared_writes(100), _shared_writes(101)
    a, b = rig.batch("a", [a_rows]), rig.batch("b", [b_rows])
    seq_a = _enqueue_as_another_execution(rig, a)
    landed = _interlopers(rig, times=1)  # B's one two-phase attempt loses

    result_b = _merge(rig, max_rebases=0).run(b)
    assert result_b.fallback_to_legacy is True and len(landed) == 1  # the fallback fired
    rig.on_step.clear()
    _merge(rig, max_rebases=0).run(a)  # A's own execution, after B's publish

    seqs = {e.batch_id: e.seq for e in PendingQueue(rig.blobs, DB).listing()[0]}
    assert seqs.get("a", seq_a) < seqs.get("b", seq_a + 1)  # A was enqueued before B
    state = rig.snapshot()
    assert {r.id: state[r.id] for r in b_rows} == {r.id: r for r in b_rows}  # B's, not A's
