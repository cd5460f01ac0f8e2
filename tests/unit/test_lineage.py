"""Lineage marks, retention's protection of them, the bounded walk, and the LostPublishes metric."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from rollout.metric_names import MetricName, Unit
from rollout.metrics import MergeMetrics
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.domain import Database, FinalMergeResult, MergePath, VersionId
from snapmerge.lineage import LineageChecker, walk_chain
from snapmerge.lineage_marks import Publish, mark_pending, pending_publishes
from snapmerge.manifest import VersionManifest
from snapmerge.snapshots import SnapshotStore

DB = Database.WORDS


def v(i: int) -> VersionId:
    return VersionId(f"2024010{i}_000000_000000_{i:032x}")


def data(store: SnapshotStore, version: VersionId, base: VersionId | None, height: int) -> None:
    """A complete version of ours (a log entry and one file)."""
    store.blobs.put(store.version_prefix(version) + "chroma.sqlite3", b"x")
    entry = VersionManifest(version, base, f"b{height}", 1, 8, "two_phase", (), "", height=height)
    store.blobs.put(f"{DB.value}/snapshot/manifests/{version}.json", entry.to_json().encode())


def test_retention_keeps_an_unconfirmed_publish_and_its_base() -> None:
    store = SnapshotStore(MemoryBlobStore(), DB)
    for i in range(1, 8):
        data(store, v(i), v(i - 1) if i > 1 else None, i)
    store.blobs.put(store.pointer_key, v(7).encode())
    mark_pending(store.blobs, DB, Publish(v(2), v(1), "b2"))
    mark_pending(store.blobs, DB, Publish(v(2), v(1), "again"))  # idempotent: the first stays
    assert [p.batch_id for p in pending_publishes(store.blobs, DB)] == ["b2"]

    deleted = store.apply_retention(keep=2)

    assert deleted == [v(3), v(4), v(5)]
    assert store.list_versions() == [v(1), v(2), v(6), v(7)]


def test_retention_negative_control_without_a_mark_the_same_versions_go() -> None:
    store = SnapshotStore(MemoryBlobStore(), DB)
    for i in range(1, 8):
        data(store, v(i), v(i - 1) if i > 1 else None, i)
    store.blobs.put(store.pointer_key, v(7).encode())
    assert store.apply_retention(keep=2) == [v(1), v(2), v(3), v(4), v(5)]


def test_walk_stops_at_an_original_version_and_at_its_floor() -> None:
    store = SnapshotStore(MemoryBlobStore(), DB)
    data(store, v(1), None, 1)
    original = VersionId("20240102_000000")  # no log entry: the original writer's
    data(store, v(3), original, 1)
    data(store, v(4), v(3), 2)
    chain = walk_chain(store.log, v(4))
    assert (chain.members, chain.stopped_at, chain.complete) == ({v(4), v(3)}, original, False)
    bounded = walk_chain(store.log, v(4), floor=2)
    assert (bounded.members, bounded.complete) == ({v(4)}, False)
    whole = walk_chain(store.log, v(1))
    assert (whole.members, whole.stopped_at, whole.complete) == ({v(1)}, None, True)


def test_lost_publishes_is_an_emf_count_under_the_two_dimensions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SNAPMERGE_EMF_FILE", raising=False)
    metrics = MergeMetrics(stdout=False)
    result = FinalMergeResult(
        path=MergePath.LEGACY,
        batch_id="b",
        database=DB,
        version=v(2),
        base_version=v(1),
        snapshot_key="k",
        total_embeddings=1,
        processing_time_seconds=0.1,
        chunk_count=1,
        delta_count=1,
        records_merged=1,
        lock_wait_ms=0.0,
        lock_hold_ms=1.0,
    )
    metrics.record_result(replace(result, lost_publishes=2))
    [blob] = metrics.flush()
    names: dict[str, Any] = {
        m["Name"]: m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]
    }
    assert names[MetricName.LOST_PUBLISHES.value] == Unit.COUNT.value
    assert blob["LostPublishes"] == [2.0]
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["MergePath", "Collection"]]


@pytest.mark.parametrize("pending", [True, False])
def test_an_unconfirmed_publish_whose_data_is_gone_cannot_be_decided(
    pending: bool, tmp_path: Path
) -> None:
    """The chain stops at an original version and V's data is gone: reported only while V is
    unconfirmed (a confirmed publish is not asked again)."""
    store = SnapshotStore(MemoryBlobStore(), DB)
    data(store, v(1), None, 1)
    data(store, v(2), v(1), 2)
    original = VersionId("20240103_000000")
    store.blobs.put(store.version_prefix(original) + "chroma.sqlite3", b"x")
    store.blobs.put(store.pointer_key, original.encode())
    store.delete_version(v(2))  # its data gone, its entry retired
    if pending:
        mark_pending(store.blobs, DB, Publish(v(2), v(1), "b2"))
    checker = LineageChecker(store, MemoryIndex(), tmp_path)

    report = checker.check([Publish(v(2), v(1), "b2")], pending={v(2)} if pending else set())

    assert report.lost == ()
    assert [version for version, _ in report.unverifiable] == ([v(2)] if pending else [])
