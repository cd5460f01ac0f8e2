"""Attacks on MergeKit's split into mixins (issue 14): no stub of a mixin is ever what a kit
runs, and no subclass of MergeKit lost an override or the signature its callers use."""

from __future__ import annotations

import inspect
import random
from datetime import timedelta
from pathlib import Path

import pytest

from bench.merge_timing import TimedKit
from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.after_publish import AfterPublish
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys
from snapmerge.exactly_once import ExactlyOnceSteps
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.concurrency.runner import UnverifiedKit

DB = Database.WORDS


def _stubs(mixin: type) -> list[str]:
    return [
        name
        for name, fn in vars(mixin).items()
        if inspect.isfunction(fn) and "raise NotImplementedError" in inspect.getsource(fn)
    ]


@pytest.mark.parametrize("kit", [MergeKit, TimedKit, UnverifiedKit])
@pytest.mark.parametrize("mixin", [AfterPublish, ExactlyOnceSteps])
def test_no_mixin_stub_is_what_a_kit_runs(kit: type, mixin: type) -> None:
    stubs = _stubs(mixin)
    assert stubs  # the mixin declares what it needs from the kit
    for name in stubs:
        owner = next(k for k in kit.__mro__ if name in vars(k))
        assert owner not in (AfterPublish, ExactlyOnceSteps), f"{kit.__name__}.{name}"


@pytest.mark.parametrize("kit", [TimedKit, UnverifiedKit])
def test_subclass_overrides_keep_the_signatures_of_what_they_override(kit: type) -> None:
    for name, fn in vars(kit).items():
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        base = next(k for k in kit.__mro__[1:] if name in vars(k))
        ours = inspect.signature(fn).parameters
        theirs = inspect.signature(vars(base)[name]).parameters
        assert list(ours) == list(theirs), f"{kit.__name__}.{name}: {list(ours)} vs {list(theirs)}"


def _kit(cls: type[MergeKit], tmp_path: Path) -> MergeKit:
    settings = Settings(
        bucket="memory",
        table="memory",
        chroma_root=tmp_path / "root",
        lock_wait_timeout=timedelta(seconds=5),
    )
    kit = cls(MemoryBlobStore(), MemoryIndex(), MemoryLeaseTable(), settings)
    if isinstance(kit, TimedKit):
        kit.steps = {}
    return kit


def _request(kit: MergeKit, tmp_path: Path, batch_id: str) -> FinalMergeRequest:
    local = tmp_path / batch_id
    synth.write_index(kit.engine, local, synth.records(9, 3, 8, start=100), "receipt_words")  # type: ignore[attr-defined]
    upload_directory(kit.blobs, local, Keys.intermediate_prefix(batch_id, 0))
    return FinalMergeRequest(batch_id, DB, (Keys.intermediate_prefix(batch_id, 0),))


@pytest.mark.parametrize("path", ["legacy", "two_phase"])
def test_the_timed_kit_runs_both_paths_and_reports_lost_publishes(
    tmp_path: Path, path: str
) -> None:
    kit = _kit(TimedKit, tmp_path)
    seed_snapshot(kit.blobs, kit.engine, DB, synth.records(1, 5, 8), workdir=tmp_path)  # type: ignore[arg-type]
    request = _request(kit, tmp_path, "b1")
    merge = (
        LegacyFinalMerge(kit)
        if path == "legacy"
        else TwoPhaseFinalMerge(kit, fallback=merge_under_lease, rng=random.Random(1))
    )
    result = merge.run(request)
    assert result.lost_publishes == 0  # finish's count, not None
    assert {"build", "upload", "finish"} <= set(kit.steps)  # type: ignore[attr-defined]
