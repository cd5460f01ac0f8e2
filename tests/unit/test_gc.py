"""``snapmerge gc``: what crashed merges leave, listed by default, deleted only with --apply."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapmerge import gc
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.change_sets import ChangeSets
from snapmerge.cli import main
from snapmerge.domain import Database, Keys, VersionId
from snapmerge.errors import InvalidEventError
from snapmerge.group_commit import PENDING, PUBLISHED, WITHDRAWN, PendingBatch, PendingQueue
from snapmerge.manifest import EntryState, VersionManifest
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


# -- the commit log's and group commit's leftovers -------------------------------------------------
LATER = NOW + timedelta(days=2)  # when gc runs: everything written at NOW is past the grace


def entry_at(version: VersionId, base: VersionId | None, when: datetime) -> VersionManifest:
    return VersionManifest(
        version, base, f"batch-{version[-1]}", 1, 8, "two_phase", (), when.isoformat()
    )


def upload(store: SnapshotStore, tmp: Path, version: VersionId, base: VersionId | None) -> None:
    src = tmp / version
    src.mkdir()
    (src / "chroma.sqlite3").write_bytes(version.encode())
    store.upload_version(version, src, entry_at(version, base, NOW))


def claim(store: SnapshotStore, batch: str, version: VersionId, when: datetime) -> str:
    key = Keys.claim(DB, batch, version)
    body = {"batch_id": batch, "version": version, "inputs_digest": f"in-{batch}"}
    store.blobs.put(key, json.dumps({**body, "created_at": when.isoformat()}).encode())
    return key


def change_set(store: SnapshotStore, version: VersionId) -> None:
    changes = ChangeSets(store.blobs, DB)
    store.blobs.put(changes.data_prefix(version) + "0000/chroma.sqlite3", b"x")
    store.blobs.put(changes.marker_key(version), json.dumps({"version": version}).encode())


def pending(store: SnapshotStore, seq: int, batch: str, state: str = PENDING) -> str:
    queue = PendingQueue(store.blobs, DB)
    item = PendingBatch(seq, batch, (f"intermediate/{batch}/chunk-0/",), f"in-{batch}", state=state)
    store.blobs.put(queue.key(seq), item.body())
    return queue.key(seq)


def test_claims_pending_batches_change_sets_and_empty_entries(
    store: SnapshotStore, tmp_path: Path
) -> None:
    seed, published = version_at(NOW, "a"), version_at(NOW, "b")
    upload(store, tmp_path, seed, None)
    store.write_pointer(seed, None)
    upload(store, tmp_path, published, seed)
    store.write_pointer(published, store.read_pointer())
    dead_run = version_at(NOW, "c")  # uploaded on the seed, its run died before its CAS
    upload(store, tmp_path, dead_run, seed)
    in_flight = version_at(NOW, "d")  # uploaded, its CAS still to come
    upload(store, tmp_path, in_flight, published)
    store.mark_inflight(in_flight, in_flight, timedelta(days=5))
    discarded = version_at(NOW, "e")
    upload(store, tmp_path, discarded, seed)
    store.delete_version(discarded, EntryState.DISCARDED)
    empty_old, empty_young = version_at(NOW, "f"), version_at(LATER, "g")
    store.log.begin(entry_at(empty_old, published, NOW))
    store.log.begin(entry_at(empty_young, published, LATER))

    kept = [
        claim(store, "b", published, NOW),  # on the chain: a retry replays from it
        claim(store, "d", in_flight, NOW),  # protected by its in-flight marker
        claim(store, "late", dead_run, LATER),  # young
    ]
    gone = [claim(store, "c", dead_run, NOW), claim(store, "e", discarded, NOW)]
    for version in (published, dead_run, in_flight, discarded):
        change_set(store, version)
    done = pending(store, 1, "b")  # published (claim on the chain)
    withdrawn = pending(store, 2, "bad", WITHDRAWN)
    fresh = pending(store, 3, "fresh")  # nobody published it yet: a builder will
    orphaned = pending(store, 4, "c")  # its claim is off the chain: not published
    highest = pending(store, 5, "b")  # published, but the highest number is never deleted

    found = gc.plan(store, now=LATER)

    assert found.orphans == ()
    assert found.empty_entries == (empty_old,)
    assert sorted(found.orphan_claims) == sorted(gone)
    assert sorted(found.pending) == sorted([done, withdrawn])
    assert sorted(found.change_sets) == sorted([dead_run, discarded])
    before = set(store.blobs.list(""))  # type: ignore[attr-defined]
    gc.apply(store, found)
    after = set(store.blobs.list(""))  # type: ignore[attr-defined]
    assert set([*kept, fresh, orphaned, highest]) <= after
    assert not set([*gone, done, withdrawn]) & after
    assert store.log.entry(empty_old) is None and store.log.entry(empty_young) is not None
    changes = ChangeSets(store.blobs, DB)
    assert changes.versions() == sorted([published, in_flight])
    removed = before - after
    assert all(
        k in [*gone, done, withdrawn, Keys.manifest(DB, empty_old)] or k.startswith(changes.prefix)
        for k in removed
    )


def test_without_a_pointer_no_claim_pending_batch_or_change_set_is_collected(
    store: SnapshotStore, tmp_path: Path
) -> None:
    seed, dead_run = version_at(NOW, "a"), version_at(NOW, "c")
    upload(store, tmp_path, seed, None)
    upload(store, tmp_path, dead_run, seed)
    claim(store, "c", dead_run, NOW)
    change_set(store, dead_run)
    pending(store, 1, "c", WITHDRAWN)
    pending(store, 2, "x")

    found = gc.plan(store, now=LATER)

    assert (found.orphan_claims, found.pending, found.change_sets) == ((), (), ())


def test_an_empty_entry_an_upload_moves_on_meanwhile_is_kept(store: SnapshotStore) -> None:
    version = version_at(NOW, "a")
    etag = store.log.begin(entry_at(version, None, NOW))
    found = gc.plan(store, now=LATER)
    assert found.empty_entries == (version,)
    store.log.advance(entry_at(version, None, NOW), etag, EntryState.COMPLETE)  # it went on

    gc.apply(store, found)

    entry = store.log.entry(version)
    assert entry is not None and entry.state == EntryState.COMPLETE


def test_a_grace_below_the_minimum_is_refused_before_anything_is_read(
    store: SnapshotStore, tmp_path: Path
) -> None:
    """atk10-A2: ``--grace-hours 0`` made gc list the claim of a complete upload whose run had
    not swapped yet (its in-flight marker outlived by a slow run): deleted, the version then
    landed without a claim, and the batch's retry after a crash before its receipt applied it
    again. A grace under MIN_GRACE is now refused."""
    base = version_at(NOW, "a")
    complete(store, tmp_path, base)
    store.write_pointer(base, None)
    live = version_at(NOW, "b")  # an upload of a run still on its way to the swap
    complete(store, tmp_path, live)
    store.log.write_claim("b", live, "d")
    with pytest.raises(InvalidEventError, match="below the minimum"):
        gc.plan(store, grace=timedelta(0), now=NOW + timedelta(minutes=30))
    found = gc.plan(store, grace=gc.MIN_GRACE, now=NOW + timedelta(minutes=30))
    assert found.orphan_claims == ()  # at the minimum: the young claim is kept
    # control: past the grace, the same claim off the chain is listed (the checker can fail)
    later = gc.plan(store, grace=gc.MIN_GRACE, now=NOW + timedelta(days=2))
    assert later.orphan_claims == (Keys.claim(DB, "b", live),)


def test_a_pending_batch_its_publisher_marked_is_collected_unless_it_is_the_highest(
    store: SnapshotStore, tmp_path: Path
) -> None:
    seed = version_at(NOW, "a")
    upload(store, tmp_path, seed, None)
    store.write_pointer(seed, None)
    passed = pending(store, 1, "x", PUBLISHED)  # marked as the highest, then passed by seq 2
    highest = pending(store, 2, "y", PUBLISHED)

    found = gc.plan(store, now=LATER)

    assert list(found.pending) == [passed]
    gc.apply(store, found)
    after = set(store.blobs.list(""))  # type: ignore[attr-defined]
    assert highest in after and passed not in after
