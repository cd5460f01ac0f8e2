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
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from legacy.merge_under_lease import merge_under_lease
from snapmerge.domain import FinalMergeRequest, FinalMergeResult, Record
from snapmerge.exactly_once import inputs_digest
from snapmerge.group_commit import PendingQueue
from snapmerge.merging import MergeKit
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.unit.test_two_phase import DB, Rig, _interloper, make_rig, rows


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
    landed = _interloper(rig, times=1)  # B's one two-phase attempt loses

    result_b = _merge(rig, max_rebases=0).run(b)
    assert result_b.fallback_to_legacy is True and len(landed) == 1  # the fallback fired
    rig.on_step.clear()
    _merge(rig, max_rebases=0).run(a)  # A's own execution, after B's publish

    seqs = {e.batch_id: e.seq for e in PendingQueue(rig.blobs, DB).listing()[0]}
    assert seqs.get("a", seq_a) < seqs.get("b", seq_a + 1)  # A was enqueued before B
    state = rig.snapshot()
    assert {r.id: state[r.id] for r in b_rows} == {r.id: r for r in b_rows}  # B's, not A's


def _chain_batches(rig: Rig) -> list[str]:
    """Every batch applied along the pointer's chain, oldest first (a group version names all
    it consumed; a version of one batch, its own)."""
    store = rig.store
    pointer = store.read_pointer()
    out: list[str] = []
    version = pointer.version if pointer else None
    while version is not None:
        manifest = store.manifest(version)
        if manifest is None:
            break
        out[:0] = [b for b in manifest.consumed if not b.startswith("seed")]
        version = manifest.base_version
    return out


def _setup_a_then_b(rig: Rig) -> tuple[FinalMergeRequest, FinalMergeRequest, list[Record]]:
    rig.seed(rows(1, 10))
    a, b = rig.batch("a", [_shared_writes(100)]), rig.batch("b", [_shared_writes(101)])
    _enqueue_as_another_execution(rig, a)
    return a, b, _shared_writes(101)


def test_the_fallback_publishes_the_pending_group_in_order_and_answers_its_members(
    tmp_path: Path,
) -> None:
    rig = _group_rig(tmp_path)
    a, b, b_rows = _setup_a_then_b(rig)
    landed = _interloper(rig, times=1)

    result_b = _merge(rig, max_rebases=0).run(b)
    rig.on_step.clear()
    result_a = _merge(rig, max_rebases=0).run(a)  # A's execution: answered by B's publish
    retry_b = _merge(rig, max_rebases=0).run(b)  # a retry of B after the fallback publish

    assert result_b.fallback_to_legacy and len(landed) == 1
    assert result_b.consumed_batches == ("a", "b") and result_b.published_by == "b"
    assert result_b.cas_failures == 1 and result_b.wasted_builds == 1
    assert {"fallback", "fallback_wait"} <= set(result_b.lock_phases_ms)
    assert result_a.version == result_b.version and result_a.published_by == "b"
    assert retry_b.replayed and retry_b.version == result_b.version
    assert _chain_batches(rig) == ["a", "b"]  # each once, in enqueue order
    state = rig.snapshot()
    assert {r.id: state[r.id] for r in b_rows} == {r.id: r for r in b_rows}
    # A's intermediates went with B's publish; the pending objects but the highest are gone
    assert rig.blobs.list("intermediate/a/") == [] and rig.blobs.list("intermediate/b/") == []
    left = [p.batch_id for p in PendingQueue(rig.blobs, DB).listing()[0]]
    assert left == ["b"]
    # the fallback's version carries its change set (a later rebaser need not rebuild in full)
    assert rig.blobs.get(f"{DB.value}/snapshot/changes/{result_b.version}.json") is not None
    # a later builder sees B's pending object left behind, finds it published, skips it
    later = _merge(rig, max_rebases=0).run(rig.batch("d", [rows(103, 2, start=700)]))
    assert later.consumed_batches == ("d",)
    assert _chain_batches(rig) == ["a", "b", "d"]
    assert [p.batch_id for p in PendingQueue(rig.blobs, DB).listing()[0]] == ["d"]


def test_the_fallback_finds_our_batch_published_by_another_builder_and_replays(
    tmp_path: Path,
) -> None:
    """While B's CAS is in flight another builder (past its wait, no marker) publishes C with
    B in its group; B's fallback, under the lock, must find B published there and not apply it
    again."""
    rig = _group_rig(tmp_path)
    rig.seed(rows(1, 10))
    b, c = rig.batch("b", [_shared_writes(101)]), rig.batch("c", [_shared_writes(102)])
    impatient = replace(rig.kit.settings, group_wait=timedelta(0))
    other = TwoPhaseFinalMerge(
        MergeKit(rig.blobs, rig.engine, rig.table, impatient),
        fallback=merge_under_lease,
        max_rebases=0,
        sleep=lambda _s: None,
    )
    published: list[FinalMergeResult] = []

    def another_builder() -> None:
        if not published:
            published.append(other.run(c))

    rig.on_step["after_claims"] = another_builder
    result_b = _merge(rig, max_rebases=0).run(b)

    assert published and published[0].consumed_batches == ("b", "c")
    assert result_b.fallback_to_legacy and result_b.cas_failures == 1
    assert result_b.version == published[0].version and result_b.published_by == "c"
    assert _chain_batches(rig) == ["b", "c"]


@pytest.mark.parametrize("kill", [False, True], ids=["exception", "kill-9"])
@pytest.mark.parametrize(
    "step",
    ["after_build", "after_upload", "after_claims", "before_swap", "after_swap", "after_receipt"],
)
def test_a_crash_at_each_fallback_step_then_retries_apply_each_batch_once(
    tmp_path: Path, step: str, kill: bool
) -> None:
    """An exception at each step of the fallback (its clean-up runs), or a kill -9 there (the
    bucket stays as it was at that instant: nothing discarded, the builder marker left
    BUILDING); then B's retry and A's execution."""
    rig = _group_rig(tmp_path)
    quick = {"group_beat": timedelta(seconds=0.02), "group_stale": timedelta(seconds=0.2)}
    rig.kit.settings = rig.plain.settings = replace(rig.kit.settings, **quick)
    a, b, b_rows = _setup_a_then_b(rig)
    landed = _interloper(rig, times=1)
    passes: list[str] = []
    # the two-phase attempt passed the others before its CAS lost; these only the fallback
    nth = 1 if step in ("after_swap", "after_receipt") else 2
    frozen: dict[str, Any] = {}

    class Crash(Exception):
        pass

    def crash_in_fallback() -> None:
        passes.append(step)
        if len(passes) == nth:
            frozen.update(rig.blobs._objects)
            raise Crash(step)

    interloper = rig.on_step["after_upload"]

    def both() -> None:
        interloper()
        if step == "after_upload":
            crash_in_fallback()

    rig.on_step["after_upload"] = both
    if step != "after_upload":
        rig.on_step[step] = crash_in_fallback
    with pytest.raises(Crash):
        _merge(rig, max_rebases=0).run(b)
    assert len(landed) == 1 and len(passes) == nth  # the crash hit inside the fallback
    rig.on_step.clear()
    if kill:  # what the dead process left, and nothing it would have cleaned up after
        rig.blobs._objects = dict(frozen)

    retry_b = _merge(rig, max_rebases=0).run(b)
    result_a = _merge(rig, max_rebases=0).run(a)

    assert retry_b.version == result_a.version
    assert _chain_batches(rig) == ["a", "b"]
    state = rig.snapshot()
    assert {r.id: state[r.id] for r in b_rows} == {r.id: r for r in b_rows}
