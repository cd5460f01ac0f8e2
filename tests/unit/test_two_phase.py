"""TwoPhaseFinalMerge on the in-memory fakes (MemoryBlobStore, MemoryLeaseTable, MemoryIndex).

Where the lock is held is checked against the lease table itself: a hook at each named step of
the merge reads the lock row, so "held only in phases 1 and 3" is an observation, not a timing.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    Keys,
    MergePath,
    Pointer,
    Record,
    VersionId,
    new_version_id,
)
from snapmerge.errors import LeaseLostError, PointerConflictError, SnapshotError
from snapmerge.lock import LeaseLock
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.snapshots import SnapshotStore
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
DIM = 8
LOCK_ID = f"chroma-{DB.value}-update"


@dataclass
class Rig:
    blobs: MemoryBlobStore
    table: MemoryLeaseTable
    engine: MemoryIndex
    kit: MergeKit
    plain: MergeKit
    root: Path
    steps: list[tuple[str, bool]] = field(default_factory=list)
    on_step: dict[str, Callable[[], None]] = field(default_factory=dict)

    @property
    def store(self) -> SnapshotStore:
        return self.kit.store(DB)

    def hook(self, step: str) -> None:
        """Record whether the lock row was held at ``step``, then run the test's action."""
        self.steps.append((step, self.table.read(LOCK_ID) is not None))
        action = self.on_step.get(step)
        if action is not None:
            action()

    def held_at(self, step: str) -> list[bool]:
        return [held for name, held in self.steps if name == step]

    def seed(self, rows: list[Record]) -> Pointer:
        return seed_snapshot(self.blobs, self.engine, DB, rows, workdir=self.root)

    def batch(self, batch_id: str, chunks: list[list[Record]]) -> FinalMergeRequest:
        keys = []
        for i, rows in enumerate(chunks):
            local = self.root / f"{batch_id}-chunk-{i}"
            synth.write_index(self.engine, local, rows, f"receipt_{DB.value}")
            prefix = Keys.intermediate_prefix(batch_id, i)
            upload_directory(self.blobs, local, prefix)
            keys.append(prefix)
        return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=tuple(keys))

    def snapshot(self) -> dict[str, Record]:
        pointer = self.store.read_pointer()
        assert pointer is not None
        path = self.kit.cache(DB).get(pointer.version)
        return {r.id: r for page in self.engine.read_records(path) for r in page}


def make_rig(
    tmp_path: Path,
    *,
    lock: LeaseLock | None = None,
    table: MemoryLeaseTable | None = None,
    phase_lease: timedelta | None = None,
) -> Rig:
    blobs, engine = MemoryBlobStore(), MemoryIndex()
    table = table or MemoryLeaseTable()
    settings = Settings(
        bucket="memory",
        table="memory",
        chroma_root=tmp_path / "root",
        lock_wait_timeout=timedelta(seconds=5),
        keep_versions=4,
        **({"phase_lease": phase_lease} if phase_lease is not None else {}),
    )
    plain = MergeKit(blobs, engine, table, settings, lock=lock)  # no hooks: for other writers
    rig = Rig(blobs, table, engine, plain, plain, tmp_path)
    rig.kit = MergeKit(blobs, engine, table, settings, lock=lock, hooks=rig.hook)
    return rig


def two_phase(rig: Rig, *, max_rebases: int = 3) -> TwoPhaseFinalMerge:
    return TwoPhaseFinalMerge(
        rig.kit,
        fallback=merge_under_lease,
        max_rebases=max_rebases,
        rng=random.Random(3),
        sleep=lambda _s: None,
    )


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path)


def rows(seed: int, n: int, start: int = 0) -> list[Record]:
    return synth.records(seed, n, DIM, start=start)


# -- happy path and where the lock is held -----------------------------------------------------


def test_publishes_base_plus_batch_holding_the_lock_only_in_phases_1_and_3(rig: Rig) -> None:
    base_rows = rows(1, 20)
    base = rig.seed(base_rows)
    later = synth.overwrite(base_rows, seed=2, fraction=0.25, vector_fraction=0.5)
    request = rig.batch("b1", [rows(3, 5, start=100), later])

    result = two_phase(rig).run(request)

    assert result.path is MergePath.TWO_PHASE
    assert result.base_version == base.version
    assert rig.store.read_pointer() == Pointer(result.version, rig.store.read_pointer().etag)  # type: ignore[union-attr]
    assert result.total_embeddings == 25
    assert rig.snapshot() == synth.expected_state([base_rows, rows(3, 5, start=100), later])
    # phase 2 runs with the lock free; the swap happens under it
    for step in ("after_fetch", "after_build", "after_upload"):
        assert rig.held_at(step) == [False], step
    assert rig.held_at("before_swap") == [True]
    assert rig.held_at("after_receipt") == [False]  # finish runs after the release
    phases = result.lock_phases_ms
    assert set(phases) == {"phase1", "phase3", "phase1_wait", "phase3_wait"}
    assert result.lock_hold_ms == pytest.approx(phases["phase1"] + phases["phase3"])
    assert result.lock_wait_ms == pytest.approx(phases["phase1_wait"] + phases["phase3_wait"])
    assert (result.cas_failures, result.cas_retries, result.fallback_to_legacy) == (0, 0, False)
    assert rig.blobs.list("intermediate/b1/") == []
    assert result.digest == rig.store.manifest(result.version).digest  # type: ignore[union-attr]


def test_first_publish_on_an_empty_collection(rig: Rig) -> None:
    result = two_phase(rig).run(rig.batch("b1", [rows(2, 4)]))
    assert result.base_version is None
    assert len(rig.snapshot()) == 4


# -- conflicts ---------------------------------------------------------------------------------


def _interloper(rig: Rig, times: int) -> list[VersionId]:
    """At each of the next ``times`` uploads, publish another version without the lock."""
    landed: list[VersionId] = []

    def publish_other() -> None:
        if len(landed) < times:
            landed.append(rig.seed(rows(50 + len(landed), 2, start=900 + 2 * len(landed))).version)

    rig.on_step["after_upload"] = publish_other
    return landed


def test_a_lost_cas_rebases_onto_the_new_base_and_lands(rig: Rig) -> None:
    base_rows = rows(1, 10)
    seed = rig.seed(base_rows)
    other_rows = synth.overwrite(base_rows, seed=4, fraction=0.5, vector_fraction=0.5)
    other = rig.batch("other", [other_rows])
    batch_rows = [*rows(7, 3, start=500), *synth.overwrite(base_rows, 5, 0.3, 0.3)]
    landed: list[VersionId] = []

    def legacy_publishes_meanwhile() -> None:
        if not landed:
            landed.append(LegacyFinalMerge(rig.plain).run(other).version)

    rig.on_step["after_upload"] = legacy_publishes_meanwhile
    result = two_phase(rig).run(rig.batch("b1", [batch_rows]))

    assert result.base_version == landed[0]  # rebased onto the other publish
    assert (result.cas_failures, result.cas_retries, result.fallback_to_legacy) == (1, 1, False)
    assert rig.store.read_pointer().version == result.version  # type: ignore[union-attr]
    assert rig.snapshot() == synth.expected_state([base_rows, other_rows, batch_rows])
    # the losing upload was discarded: only the seed, the other publish and ours remain
    assert set(rig.store.list_versions()) == {seed.version, landed[0], result.version}


def test_after_max_rebases_it_falls_back_to_holding_the_lock_and_lands(rig: Rig) -> None:
    rig.seed(rows(1, 10))
    landed = _interloper(rig, times=3)  # every two-phase attempt loses, the fallback wins
    batch_rows = rows(7, 3, start=500)

    result = two_phase(rig, max_rebases=2).run(rig.batch("b1", [batch_rows]))

    assert result.fallback_to_legacy is True
    assert result.cas_failures == 3
    assert result.base_version == landed[-1]
    assert "fallback" in result.lock_phases_ms
    assert rig.held_at("after_upload")[-1] is True  # the fallback uploads under the lock
    state = rig.snapshot()
    assert all(state[r.id] == r for r in batch_rows)


@pytest.mark.parametrize("group_commit", [True, False])
def test_the_fallback_is_the_legacy_algorithm_handed_in(tmp_path: Path, group_commit: bool) -> None:
    """Issue 14: two-phase's fallback is legacy's locked merge, called with the lock held, on
    the group-commit path and the plain one alike; our batch alone lands through it."""
    rig = make_rig(tmp_path)
    rig.kit.settings = replace(rig.kit.settings, group_commit=group_commit)
    rig.seed(rows(1, 10))
    _interloper(rig, times=2)  # both two-phase attempts lose
    calls: list[tuple[str, bool]] = []

    def legacy(kit: MergeKit, request: FinalMergeRequest, lease: Any, *a: Any, **k: Any) -> Any:
        calls.append((request.batch_id, not lease.released))
        return merge_under_lease(kit, request, lease, *a, **k)

    batch_rows = rows(7, 3, start=500)
    merge = TwoPhaseFinalMerge(
        rig.kit, fallback=legacy, max_rebases=1, rng=random.Random(3), sleep=lambda _s: None
    )
    result = merge.run(rig.batch("b1", [batch_rows]))

    assert calls == [("b1", True)]
    assert result.fallback_to_legacy is True and result.cas_failures == 2
    state = rig.snapshot()
    assert all(state[r.id] == r for r in batch_rows)


def test_a_lost_reply_to_our_own_pointer_write_counts_as_success(rig: Rig) -> None:
    rig.seed(rows(1, 10))
    armed = [True]

    def drop_reply(key: str) -> None:
        if key == Keys.pointer(DB) and armed[0]:
            armed[0] = False  # the write lands, then the caller sees a 412 (an SDK retry's view)
            rig.blobs.fail_next("put", PointerConflictError(key, "etag"), after=True)

    rig.blobs.before_put = drop_reply
    result = two_phase(rig).run(rig.batch("b1", [rows(2, 3, start=50)]))
    assert not armed[0]
    assert result.cas_failures == 0
    assert rig.store.read_pointer().version == result.version  # type: ignore[union-attr]
    assert rig.store.is_complete(result.version)


# -- bad pointers ------------------------------------------------------------------------------


def test_a_pointer_naming_a_missing_version_is_an_error_and_nothing_is_published(rig: Rig) -> None:
    missing = new_version_id()
    rig.blobs.put(Keys.pointer(DB), missing.encode())
    with pytest.raises(SnapshotError, match="missing or incomplete"):
        two_phase(rig).run(rig.batch("b1", [rows(2, 3)]))
    assert rig.store.read_pointer().version == missing  # type: ignore[union-attr]
    assert rig.store.list_versions() == []
    assert rig.blobs.list("intermediate/b1/") != []  # nothing consumed


def test_a_pointer_naming_an_incomplete_version_is_an_error(rig: Rig) -> None:
    half = new_version_id()
    rig.blobs.put(Keys.version_prefix(DB, half) + "chroma.sqlite3", b"half an upload")
    rig.blobs.put(Keys.pointer(DB), half.encode())
    with pytest.raises(SnapshotError):
        two_phase(rig).run(rig.batch("b1", [rows(2, 3)]))
    assert rig.store.read_pointer().version == half  # type: ignore[union-attr]
    assert rig.store.list_versions() == [half]


# -- idempotent retries ------------------------------------------------------------------------


def test_a_retry_after_success_returns_the_same_publish(rig: Rig) -> None:
    rig.seed(rows(1, 10))
    request = rig.batch("b1", [rows(2, 3, start=50)])
    first = two_phase(rig).run(request)
    again = two_phase(rig).run(request)  # intermediates are gone by now
    assert again.replayed and again.version == first.version
    assert rig.store.read_pointer().version == first.version  # type: ignore[union-attr]


def test_a_crash_after_the_swap_is_answered_from_the_chain_on_retry(rig: Rig) -> None:
    rig.seed(rows(1, 10))
    request = rig.batch("b1", [rows(2, 3, start=50)])

    def crash() -> None:
        raise RuntimeError("lambda timed out after the swap")

    rig.on_step["after_swap"] = crash
    with pytest.raises(RuntimeError):
        two_phase(rig).run(request)
    published = rig.store.read_pointer()
    del rig.on_step["after_swap"]
    again = two_phase(rig).run(request)
    assert again.replayed and again.version == published.version  # type: ignore[union-attr]
    assert rig.store.read_pointer() == published


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_matches_the_real_publish_on_the_same_base(rig: Rig) -> None:
    base = rig.seed(rows(1, 10))
    request = rig.batch("b1", [rows(2, 3, start=50), rows(3, 2, start=5)])
    before = {k: rig.blobs.get(k) for k in rig.blobs.list("")}

    dry = two_phase(rig).dry_run(request, base.version)

    assert {k: rig.blobs.get(k) for k in rig.blobs.list("")} == before
    real = two_phase(rig).run(request)
    assert real.base_version == dry.base_version == base.version
    published = rig.kit.cache(DB).get(real.version)
    assert dry.digest == rig.engine.digest(published)  # what the real publish holds
    assert dry.total_embeddings == real.total_embeddings
    assert (dry.lock_hold_ms, dry.lock_wait_ms) == (0.0, 0.0)


# -- fencing and retention ---------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds

    def wall(self) -> datetime:
        return datetime(2025, 1, 2, tzinfo=UTC) + timedelta(seconds=self.seconds)


def test_a_holder_paused_past_its_lease_cannot_move_the_pointer(tmp_path: Path) -> None:
    fake = FakeTime()
    table = MemoryLeaseTable(clock=fake.wall)
    lock = LeaseLock(
        table,
        duration=timedelta(seconds=5),
        heartbeat_interval=timedelta(hours=1),
        clock=fake.monotonic,
    )
    rig = make_rig(tmp_path, lock=lock, table=table, phase_lease=timedelta(seconds=5))
    rig.kit.verify_margin = timedelta(seconds=1)
    base = rig.seed(rows(1, 10))

    def pause_past_expiry() -> None:
        fake.seconds += 10  # no heartbeat ran: the lease lapsed while we were frozen

    rig.on_step["before_swap"] = pause_past_expiry
    request = rig.batch("b1", [rows(2, 3, start=50)])
    with pytest.raises(LeaseLostError):
        two_phase(rig).run(request)
    assert rig.store.read_pointer() == base
    assert rig.store.list_versions() == [base.version]  # the orphan upload was discarded
    assert rig.blobs.list("intermediate/b1/") != []


def test_retention_spares_the_pinned_base_while_phase_2_runs(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    base = rig.seed(rows(1, 10))
    survived: list[bool] = []

    def publish_many_then_retain() -> None:
        if not survived:
            for i in range(3):
                rig.seed(rows(60 + i, 1, start=800 + i))
            rig.store.apply_retention(keep=1)
            survived.append(rig.store.is_complete(base.version))

    rig.on_step["after_build"] = publish_many_then_retain
    result = two_phase(rig).run(rig.batch("b1", [rows(2, 3, start=50)]))
    assert survived == [True]
    assert result.cas_failures == 1  # the pointer moved during phase 2: rebased, then landed
    assert rig.store.read_pointer().version == result.version  # type: ignore[union-attr]


def test_the_conflict_is_never_skipped_when_max_rebases_is_zero(rig: Rig) -> None:
    rig.seed(rows(1, 10))
    _interloper(rig, times=1)
    result = two_phase(rig, max_rebases=0).run(rig.batch("b1", [rows(2, 3, start=50)]))
    assert result.fallback_to_legacy and result.cas_failures == 1
    assert all(rig.snapshot()[r.id] == r for r in rows(2, 3, start=50))
