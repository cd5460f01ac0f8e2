"""Every batch exactly once, on the embedded server with real ChromaDB, on both paths (issue 10).

Each test lines up one adversarial case deterministically (a crash at a named step, a lock that
lets others publish while a run waits for it, a rival writer, a hand-deleted pointer) and then
checks what readers see: the pointer's snapshot against the last write of every id along the
publish order. Each failed on the code before the commit log and claims (see the report).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snapmerge import synth
from snapmerge.domain import Keys, LockScope, VersionId
from snapmerge.errors import MergeInputError, SnapshotError, StoreError
from snapmerge.seeding import seed_snapshot
from tests.conftest import AwsEnv
from tests.functional.merge_rig import DB, NESTED, PATHS, Crash, Rig, crash_at, make_rig, rows


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def rewrite(base: list[Any], seed: int) -> list[Any]:
    """A later write of every base id (new vectors for half): reverting it is visible."""
    return synth.overwrite(base, seed=seed, fraction=1.0, vector_fraction=0.5)


# -- case 1: a retry after a crash between the swap and the receipt ------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_retry_after_swap_crash_and_five_later_publishes_replays(rig: Rig, path: str) -> None:
    base = rows(1, 10)
    rig.seed(base)
    first = rewrite(base, 2)
    request = rig.batch("a", [first])
    with pytest.raises(Crash):
        rig.merger(path, crash_at("after_swap")).run(request)
    published = rig.store.read_pointer()
    assert published is not None
    later = [rewrite(base, 10 + i) for i in range(5)]
    done = [rig.merger(path).run(rig.batch(f"later-{i}", [w])) for i, w in enumerate(later)]
    # retention (keep 4) has deleted versions on the chain between a's publish and the pointer
    # (a's own is spared by its crashed run's in-flight marker); the log still knows them all
    assert rig.blobs.list(Keys.version_prefix(DB, done[0].version)) == []
    before = rig.store.read_pointer()

    result = rig.merger(path).run(request)

    assert result.replayed and result.version == published.version
    assert rig.store.read_pointer() == before  # nothing published again
    assert rig.snapshot() == synth.expected_state([base, first, *later])
    receipt = rig.receipt("a")
    assert receipt is not None and receipt["version"] == published.version
    assert rig.blobs.list("intermediate/a/") == []  # the replay cleaned up like the first run


# -- case 2: the same batch twice at once ---------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fast_path", [False, True], ids=["intermediates", "deltas"])
def test_duplicate_run_that_waited_for_the_lock_replays_not_reapplies(
    rig: Rig, path: str, fast_path: bool
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    first, second = rewrite(base, 2), rewrite(base, 3)
    # fast path: the inputs are the deltas themselves, which nobody deletes after the publish
    request = rig.deltas("a", [first]) if fast_path else rig.batch("a", [first])
    results = []

    def meanwhile() -> None:  # while the duplicate waits for the lock: a publishes, then b
        results.append(rig.merger(path, **NESTED).run(request))
        results.append(rig.merger(path, **NESTED).run(rig.batch("b", [second])))

    duplicate = rig.merger(path, meanwhile=meanwhile).run(request)

    assert duplicate.replayed and duplicate.version == results[0].version
    pointer = rig.store.read_pointer()
    assert pointer is not None and pointer.version == results[1].version  # chain: a, b — no a again
    assert rig.snapshot() == synth.expected_state([base, first, second])


@pytest.mark.parametrize("path", PATHS)
def test_duplicate_that_loses_the_cas_rebases_into_a_replay(rig: Rig, path: str) -> None:
    """Both runs build on the same base; the loser's rebase finds the winner's claim."""
    base = rows(1, 10)
    rig.seed(base)
    first = rewrite(base, 2)
    request = rig.batch("a", [first])
    winner = []

    def rival_publishes_first(step: str) -> None:
        if step == "after_upload" and not winner:
            winner.append(rig.merger("two_phase", **NESTED).run(request))

    loser = rig.merger(path, rival_publishes_first, lock_scope=LockScope.PER_BATCH)
    result = loser.run(request)

    assert result.replayed and result.version == winner[0].version
    assert result.version == rig.store.read_pointer().version  # type: ignore[union-attr]
    assert rig.snapshot() == synth.expected_state([base, first])
    prefixes = {k.split("/")[3] for k in rig.blobs.list(Keys.versions_prefix(DB))}
    assert len(prefixes) == 2  # the seed and the winner: the loser's upload was discarded


# -- case 3: a missing pointer beside complete versions --------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_missing_pointer_beside_versions_is_refused_then_rebuilt_on_opt_in(
    rig: Rig, path: str
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    added = rows(2, 4, start=100)
    a = rig.merger(path).run(rig.batch("a", [added]))
    rig.blobs.delete([Keys.pointer(DB)])  # by hand, a lifecycle rule, a broad role
    fresh = rows(3, 4, start=200)
    request = rig.batch("b", [fresh])
    versions = rig.store.list_versions()

    refusal = rf"newest published: {a.version}.*SNAPMERGE_REBUILD_FROM_NEWEST"
    with pytest.raises(SnapshotError, match=refusal):
        rig.merger(path).run(request)
    assert rig.store.read_pointer() is None and rig.store.list_versions() == versions
    assert rig.blobs.list("intermediate/b/")  # inputs kept for the retry

    result = rig.merger(path, rebuild_from_newest=True).run(request)
    assert result.base_version == a.version
    assert rig.snapshot() == synth.expected_state([base, added, fresh])


@pytest.mark.parametrize("path", PATHS)
def test_pointer_deleted_mid_run_is_refused_on_the_rebase(rig: Rig, path: str) -> None:
    base = rows(1, 10)
    seed = rig.seed(base)
    request = rig.batch("a", [rows(2, 4, start=100)])

    def delete_pointer(step: str) -> None:
        if step == "before_swap":
            rig.blobs.delete([Keys.pointer(DB)])

    with pytest.raises(SnapshotError, match=f"newest published: {seed.version}"):
        rig.merger(path, delete_pointer).run(request)
    assert rig.store.read_pointer() is None
    assert rig.store.list_versions() == [seed.version]  # the orphan upload went, the seed stays
    assert rig.blobs.list("intermediate/a/")


@pytest.mark.parametrize("path", PATHS)
def test_missing_pointer_never_chooses_a_newer_upload_of_a_dead_run(rig: Rig, path: str) -> None:
    """Adversarial finding F1: the newest complete version may be an upload whose run died
    before its CAS. b publishes on the seed; a (built later, so its id sorts higher) uploads on
    the same seed and dies. The base chosen and recommended must be b's, and a's retry then
    applies a once on the rebuilt chain."""
    base = rows(1, 10)
    rig.seed(base)
    first, second, fresh = rewrite(base, 2), rewrite(base, 3), rows(3, 4, start=200)
    request_a = rig.batch("a", [second])
    died: list[str] = []

    def a_uploads_and_dies(step: str) -> None:
        if step == "after_build" and not died:
            died.append(step)
            dying = rig.merger(path, crash_at("after_upload"), group_commit=False)
            with pytest.raises(Crash):
                dying.run(request_a)

    b = rig.merger("two_phase", a_uploads_and_dies, group_commit=False).run(rig.batch("b", [first]))
    assert died and rig.store.read_pointer().version == b.version  # type: ignore[union-attr]
    orphan = max(v for v in rig.store.list_versions() if rig.store.is_complete(v))
    assert orphan != b.version and rig.store.log.claims("a")[0].version == orphan  # the fault
    rig.blobs.delete([Keys.pointer(DB)])
    request_c = rig.batch("c", [fresh])

    with pytest.raises(SnapshotError, match=rf"newest published: {b.version}") as refused:
        rig.merger(path).run(request_c)
    assert orphan not in str(refused.value)  # built on the seed, below b: an orphan, decidedly
    result = rig.merger(path, rebuild_from_newest=True).run(request_c)
    assert result.base_version == b.version
    assert rig.snapshot() == synth.expected_state([base, first, fresh])  # b's publish kept

    retry = rig.merger(path).run(request_a)
    assert not retry.replayed and retry.base_version == result.version
    assert rig.snapshot() == synth.expected_state([base, first, fresh, second])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("then", ["replay", "next_publish"])
def test_crash_between_swap_and_mark_is_found_by_the_replay_or_the_next_publish(
    rig: Rig, path: str, then: str
) -> None:
    """The published mark is written after the CAS: a run that dies in between leaves its
    version unmarked; its replay marks it, and a publish on top of it covers it by its base."""
    base = rows(1, 10)
    rig.seed(base)
    first, later = rewrite(base, 2), rewrite(base, 3)
    request = rig.batch("a", [first])
    with pytest.raises(Crash):
        rig.merger(path, crash_at("after_swap"), group_commit=False).run(request)
    swapped = rig.store.read_pointer()
    assert swapped is not None and swapped.version not in rig.store.log.published_marks()
    writes = [base, first]
    if then == "replay":
        assert rig.merger(path).run(request).replayed
        top = swapped.version
    else:
        top = rig.merger(path).run(rig.batch("b", [later])).version
        writes.append(later)
    rig.blobs.delete([Keys.pointer(DB)])

    result = rig.merger(path, rebuild_from_newest=True).run(rig.batch("c", [rows(3, 4, 300)]))
    assert result.base_version == top
    assert rig.snapshot() == synth.expected_state([*writes, rows(3, 4, 300)])


# -- case 4: a reused batch id with new inputs -----------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("receipt_written", [True, False])
def test_reused_batch_id_with_new_inputs_names_both_digests(
    rig: Rig, path: str, receipt_written: bool
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    first = rows(2, 4, start=100)
    hooks = None if receipt_written else crash_at("after_swap")
    try:
        rig.merger(path, hooks).run(rig.batch("a", [first]))
    except Crash:
        assert not receipt_written
    before = rig.store.read_pointer()
    request = rig.batch("a", [rows(3, 4, start=200)])  # the same keys, other records

    with pytest.raises(MergeInputError, match=r"inputs [0-9a-f]{64};.*digest to [0-9a-f]{64}"):
        rig.merger(path).run(request)
    assert rig.store.read_pointer() == before
    assert rig.snapshot() == synth.expected_state([base, first])
    assert rig.blobs.list("intermediate/a/")  # the new inputs are kept


# -- case 7: a version-id collision ----------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_version_id_collision_never_touches_the_live_version(
    rig: Rig, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = rows(1, 10)
    rig.seed(base)
    import snapmerge.merging as merging

    drawn = iter([VersionId("20261201_000000_000000_" + "0" * 32)] * 2)
    real = merging.new_version_id
    monkeypatch.setattr(merging, "new_version_id", lambda: next(drawn, None) or real())
    a_rows, b_rows, c_rows = rows(2, 4, start=100), rows(3, 4, start=200), rows(4, 4, start=300)
    a = rig.merger(path).run(rig.batch("a", [a_rows]))
    live_files = {k: rig.blobs.get(k) for k in rig.blobs.list(Keys.version_prefix(DB, a.version))}

    b = rig.merger(path).run(rig.batch("b", [b_rows]))  # draws a's id first

    assert b.version != a.version and b.base_version == a.version
    assert {k: rig.blobs.get(k) for k in live_files} == live_files  # a's files untouched
    rig.merger(path).run(rig.batch("c", [c_rows]))
    assert rig.snapshot() == synth.expected_state([base, a_rows, b_rows, c_rows])


# -- any failure after an upload discards the orphan; a failed discard hides no conflict -----------
@pytest.mark.parametrize("path", PATHS)
def test_failure_mid_upload_leaves_no_orphan(rig: Rig, path: str) -> None:
    seed = rig.seed(rows(1, 10))
    request = rig.batch("a", [rows(2, 4, start=100)])
    calls = {"n": 0}
    upload = rig.blobs.upload_file

    def second_upload_fails(key: str, file: Path) -> None:
        # counts the version's own files only: the change set uploads beside them (two-phase)
        calls["n"] += "/timestamped/" in key
        if "/timestamped/" in key and calls["n"] == 2:
            raise StoreError(f"upload {key} failed: connection reset")
        upload(key, file)

    rig.blobs.upload_file = second_upload_fails  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        rig.merger(path).run(request)
    assert rig.store.list_versions() == [seed.version]
    assert rig.blobs.list(Keys.claims_prefix(DB, "a")) == []


@pytest.mark.parametrize("path", PATHS)
def test_a_failing_discard_never_hides_a_conflict(rig: Rig, path: str) -> None:
    base = rows(1, 10)
    rig.seed(base)
    rival_rows, ours = rows(2, 4, start=100), rows(3, 4, start=200)
    request = rig.batch("a", [ours])
    state = {"rival": False, "deletes": 0}
    delete = rig.blobs.delete

    def failing_delete(keys: Any) -> None:
        if any("/timestamped/" in k for k in keys) and state["deletes"] == 0:
            state["deletes"] += 1
            raise StoreError("delete failed: AccessDenied")
        delete(keys)

    def rival_outside_the_lock(step: str) -> None:
        if step == "before_swap" and not state["rival"]:
            state["rival"] = True
            seed_snapshot(rig.blobs, rig.engine, DB, base + rival_rows, workdir=rig.root)
            rig.blobs.delete = failing_delete  # type: ignore[method-assign]

    result = rig.merger(path, rival_outside_the_lock).run(request)

    assert state["deletes"] == 1  # the discard really failed
    assert result.cas_failures == 1 and not result.replayed
    assert rig.snapshot() == synth.expected_state([base, rival_rows, ours])
