"""Attacks on two-phase's off-lock head start (``snapmerge/prefetch.py``) and its parallel fetch
of the intermediates (``MergeKit.fetch_sources(workers=...)``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.recording import CountingBlobStore
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.domain import FinalMergeRequest
from snapmerge.errors import MergeInputError
from snapmerge.group_commit import PendingQueue
from snapmerge.group_plan import Claims, plan_group
from snapmerge.manifest import EntryState
from snapmerge.ports import Blob
from snapmerge.prefetch import BasePrefetch
from snapmerge.seeding import seed_snapshot
from tests.unit.test_fetch_ahead import DB, DIM, _kit, _request, _two_phase


class StuckBase(CountingBlobStore):
    """Every read of a version's files blocks until ``release`` is set (a hung connection)."""

    def __init__(self, inner: MemoryBlobStore) -> None:
        super().__init__(inner)
        self.release = threading.Event()
        self.reading = threading.Event()
        self.armed = False

    def _hold(self, key: str) -> None:
        if self.armed and "/timestamped/" in key:
            self.reading.set()
            self.release.wait(30)

    def get(self, key: str) -> Blob | None:
        self._hold(key)
        return super().get(key)

    def download_file(self, key: str, path: Path, **kwargs: Any) -> None:
        self._hold(key)
        super().download_file(key, path, **kwargs)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("prefetch-")]


def test_a_run_that_fails_fast_does_not_wait_for_a_stuck_base_download(tmp_path: Path) -> None:
    blobs = StuckBase(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    good = _request(kit, tmp_path, "b1", 2)
    bad = FinalMergeRequest(
        batch_id="b1", database=DB, intermediate_keys=(*good.intermediate_keys, "intermediate/x/")
    )
    blobs.armed = True
    try:
        started = time.monotonic()
        with pytest.raises(MergeInputError, match="intermediate/x/"):
            _two_phase(kit).run(bad)
        took = time.monotonic() - started
        assert blobs.reading.is_set()  # the head start was under way, stuck
        assert took < 5, f"the run's own error waited {took:.1f}s for the base download"
    finally:
        blobs.release.set()
        for thread in _prefetch_threads():
            thread.join(10)
    # the abandoned head start let go of its pin once it ended
    assert list(kit.cache(DB).directory.glob(".pin-*")) == []


def test_an_abandoned_head_start_unpins_what_it_cached(tmp_path: Path) -> None:
    blobs = StuckBase(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    blobs.armed = True
    head = BasePrefetch(kit, DB)
    with head:
        assert blobs.reading.wait(5)
    # closed while the download is stuck: nothing waited for it, and the pin is still held
    assert len(list(kit.cache(DB).directory.glob(".pin-*"))) == 1
    blobs.release.set()
    head._thread.join(10)
    assert not head._thread.is_alive()
    assert list(kit.cache(DB).directory.glob(".pin-*")) == []
    assert head.version is not None and kit.cache(DB).path(head.version).is_dir()


class StuckListing(CountingBlobStore):
    """The listing of a version's files waits for ``release`` (what retention does meanwhile)."""

    def __init__(self, inner: MemoryBlobStore) -> None:
        super().__init__(inner)
        self.release, self.listing = threading.Event(), threading.Event()
        self.armed = False

    def list(self, prefix: str) -> list[str]:
        if self.armed and "/timestamped/" in prefix:
            self.listing.set()
            self.release.wait(30)
        return super().list(prefix)


def test_a_base_retired_while_the_head_start_downloads_it_never_lands_in_the_cache(
    tmp_path: Path,
) -> None:
    """Off the lock and without an in-flight marker, the head start can read a version that
    retention is deleting (the pointer moved on meanwhile): a copy missing files must not count
    as cached."""
    blobs = StuckListing(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    store = kit.store(DB)
    pointer = store.read_pointer()
    assert pointer is not None
    prefix = store.version_prefix(pointer.version)
    data = [k for k in blobs.list(prefix) if not k.endswith(("/", "chroma.sqlite3", "_hash"))]
    assert data  # what retention has deleted when the listing is answered
    blobs.armed = True
    with BasePrefetch(kit, DB) as head:
        assert blobs.listing.wait(5)  # its manifest read: complete; now deleted half-way
        store.log.set_state(pointer.version, EntryState.RETIRED)
        blobs.delete(data)
        blobs.release.set()
        assert head.wait() is None
    assert kit.cache(DB).cached_versions() == []
    assert [c.name for c in kit.cache(DB).directory.iterdir()] == []  # no staging left either


@pytest.mark.parametrize("meanwhile", ["deleted", "withdrawn", "untouched"])
def test_the_plan_is_the_same_whether_or_not_our_pending_object_is_read_back(
    meanwhile: str,
) -> None:
    """Item 3: between the enqueue and the plan, another builder published our batch and forgot
    its pending object, or (hypothetically) it was withdrawn: plan_group never looks at our own
    entry of the listing, so not reading it back changes nothing."""
    blobs = MemoryBlobStore()
    queue = PendingQueue(blobs, DB)
    other = queue.enqueue(_req("other"), "d-other")
    ours = queue.enqueue(_req("ours"), "d-ours")
    queue.enqueue(_req("later"), "d-later")  # ours is not the highest: it may be forgotten
    if meanwhile == "deleted":
        blobs.delete([ours.key])
    elif meanwhile == "withdrawn":
        queue.withdraw(ours)
    claims = {other.seq: Claims.UNPUBLISHED, ours.seq + 1: Claims.UNPUBLISHED}
    read_back = plan_group(*queue.listing(), ours, claims)
    known = plan_group(*queue.listing(known=ours), ours, claims)
    assert known == read_back
    assert [b.batch_id for b in known.group] == ["other", "ours", "later"]


def _req(batch_id: str) -> FinalMergeRequest:
    return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=(f"i/{batch_id}/",))


def test_another_execution_pruning_the_shared_cache_spares_the_head_start(tmp_path: Path) -> None:
    """Two executions in one process (or on one EFS mount) share the cache: the other's prune
    runs while our head start downloads X, then after; X stays until our run ends."""
    inner = MemoryBlobStore()
    ours_blobs = StuckListing(inner)
    ours, theirs = _kit(tmp_path, ours_blobs), _kit(tmp_path, inner)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    x = seed_snapshot(inner, ours.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path / "x")
    ours_blobs.armed = True
    cache = theirs.cache(DB)
    with BasePrefetch(ours, DB) as head:
        assert ours_blobs.listing.wait(5)  # X is being downloaded into a staging directory
        y = seed_snapshot(inner, ours.engine, DB, synth.records(9, 5, DIM), workdir=tmp_path / "y")
        cache.working_copy(y.version, tmp_path / "their-copy")  # prunes all but Y
        ours_blobs.release.set()
        assert head.wait() == x.version
        assert cache.path(x.version).is_dir()
        cache.prune(keep={y.version})
        assert sorted(cache.cached_versions()) == sorted([x.version, y.version])
    cache.prune(keep={y.version})
    assert cache.cached_versions() == [y.version]
    assert [c.name for c in cache.directory.iterdir()] == [y.version]  # no pin, no staging
