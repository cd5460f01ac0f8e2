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
