"""A warm Lambda's disk stays bounded (issue 10, case 8).

Before: the snapshot cache kept every base it ever merged onto (12 merges -> 12 cached
versions) and killed runs left their ``work/`` directories for ever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from handlers import bootstrap
from handlers.local import run_execution
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.cache import SnapshotCache, sweep_cache
from snapmerge.config import Settings
from snapmerge.domain import Database, VersionId
from snapmerge.scratch import host_id, owned_workdir, owner_tag, sweep_dead
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore

DIM = 8
DB = Database.WORDS
LEASE = timedelta(minutes=16)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[bootstrap.App]:
    settings = Settings(bucket="mem", table="mem", chroma_root=tmp_path / "chroma")
    instance = bootstrap.build(
        settings, blobs=MemoryBlobStore(), engine=MemoryIndex(), leases=MemoryLeaseTable()
    )
    bootstrap.install(instance)
    yield instance
    bootstrap.install(None)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("path", ["legacy", "two_phase"])
def test_twelve_merges_leave_at_most_two_cached_versions(
    app: bootstrap.App, tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app.flags, "decide_path", _pinned_to(path, app.flags.decide_path))
    seed_snapshot(app.blobs, app.engine, DB, synth.records(1, 10, DIM), workdir=tmp_path)
    for n in range(12):
        records = synth.records(100 + n, 3, DIM, id_prefix="m", start=n * 3)
        key = upload_delta(
            app.blobs, app.engine, DB, f"d{n}", records, workdir=tmp_path, fmt=DeltaFormat.TARBALL
        )
        out = run_execution({"batch_id": f"b{n}", "database": "words", "delta_results": [key]})
        assert out["final"]["merge_path"] == path
    cached = [p for p in app.kit.cache(DB).directory.iterdir() if not p.name.startswith(".")]
    assert len(cached) <= 2, [p.name for p in cached]
    assert SnapshotStore(app.blobs, DB).read_pointer() is not None
    work = app.settings.chroma_root / "work"
    assert not work.exists() or list(work.iterdir()) == []  # every step cleaned up after itself


def _pinned_to(path: str, decide: object) -> object:
    from dataclasses import replace

    from snapmerge.domain import MergePath

    def pinned(**kwargs: str) -> object:
        decision = decide(**kwargs)  # type: ignore[operator]
        return replace(decision, path=MergePath(path))

    return pinned


def _cache_with(tmp_path: Path, versions: list[str]) -> SnapshotCache:
    blobs = MemoryBlobStore()
    store = SnapshotStore(blobs, DB)
    cache = SnapshotCache(tmp_path / "cache", store, stale_after=LEASE)
    for v in versions:
        (cache.directory / v).mkdir(parents=True)
        (cache.directory / v / "chroma.sqlite3").write_bytes(b"db")
    return cache


def test_a_pinned_version_survives_a_prune_and_a_dead_pin_does_not(tmp_path: Path) -> None:
    a, b, c = "20260101_000000", "20260102_000000", "20260103_000000"
    cache = _cache_with(tmp_path, [a, b, c])
    dead = cache.directory / f".pin-{b}-{host_id()}.{_dead_pid()}-0001"
    dead.touch()
    with cache.pinned(VersionId(a)):
        cache.prune({VersionId(c)})
        assert cache.cached_versions() == [a, c]  # a is pinned by us; b's pin owner is gone
    assert not dead.exists()
    cache.prune({VersionId(c)})
    assert cache.cached_versions() == [c]


def test_another_hosts_pin_counts_until_it_is_older_than_the_lease(tmp_path: Path) -> None:
    a, b = "20260101_000000", "20260102_000000"
    cache = _cache_with(tmp_path, [a, b])
    pin = cache.directory / f".pin-{a}-ffffffffffff.1-0001"  # a Lambda sharing the mount
    pin.touch()
    cache.prune({VersionId(b)})
    assert cache.cached_versions() == [a, b]
    _age(pin, LEASE.total_seconds() + 60)
    cache.prune({VersionId(b)})
    assert cache.cached_versions() == [b]


def test_working_copy_prunes_everything_but_its_version(tmp_path: Path) -> None:
    blobs = MemoryBlobStore()
    store = SnapshotStore(blobs, DB)
    cache = SnapshotCache(tmp_path / "cache", store)
    old = ["20260101_000000", "20260102_000000"]
    for v in old:
        (cache.directory / v).mkdir(parents=True)
    current = VersionId("20260103_000000")
    (cache.directory / current).mkdir()
    (cache.directory / current / "chroma.sqlite3").write_bytes(b"db")
    cache.working_copy(current, tmp_path / "w")
    assert cache.cached_versions() == [current]
    assert (tmp_path / "w" / "chroma.sqlite3").read_bytes() == b"db"


def test_start_up_sweeps_dead_work_dirs_and_keeps_live_ones(tmp_path: Path) -> None:
    work = tmp_path / "chroma" / "work"
    work.mkdir(parents=True)
    dead_owner = work / f"step-{host_id()}.{_dead_pid()}-abc"
    live_young = work / f"step-{owner_tag()}-def"
    untagged_young = work / "merge-xyz"  # another component's name: judged by age
    untagged_old = work / "merge-old"
    other_host_young = work / "step-ffffffffffff.1-ghi"
    for d in (dead_owner, live_young, untagged_young, untagged_old, other_host_young):
        d.mkdir()
        (d / "f").write_bytes(b"x")
    _age(untagged_old, LEASE.total_seconds() + 60)
    cache_dir = tmp_path / "chroma" / "cache" / "words"
    stale = cache_dir / f".tmp-20260101_000000-{host_id()}.{_dead_pid()}-q"
    stale.mkdir(parents=True)
    kept_version = cache_dir / "20260101_000000"
    kept_version.mkdir()

    settings = Settings(bucket="b", table="t", chroma_root=tmp_path / "chroma")
    removed = bootstrap.sweep_scratch(settings)

    assert sorted(p.name for p in work.iterdir()) == sorted(
        [live_young.name, untagged_young.name, other_host_young.name]
    )
    assert dead_owner.name in removed and untagged_old.name in removed
    assert not stale.exists() and kept_version.exists()


def test_owned_workdir_is_tagged_and_removed(tmp_path: Path) -> None:
    with owned_workdir(tmp_path, "step") as work:
        assert work.name.startswith(f"step-{owner_tag()}-")
        assert sweep_dead(tmp_path, LEASE) == []  # ours, alive: kept
    assert list(tmp_path.iterdir()) == []
    assert sweep_cache(tmp_path / "none", LEASE) == []
