"""What a two-phase execution asks of the blob store, and how long a lock waiter sleeps (fakes).

Issue 12, second round: in mixed mode a two-phase execution was slower than legacy's, and much of
the difference was small requests (on the embedded server each is CPU in the caller's own
process). These pin the ones that were cut, by counting requests — no timing.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import timedelta
from pathlib import Path

from bench.recording import CountingBlobStore
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.backoff import Backoff
from snapmerge.change_sets import ChangeSets, prune_changes
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys, VersionId
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
DIM = 8


def _kit(tmp_path: Path, blobs: CountingBlobStore) -> MergeKit:
    settings = Settings(
        bucket="memory",
        table="memory",
        chroma_root=tmp_path / "root",
        lock_wait_timeout=timedelta(seconds=5),
        group_beat=timedelta(hours=1),  # no heartbeat PUT during the test, however slow
        keep_versions=2,
    )
    return MergeKit(blobs, MemoryIndex(), MemoryLeaseTable(), settings)


def _request(kit: MergeKit, tmp_path: Path, batch_id: str, seed: int) -> FinalMergeRequest:
    keys = []
    for i in range(2):
        local = tmp_path / f"{batch_id}-{i}"
        rows = synth.records(seed + i, 3, DIM, id_prefix=f"{batch_id}-", start=10 * i)
        synth.write_index(kit.engine, local, rows, f"receipt_{DB.value}")
        upload_directory(kit.blobs, local, Keys.intermediate_prefix(batch_id, i))
        keys.append(Keys.intermediate_prefix(batch_id, i))
    return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=tuple(keys))


def _merge(kit: MergeKit) -> TwoPhaseFinalMerge:
    return TwoPhaseFinalMerge(
        kit, fallback=merge_under_lease, rng=random.Random(1), sleep=lambda _s: None
    )


def test_a_solo_group_publish_asks_for_its_claims_once_and_writes_its_change_set_in_two_puts(
    tmp_path: Path,
) -> None:
    blobs = CountingBlobStore(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    request = _request(kit, tmp_path, "b1", 10)
    blobs.calls.clear()

    result = _merge(kit).run(request)

    assert result.published_by == "b1"
    # the wait loop no longer asks at the pointer before building (the selection asks at the
    # phase-1 base): one LIST of claims/b1/, where there were two
    assert blobs.calls["LIST", "claims"] == 1
    # the change set is one tar and its marker, not an object per file of each source
    assert blobs.calls["PUT", "changes"] == 2
    # the builder marker: taken, then idle; the batches it covers ride the next beat
    assert blobs.calls["PUT", "pending-builder.json"] == 2
    changes = ChangeSets(blobs, DB)
    assert changes.base_of(result.version)[0] == 2
    fetched = changes.fetch([(result.version, 2)], tmp_path / "fetched")
    assert fetched is not None and len(fetched) == 2
    got = {r.id for path in fetched for page in kit.engine.read_records(path) for r in page}
    assert got == {f"b1-{n:08d}" for n in (0, 1, 2, 10, 11, 12)}


def test_a_change_set_marker_of_another_packing_means_a_full_rebuild(tmp_path: Path) -> None:
    blobs = CountingBlobStore(MemoryBlobStore())
    changes = ChangeSets(blobs, DB)
    version = VersionId("20260101_000000_000000_" + "a" * 32)
    old = {"version": version, "base_version": None, "sources": 1}  # the per-file layout's marker
    blobs.put(changes.marker_key(version), json.dumps(old).encode())

    assert changes.base_of(version) == (None, None)
    assert changes.path(version, None) is None


def test_pruning_reads_entries_only_when_there_is_something_to_prune(tmp_path: Path) -> None:
    blobs = CountingBlobStore(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)  # keep_versions = 2
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    published = [_merge(kit).run(_request(kit, tmp_path, f"b{n}", 10 * n)) for n in range(4)]
    changes = ChangeSets(blobs, DB)
    assert len(changes.versions()) == 4  # at most 2 x keep: nothing read, nothing pruned

    blobs.calls.clear()
    prune_changes(kit, DB)
    assert blobs.calls == Counter({("LIST", "changes"): 1})

    published.append(_merge(kit).run(_request(kit, tmp_path, "b9", 90)))
    # five change sets, more than 2 x keep: the older three are judged, the retired ones go
    left = changes.versions()
    assert published[-1].version in left and published[-2].version in left
    assert published[0].version not in left
    assert not kit.store(DB).is_complete(published[0].version)


def test_a_lock_waiter_never_sleeps_past_the_backoff_cap() -> None:
    """A waiter behind a legacy hold of unknown length retries at least every 400 ms, however
    long it has waited (the cap was 5 s: it overslept the release by seconds)."""
    backoff, rng = Backoff(), random.Random(7)
    delays = [backoff.delay(attempt, rng) for attempt in range(40)]
    assert max(delays) <= 0.4
    assert min(delays[5:]) >= 0.2  # equal jitter: never a near-zero hammering of the table


class _KeyLog(CountingBlobStore):
    """Also keeps every key read, in order."""

    def __init__(self, inner: MemoryBlobStore) -> None:
        super().__init__(inner)
        self.gets: list[str] = []

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.gets.append(key)
        return super().get(key)


def test_the_builder_does_not_read_its_own_pending_object_back(tmp_path: Path) -> None:
    """Issue 12, fourth round: the plan's listing reads the other batches' pending objects; its
    own it wrote a moment before (and only its execution withdraws it). One GET less."""
    blobs = _KeyLog(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    _merge(kit).run(_request(kit, tmp_path, "b1", 10))  # leaves the highest pending object
    request = _request(kit, tmp_path, "b2", 20)
    blobs.gets.clear()

    result = _merge(kit).run(request)

    assert result.published_by == "b2"
    pending = [k for k in blobs.gets if "/pending/" in k]
    ours = [k for k in pending if k.endswith("000000000002.json")]
    theirs = [k for k in pending if k.endswith("000000000001.json")]
    assert ours == []  # never read back, though listed by the plan
    assert len(theirs) == 2  # the other batch's: once by the enqueue, once by the plan


def test_the_next_builder_reads_no_claims_of_the_batch_published_before_it(
    tmp_path: Path,
) -> None:
    """The highest pending object stays for its number; its publisher marks it published, so the
    next execution's plan skips it instead of reading its claims (a LIST and a GET, each run)."""
    blobs = CountingBlobStore(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    _merge(kit).run(_request(kit, tmp_path, "b1", 10))
    request = _request(kit, tmp_path, "b2", 20)
    blobs.calls.clear()

    result = _merge(kit).run(request)

    assert result.published_by == "b2"
    assert blobs.calls["LIST", "claims"] == 1  # our own (b2), not b1's
    assert blobs.calls["GET", "claims"] == 0
