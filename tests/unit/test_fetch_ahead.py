"""Two-phase's off-lock head start (issue 12, fourth round): the intermediates download several
at once, and the base downloads into the local cache meanwhile (``snapmerge/prefetch.py``).

Legacy keeps the original's order under its lock: one intermediate after another, then the base.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.recording import CountingBlobStore
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys
from snapmerge.errors import MergeInputError
from snapmerge.merging import MergeKit
from snapmerge.ports import Blob
from snapmerge.prefetch import BasePrefetch
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
DIM = 8


class Overlap(CountingBlobStore):
    """Counts how many requests are in flight at once (each GET/LIST sleeps a little)."""

    def __init__(self, inner: MemoryBlobStore, delay: float = 0.01) -> None:
        super().__init__(inner)
        self.delay, self.now, self.peak = delay, 0, 0
        self._guard = threading.Lock()
        self.listed: list[str] = []

    def _in(self) -> None:
        with self._guard:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def _out(self) -> None:
        with self._guard:
            self.now -= 1

    def list(self, prefix: str) -> list[str]:
        self._in()
        try:
            time.sleep(self.delay)
            self.listed.append(prefix)
            return super().list(prefix)
        finally:
            self._out()

    def get(self, key: str) -> Blob | None:
        self._in()
        try:
            time.sleep(self.delay)
            return super().get(key)
        finally:
            self._out()


def _kit(tmp_path: Path, blobs: MemoryBlobStore | CountingBlobStore) -> MergeKit:
    settings = Settings(
        bucket="memory",
        table="memory",
        chroma_root=tmp_path / "root",
        lock_wait_timeout=timedelta(seconds=5),
        group_beat=timedelta(hours=1),
    )
    return MergeKit(blobs, MemoryIndex(), MemoryLeaseTable(), settings)


def _request(kit: MergeKit, tmp_path: Path, batch_id: str, chunks: int) -> FinalMergeRequest:
    keys = []
    for i in range(chunks):
        local = tmp_path / f"{batch_id}-{i}"
        rows = synth.records(100 + i, 3, DIM, id_prefix=f"{batch_id}-", start=10 * i)
        synth.write_index(kit.engine, local, rows, f"receipt_{DB.value}")
        upload_directory(kit.blobs, local, Keys.intermediate_prefix(batch_id, i))
        keys.append(Keys.intermediate_prefix(batch_id, i))
    return FinalMergeRequest(batch_id=batch_id, database=DB, intermediate_keys=tuple(keys))


def test_parallel_fetch_keeps_chunk_order_and_overlaps(tmp_path: Path) -> None:
    blobs = Overlap(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    request = _request(kit, tmp_path, "b1", 4)
    blobs.peak = 0

    serial = kit.fetch_sources(request, tmp_path / "serial")
    assert blobs.peak == 1  # legacy's default: one at a time
    blobs.peak = 0
    parallel = kit.fetch_sources(request, tmp_path / "parallel", workers=4)

    assert blobs.peak >= 2
    assert (
        [p.name for p in parallel] == [p.name for p in serial] == [f"src-{i:04d}" for i in range(4)]
    )
    for a, b in zip(serial, parallel, strict=True):  # the same bytes in the same slot
        names = sorted(f.relative_to(a) for f in a.rglob("*") if f.is_file())
        assert names == sorted(f.relative_to(b) for f in b.rglob("*") if f.is_file())
        assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_parallel_fetch_raises_the_first_failure_in_chunk_order_after_every_download(
    tmp_path: Path,
) -> None:
    blobs = Overlap(MemoryBlobStore(), delay=0.02)
    kit = _kit(tmp_path, blobs)
    request = _request(kit, tmp_path, "b1", 4)
    keys = list(request.intermediate_keys)
    keys[1] = "intermediate/missing-1/chunk-0/"
    keys[3] = "intermediate/missing-3/chunk-0/"
    broken = FinalMergeRequest(batch_id="b1", database=DB, intermediate_keys=tuple(keys))

    with pytest.raises(MergeInputError, match="missing-1"):
        kit.fetch_sources(broken, tmp_path / "dest", workers=4)

    assert blobs.now == 0  # nothing still in flight when the error reached the caller
    assert any("missing-3" in p for p in blobs.listed)  # the later chunk was tried too


def test_the_base_is_in_the_cache_before_the_build_asks(tmp_path: Path) -> None:
    blobs = CountingBlobStore(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    pointer = kit.store(DB).read_pointer()
    assert pointer is not None

    with BasePrefetch(kit, DB) as head:
        assert head.wait() == pointer.version
        assert kit.cache(DB).path(pointer.version).is_dir()
        pins = list(kit.cache(DB).directory.glob(".pin-*"))
        assert len(pins) == 1  # kept from a prune until the run ends
        blobs.calls.clear()
        copy = kit.cache(DB).working_copy(pointer.version, tmp_path / "copy")
        assert blobs.calls["GET", "timestamped"] == 0  # a local copy: nothing downloaded again
        assert any(copy.iterdir())
    assert list(kit.cache(DB).directory.glob(".pin-*")) == []


def test_no_pointer_or_a_failing_store_only_means_no_head_start(tmp_path: Path) -> None:
    kit = _kit(tmp_path, MemoryBlobStore())
    with BasePrefetch(kit, DB) as head:  # no snapshot at all
        assert head.wait() is None

    class Broken(MemoryBlobStore):
        def get(self, key: str) -> Blob | None:
            raise OSError("the store is down")

    kit = _kit(tmp_path / "b", Broken())
    with BasePrefetch(kit, DB) as head:
        assert head.wait() is None


class Gate(CountingBlobStore):
    """Holds every read of an intermediate until the base's files are being read: a run that
    fetches the intermediates before it starts on the base waits out ``timeout`` here."""

    def __init__(self, inner: MemoryBlobStore, timeout: float = 3.0) -> None:
        super().__init__(inner)
        self.base_seen = threading.Event()
        self.timeout, self.waited_out = timeout, 0

    def _gate(self, key: str) -> None:
        if "/timestamped/" in key:
            self.base_seen.set()
        elif key.startswith("intermediate/") and not self.base_seen.wait(self.timeout):
            self.waited_out += 1

    def get(self, key: str) -> Blob | None:
        self._gate(key)
        return super().get(key)

    def download_file(self, key: str, path: Path, **kwargs: Any) -> None:
        self._gate(key)
        super().download_file(key, path, **kwargs)


def test_a_two_phase_run_downloads_the_base_while_it_fetches_the_intermediates(
    tmp_path: Path,
) -> None:
    blobs = Gate(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    request = _request(kit, tmp_path, "b1", 3)
    blobs.base_seen.clear()
    blobs.calls.clear()

    result = _two_phase(kit).run(request)

    assert result.published_by == "b1" and result.records_merged == 9
    assert blobs.waited_out == 0  # the base was on its way before any intermediate was read
    # and read once (by the head start), not again by the build
    seeded = kit.store(DB).manifest(result.base_version)  # type: ignore[arg-type]
    assert seeded is not None
    assert blobs.calls["GET", "timestamped"] == len(seeded.files)
    got = {r.id for page in kit.engine.read_records(_download(kit, tmp_path)) for r in page}
    assert {f"b1-{n:08d}" for n in (0, 1, 2, 10, 11, 12, 20, 21, 22)} <= got


def test_the_gate_catches_a_run_that_fetches_before_the_base(tmp_path: Path) -> None:
    """Negative control: legacy reads the intermediates first, so the gate waits it out."""
    from legacy.final_merge import LegacyFinalMerge

    blobs = Gate(MemoryBlobStore(), timeout=0.05)
    kit = _kit(tmp_path, blobs)
    seed_snapshot(blobs, kit.engine, DB, synth.records(1, 5, DIM), workdir=tmp_path)
    request = _request(kit, tmp_path, "b1", 2)
    blobs.base_seen.clear()

    LegacyFinalMerge(kit).run(request)

    assert blobs.waited_out > 0


def _two_phase(kit: MergeKit) -> TwoPhaseFinalMerge:
    return TwoPhaseFinalMerge(
        kit, fallback=merge_under_lease, rng=random.Random(1), sleep=lambda _s: None
    )


def _download(kit: MergeKit, tmp_path: Path) -> Path:
    pointer = kit.store(DB).read_pointer()
    assert pointer is not None
    dest = tmp_path / "published"
    kit.store(DB).download_version(pointer.version, dest)
    return dest


def test_fetch_workers_must_be_positive(tmp_path: Path) -> None:
    kit = _kit(tmp_path, MemoryBlobStore())
    with pytest.raises(ValueError, match="fetch_workers"):
        TwoPhaseFinalMerge(kit, fallback=merge_under_lease, fetch_workers=0)


def test_a_builder_fetches_another_batchs_intermediates_several_at_once(tmp_path: Path) -> None:
    from snapmerge.exactly_once import inputs_digest
    from snapmerge.group_build import GroupBuild
    from snapmerge.group_commit import PendingQueue

    blobs = Overlap(MemoryBlobStore())
    kit = _kit(tmp_path, blobs)
    other = _request(kit, tmp_path, "b2", 3)
    digest = inputs_digest(DB, kit.fetch_sources(other, tmp_path / "theirs"))
    pending = PendingQueue(blobs, DB).enqueue(other, digest)
    blobs.peak = 0

    paths = GroupBuild(_two_phase(kit))._sources(DB, pending, tmp_path / "work")

    assert paths is not None and [p.name for p in paths] == ["src-0000", "src-0001", "src-0002"]
    assert blobs.peak >= 2  # was one after another
