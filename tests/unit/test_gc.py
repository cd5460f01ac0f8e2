"""``snapmerge gc``: orphans and expired markers listed by default, deleted only with --apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapmerge import gc
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.cli import main
from snapmerge.commit_log import EntryState, VersionManifest
from snapmerge.domain import Database, Keys, VersionId
from snapmerge.snapshots import SnapshotStore
from tests.conftest import AwsEnv

DB = Database.WORDS
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def version_at(when: datetime, tag: str) -> VersionId:
    return VersionId(f"{when:%Y%m%d_%H%M%S}_{when:%f}_{tag * 32}")


def complete(store: SnapshotStore, tmp_path: Path, version: VersionId) -> None:
    src = tmp_path / version
    src.mkdir()
    (src / "chroma.sqlite3").write_bytes(b"db")
    manifest = VersionManifest(version, None, "b", 1, 8, "legacy", (), NOW.isoformat())
    store.upload_version(version, src, manifest)


def half_upload(store: SnapshotStore, version: VersionId, started: datetime | None) -> None:
    """A crashed upload: files in the prefix, the log entry still 'uploading' (or none at all)."""
    if started is not None:
        entry = VersionManifest(version, None, "b", 1, 8, "legacy", (), started.isoformat())
        store.log.begin(entry)
    store.blobs.put(store.version_prefix(version) + "chroma.sqlite3", b"partial")


@pytest.fixture
def store() -> SnapshotStore:
    return SnapshotStore(MemoryBlobStore(), DB)


def test_plan_lists_only_old_orphans_and_expired_markers(
    store: SnapshotStore, tmp_path: Path
) -> None:
    old, young = NOW - timedelta(days=2), NOW - timedelta(minutes=5)
    orphan_logged = version_at(young, "a")  # its id says young, its log entry says old
    half_upload(store, orphan_logged, started=old)
    orphan_unlogged = version_at(old, "b")
    half_upload(store, orphan_unlogged, started=None)
    in_progress = version_at(young, "c")
    half_upload(store, in_progress, started=young)
    protected = version_at(old, "d")
    half_upload(store, protected, started=old)
    store.mark_inflight(protected, "merge", timedelta(days=3))  # expires after NOW
    published = version_at(old, "e")
    complete(store, tmp_path, published)
    store.write_pointer(published, None)
    retained = version_at(old, "f")
    complete(store, tmp_path, retained)
    store.mark_inflight(VersionId("gone"), "dead-merge", timedelta(days=-3))

    found = gc.plan(store, grace=timedelta(hours=24), now=NOW)

    assert set(found.orphans) == {orphan_logged, orphan_unlogged}
    assert len(found.expired_markers) == 1 and "dead-merge" in found.expired_markers[0]


def test_dry_run_deletes_nothing_and_apply_deletes_what_it_listed(
    store: SnapshotStore, tmp_path: Path
) -> None:
    orphan = version_at(NOW - timedelta(days=2), "a")
    half_upload(store, orphan, started=NOW - timedelta(days=2))
    keep = version_at(NOW - timedelta(days=2), "b")
    complete(store, tmp_path, keep)
    before = store.blobs.list("")  # type: ignore[attr-defined]

    found = gc.plan(store, now=NOW)
    lines = found.describe(store, applied=False)
    assert lines == [f"would delete {store.version_prefix(orphan)} (orphan: no complete manifest)"]
    assert store.blobs.list("") == before  # planning reads only

    gc.apply(store, found)
    assert store.list_versions() == [keep]
    entry = store.log.entry(orphan)
    assert entry is not None and entry.state == EntryState.DISCARDED


def test_cli_gc_is_a_dry_run_by_default(aws: AwsEnv, capsys: pytest.CaptureFixture[str]) -> None:
    from snapmerge.adapters.s3_store import S3BlobStore

    store = SnapshotStore(S3BlobStore(aws.bucket), DB)
    orphan = version_at(datetime.now(UTC) - timedelta(days=3), "a")
    half_upload(store, orphan, started=None)
    prefix = store.version_prefix(orphan)

    assert main(["gc", "--database", "words"]) == 0
    out = capsys.readouterr().out
    assert f"would delete {prefix}" in out and "dry run: nothing deleted" in out
    assert store.blobs.list(prefix)

    assert main(["gc", "--database", "words", "--apply"]) == 0
    assert f"deleted {prefix}" in capsys.readouterr().out
    assert store.blobs.list(prefix) == []
    assert store.blobs.get(Keys.pointer(DB)) is None  # nothing else touched
