"""SnapshotStore and SnapshotCache on the in-memory blob store (fake Chroma directories)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.cache import SnapshotCache
from snapmerge.domain import Database, Keys, Pointer, VersionId, new_version_id
from snapmerge.errors import PointerConflictError, SnapshotError, StoreError
from snapmerge.manifest import EntryState
from snapmerge.snapshots import MANIFEST_NAME, SnapshotStore, VersionManifest, scan_files

DB = Database.WORDS


def fake_chroma(root: Path, tag: str = "x") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "chroma.sqlite3").write_bytes(f"sqlite-{tag}".encode() * 10)
    seg = root / "0a1b2c3d-segment"
    seg.mkdir(exist_ok=True)
    (seg / "data_level0.bin").write_bytes(b"\x01" * 300)
    (seg / "header.bin").write_bytes(b"\x02" * 40)
    return root


def manifest_for(
    version: VersionId, base: VersionId | None = None, *, created_at: str | None = None
) -> VersionManifest:
    return VersionManifest(
        version=version,
        base_version=base,
        batch_id=f"batch-{version}",
        record_count=3,
        dimension=1536,
        path="two_phase",
        files=(),
        created_at=datetime.now(UTC).isoformat() if created_at is None else created_at,
    )


@pytest.fixture
def blobs() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def store(blobs: MemoryBlobStore) -> SnapshotStore:
    return SnapshotStore(blobs, DB, workers=4)


def publish(
    store: SnapshotStore, tmp_path: Path, version: VersionId, *, created_at: str | None = None
) -> VersionId:
    store.upload_version(
        version,
        fake_chroma(tmp_path / f"src-{version}", version),
        manifest_for(version, created_at=created_at),
    )
    return version


def publish_chain(store: SnapshotStore, tmp_path: Path, ids: list[str]) -> list[VersionId]:
    """Each version built on the one before and swapped in: the published chain."""
    pointer = store.read_pointer()
    for name in ids:
        version = VersionId(name)
        base = pointer.version if pointer is not None else None
        store.upload_version(
            version, fake_chroma(tmp_path / f"src-{version}", version), manifest_for(version, base)
        )
        pointer = store.write_pointer(version, pointer)
    return [VersionId(name) for name in ids]


# -- pointer CAS ---------------------------------------------------------------------------------
def test_pointer_absent_then_first_publish_then_swap(store: SnapshotStore) -> None:
    assert store.read_pointer() is None
    first = store.write_pointer(VersionId("v1"), None)
    assert store.read_pointer() == first == Pointer(VersionId("v1"), first.etag)
    second = store.write_pointer(VersionId("v2"), first)
    assert store.read_pointer() == second


def test_pointer_body_whitespace_is_stripped(store: SnapshotStore, blobs: MemoryBlobStore) -> None:
    blobs.put(Keys.pointer(DB), b"  20240101_120000\n")
    pointer = store.read_pointer()
    assert pointer is not None and pointer.version == "20240101_120000"


def test_stale_pointer_write_is_refused_with_current(store: SnapshotStore) -> None:
    base = store.write_pointer(VersionId("v1"), None)
    store.write_pointer(VersionId("v2"), base)
    with pytest.raises(PointerConflictError) as info:
        store.write_pointer(VersionId("v3"), base)
    assert info.value.current == "v2"
    assert info.value.expected == base.etag
    pointer = store.read_pointer()
    assert pointer is not None and pointer.version == "v2"


def test_first_publish_loses_to_an_existing_pointer(store: SnapshotStore) -> None:
    store.write_pointer(VersionId("theirs"), None)
    with pytest.raises(PointerConflictError) as info:
        store.write_pointer(VersionId("ours"), None)
    assert (info.value.expected, info.value.current) == ("*", "theirs")


def test_lost_reply_of_our_own_write_counts_as_success(
    store: SnapshotStore, blobs: MemoryBlobStore
) -> None:
    base = store.write_pointer(VersionId("v1"), None)
    # The write lands, its reply is lost, the SDK retries and the retry sees a moved ETag.
    blobs.fail_next("put", PointerConflictError(Keys.pointer(DB), base.etag), after=True)
    result = store.write_pointer(VersionId("v2"), base)
    assert result.version == "v2"
    assert store.read_pointer() == result


def test_write_pointer_is_never_unconditional(store: SnapshotStore, blobs: MemoryBlobStore) -> None:
    seen: list[tuple[str | None, bool]] = []
    original = blobs.put

    def spy(key: str, body: bytes, **kwargs: object) -> str:
        seen.append((kwargs.get("if_match"), bool(kwargs.get("if_none_match"))))  # type: ignore[arg-type]
        return original(key, body, **kwargs)  # type: ignore[arg-type]

    blobs.put = spy  # type: ignore[method-assign]
    first = store.write_pointer(VersionId("v1"), None)
    store.write_pointer(VersionId("v2"), first)
    assert seen == [(None, True), (first.etag, False)]


def test_a_rival_between_read_and_swap_makes_us_lose(
    store: SnapshotStore, blobs: MemoryBlobStore
) -> None:
    base = store.write_pointer(VersionId("v1"), None)

    def rival(key: str) -> None:
        blobs.before_put = None
        store.write_pointer(VersionId("rival"), base)

    blobs.before_put = rival
    with pytest.raises(PointerConflictError) as info:
        store.write_pointer(VersionId("ours"), base)
    assert info.value.current == "rival"


# -- versions, manifests, completeness ------------------------------------------------------------
def test_upload_writes_manifest_last_and_download_round_trips(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    order: list[str] = []
    original = blobs.upload_file

    def recording_upload(key: str, path: Path) -> None:
        order.append(key)
        original(key, path)

    blobs.upload_file = recording_upload  # type: ignore[method-assign]
    blobs.before_put = order.append
    version = new_version_id()
    src = fake_chroma(tmp_path / "src")
    store.upload_version(version, src, manifest_for(version))
    entry = Keys.manifest(DB, version)
    # the id is claimed in the log before any file; the log entry is completed last
    assert order[0] == entry and order[-1] == entry and len(order) == 6
    assert order[-2] == store.version_prefix(version) + ".snapshot_hash"
    assert not [k for k in blobs.list(store.version_prefix(version)) if MANIFEST_NAME in k]
    manifest = store.manifest(version)
    assert manifest is not None and store.is_complete(version)
    assert dict(manifest.files) == {
        "chroma.sqlite3": 80,
        "0a1b2c3d-segment/data_level0.bin": 300,
        "0a1b2c3d-segment/header.bin": 40,
    }
    assert VersionManifest.from_json(manifest.to_json()) == manifest
    dest = tmp_path / "dest"
    assert store.download_version(version, dest) == manifest
    assert (dest / "chroma.sqlite3").read_bytes() == (src / "chroma.sqlite3").read_bytes()
    assert not (dest / MANIFEST_NAME).exists()


def test_a_version_without_manifest_is_incomplete(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    version = new_version_id()

    def crash_before_completion(key: str) -> None:
        if key == Keys.manifest(DB, version) and store.blobs.list(store.version_prefix(version)):
            raise StoreError("crash before the manifest")

    blobs.before_put = crash_before_completion
    with pytest.raises(StoreError):
        store.upload_version(version, fake_chroma(tmp_path / "src"), manifest_for(version))
    assert store.list_versions() == [version]  # the files are there...
    assert not store.is_complete(version)  # ...but nobody may read them
    with pytest.raises(SnapshotError, match="incomplete"):
        store.download_version(version, tmp_path / "dest")


def test_missing_version_download_says_missing(store: SnapshotStore, tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="missing"):
        store.download_version(VersionId("20990101_000000"), tmp_path / "d")


def test_original_versions_count_complete_with_a_chroma_database(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    prefix = Keys.version_prefix(DB, VersionId("20240101_120000"))
    blobs.put(prefix + "chroma.sqlite3", b"db")
    blobs.put(Keys.version_prefix(DB, VersionId("20240101_130000")) + "seg/header.bin", b"h")
    assert store.is_complete(VersionId("20240101_120000"))
    assert not store.is_complete(VersionId("20240101_130000"))
    assert store.download_version(VersionId("20240101_120000"), tmp_path / "d") is None
    assert (tmp_path / "d" / "chroma.sqlite3").read_bytes() == b"db"


def test_download_checks_sizes_against_the_manifest(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    version = publish(store, tmp_path, new_version_id())
    blobs.put(store.version_prefix(version) + "chroma.sqlite3", b"truncated")
    with pytest.raises(SnapshotError, match=r"chroma\.sqlite3 has 9 bytes"):
        store.download_version(version, tmp_path / "dest")


def test_manifest_must_match_the_directory(store: SnapshotStore, tmp_path: Path) -> None:
    version = new_version_id()
    wrong = replace(manifest_for(version), files=(("chroma.sqlite3", 1),))
    src = fake_chroma(tmp_path / "s")
    with pytest.raises(SnapshotError, match="does not match"):
        store.upload_version(version, src, wrong)
    listed = replace(manifest_for(version), files=tuple(reversed(scan_files(src))))
    store.upload_version(version, src, listed)  # the same files in another order are fine
    assert store.is_complete(version)


def test_version_ids_are_never_reused(store: SnapshotStore, tmp_path: Path) -> None:
    version = publish(store, tmp_path, new_version_id())
    other = replace(manifest_for(version), batch_id="another batch")
    with pytest.raises(SnapshotError, match="already exists"):
        store.upload_version(version, fake_chroma(tmp_path / "again", "y"), other)


def test_versions_of_both_id_formats_sort_by_time(store: SnapshotStore, tmp_path: Path) -> None:
    ours = new_version_id(datetime(2024, 1, 1, 12, 0, 0, 5, tzinfo=UTC))
    for version in (VersionId("20240101_120001"), ours, VersionId("20231231_235959")):
        publish(store, tmp_path, version)
    assert store.list_versions() == ["20231231_235959", ours, "20240101_120001"]


# -- in-flight markers and retention --------------------------------------------------------------
def test_inflight_markers_expire(store: SnapshotStore) -> None:
    now = datetime.now(UTC)
    store.mark_inflight(VersionId("v1"), "owner/a", timedelta(minutes=5))
    store.mark_inflight(VersionId("v2"), "b", timedelta(minutes=1))
    assert store.inflight_versions() == {"v1", "v2"}
    assert store.inflight_versions(now + timedelta(minutes=2)) == {"v1"}
    store.clear_inflight(VersionId("v1"), "owner/a")
    assert store.inflight_versions() == {"v2"}


def test_retention_keeps_newest_pointer_target_and_inflight(
    store: SnapshotStore, tmp_path: Path
) -> None:
    # versions older than the grace (their age is their id's): above a rolled-back pointer, a
    # young one is spared (its swap may still come; see the next tests)
    versions = [
        publish(store, tmp_path, VersionId(f"2024010{i}_000000"), created_at="")
        for i in range(1, 9)
    ]
    store.write_pointer(versions[0], None)  # a pointer naming an old version (e.g. a rollback)
    store.mark_inflight(versions[1], "merge-a", timedelta(minutes=10))  # a merge's base
    store.mark_inflight(versions[2], "merge-b", timedelta(seconds=-1))  # an expired marker
    deleted = store.apply_retention(keep=4)
    assert deleted == versions[2:4]
    assert store.list_versions() == [versions[0], versions[1], *versions[4:]]
    assert store.inflight_versions() == {versions[1]}
    assert not [k for k in store.blobs.list(Keys.inflight_prefix(DB)) if "merge-b" in k]


def test_retention_spares_a_version_still_uploading(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    old = VersionId("20200101_000000_000000_aaaaaaaa")
    store.mark_inflight(old, "uploader", timedelta(minutes=10))
    blobs.put(store.version_prefix(old) + "chroma.sqlite3", b"partial")  # no manifest yet
    publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 6)])
    assert store.apply_retention(keep=4) == ["20240101_000000"]
    assert old in store.list_versions()


def test_retention_negative_control_unprotected_versions_go(
    store: SnapshotStore, tmp_path: Path
) -> None:
    versions = publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 7)])
    assert store.apply_retention(keep=4) == versions[:2]
    assert store.list_versions() == versions[2:]
    assert not store.blobs.list(store.version_prefix(versions[0]))


def test_retention_spares_a_young_upload_off_the_chain_whose_marker_expired(
    store: SnapshotStore, tmp_path: Path
) -> None:
    """An upload not below the pointer may still be swapped in by its run (a slow run or a
    skewed clock lets its in-flight marker expire first): retention waits out the grace."""
    chain = publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 3)])
    pending = publish(store, tmp_path, VersionId("20240103_000000"))  # built now, not swapped
    store.mark_inflight(pending, pending, timedelta(seconds=-1))  # its marker: already expired
    newer = [publish(store, tmp_path, VersionId(f"2024010{i}_000000")) for i in range(4, 8)]

    deleted = store.apply_retention(keep=4)

    assert deleted == chain[:1]  # below the pointer: goes; the pointer's own is protected
    assert store.is_complete(pending) and all(store.is_complete(v) for v in newer)


def test_retention_takes_marked_versions_below_an_original_format_pointer(
    store: SnapshotStore, tmp_path: Path
) -> None:
    """The original writer published on top: the chain walk cannot pass its version, so our
    young versions go by their published marks (else a day of them would stay)."""
    ours = publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 6)])
    for version in ours:
        store.log.mark_published(version)
    unmarked = publish(store, tmp_path, VersionId("20240106_000000"))  # its swap may still come
    original = VersionId("20240107_000000")
    store.blobs.put(store.version_prefix(original) + "chroma.sqlite3", b"db")
    store.blobs.put(store.pointer_key, original.encode())  # unconditional, no log entry

    assert store.apply_retention(keep=2) == ours
    assert store.is_complete(unmarked) and store.is_complete(original)


def test_retention_takes_nothing_while_the_pointer_is_missing(
    store: SnapshotStore, tmp_path: Path
) -> None:
    """atk10-A3: with the pointer deleted, a replay's retention kept the newest N ids: N newer
    uploads of runs killed before their swap pushed out the published top, the one version a
    rebuild could start from (issue 10 case 3), whenever no unconfirmed-lineage mark happened
    to protect it (none here)."""
    chain = publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 4)])
    for version in chain:
        store.log.mark_published(version)
    for i in range(4, 8):  # uploads whose runs died before their swap
        publish(store, tmp_path, VersionId(f"2024010{i}_000000"), created_at="")
    store.blobs.delete([store.pointer_key])

    assert store.apply_retention(keep=4) == []
    assert store.is_complete(chain[-1])
    # control: with the pointer back, the same call takes the versions below it
    store.blobs.put(store.pointer_key, chain[-1].encode())
    assert chain[0] in store.apply_retention(keep=4)


def test_retention_negative_control_an_upload_past_the_grace_goes(
    store: SnapshotStore, tmp_path: Path
) -> None:
    publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 3)])
    stale = publish(store, tmp_path, VersionId("20240103_000000"), created_at="")  # 2024: old
    for i in range(4, 8):
        publish(store, tmp_path, VersionId(f"2024010{i}_000000"))
    assert stale in store.apply_retention(keep=4)
    assert not store.is_complete(stale)


# -- receipts ------------------------------------------------------------------------------------
def test_receipts_are_written_once(store: SnapshotStore) -> None:
    assert store.read_receipt("b1") is None
    store.write_receipt("b1", {"version": "v1", "total_embeddings": 3})
    store.write_receipt("b1", {"total_embeddings": 3, "version": "v1"})  # an identical retry
    assert store.read_receipt("b1") == {"version": "v1", "total_embeddings": 3}
    with pytest.raises(SnapshotError, match="different receipt"):
        store.write_receipt("b1", {"version": "v2", "total_embeddings": 3})
    assert store.read_receipt("b1") == {"version": "v1", "total_embeddings": 3}


# -- legacy fallback layout ----------------------------------------------------------------------
def test_legacy_latest_is_readable_when_present(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    assert store.read_legacy_latest(tmp_path / "none") is None
    blobs.put(Keys.legacy_latest_prefix(DB) + "chroma.sqlite3", b"old")
    assert store.read_legacy_latest(tmp_path / "l") == tmp_path / "l"
    assert (tmp_path / "l" / "chroma.sqlite3").read_bytes() == b"old"


# -- the local cache -----------------------------------------------------------------------------
def test_cache_populates_once_and_reuses(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    version = publish(store, tmp_path, new_version_id())
    cache = SnapshotCache(tmp_path / "cache", store)
    path = cache.get(version)
    assert path == tmp_path / "cache" / "words" / version
    assert (path / "chroma.sqlite3").is_file()
    blobs.fail_next("list", StoreError("must not be asked again"))
    assert cache.get(version) == path


def test_cache_crash_mid_download_leaves_no_valid_entry(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    version = publish(store, tmp_path, new_version_id())
    cache = SnapshotCache(tmp_path / "cache", store)
    blobs.fail_next("download_file", StoreError("connection reset"))
    with pytest.raises(StoreError):
        cache.get(version)
    assert not cache.path(version).exists()
    assert list(cache.directory.iterdir()) == []  # the staging copy is gone too
    # A hard crash (no cleanup) leaves a half-copied staging dir: it never counts.
    leftover = cache.directory / f".tmp-{version}-crashed"
    leftover.mkdir()
    (leftover / "chroma.sqlite3").write_bytes(b"half")
    path = cache.get(version)
    assert (path / "chroma.sqlite3").read_bytes() == f"sqlite-{version}".encode() * 10


def test_cache_concurrent_populations_of_one_version_are_safe(
    store: SnapshotStore, tmp_path: Path
) -> None:
    version = publish(store, tmp_path, new_version_id())
    cache = SnapshotCache(tmp_path / "cache", store)
    both_started = threading.Barrier(2)
    download = store.download_version

    calls: list[Path] = []

    def slow_download(v: VersionId, dest: Path) -> VersionManifest | None:
        calls.append(dest)
        both_started.wait(timeout=10)  # both populations pass the "is it cached?" check
        return download(v, dest)

    store.download_version = slow_download  # type: ignore[method-assign,assignment]
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(version))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [cache.path(version)] * 2
    assert len(set(calls)) == 2  # both really downloaded; the loser's copy was discarded
    assert [p.name for p in cache.directory.iterdir()] == [version]
    assert download(version, tmp_path / "check") is not None  # the store itself is untouched


def test_working_copy_is_separate_from_the_cache(store: SnapshotStore, tmp_path: Path) -> None:
    version = publish(store, tmp_path, new_version_id())
    cache = SnapshotCache(tmp_path / "cache", store)
    work = cache.working_copy(version, tmp_path / "work")
    (work / "chroma.sqlite3").write_bytes(b"merged")
    assert (cache.get(version) / "chroma.sqlite3").read_bytes() == f"sqlite-{version}".encode() * 10
    with pytest.raises(FileExistsError):
        cache.working_copy(version, work)


def test_cache_prune_keeps_listed_and_young_staging(store: SnapshotStore, tmp_path: Path) -> None:
    a = publish(store, tmp_path, VersionId("20240101_000000"))
    b = publish(store, tmp_path, VersionId("20240102_000000"))
    cache = SnapshotCache(tmp_path / "cache", store)
    cache.get(a)
    cache.get(b)
    (cache.directory / ".tmp-in-progress").mkdir()
    cache.prune({b})
    assert sorted(p.name for p in cache.directory.iterdir()) == [".tmp-in-progress", b]
    cache.prune({b}, stale_after=timedelta(seconds=-1))
    assert [p.name for p in cache.directory.iterdir()] == [b]


# -- the pointer's body ----------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"2024\x00junk", b"\xff\xfe20240101", b"a b"])
def test_a_pointer_that_holds_no_version_id_is_a_snapshot_error(
    store: SnapshotStore, blobs: MemoryBlobStore, body: bytes
) -> None:
    blobs.put(Keys.pointer(DB), body)
    with pytest.raises(SnapshotError, match="pointer"):
        store.read_pointer()


# -- the commit log: ancestry without trusting id order -------------------------------------
def log_entry(
    store: SnapshotStore, version: str, base: str | None, height: int, root: str | None
) -> VersionManifest:
    entry = replace(
        manifest_for(VersionId(version), VersionId(base) if base else None),
        height=height,
        root=root,
    )
    store.log.advance(entry, store.log.begin(entry), EntryState.COMPLETE)
    return entry


def test_ancestry_is_decided_by_height_within_a_root(store: SnapshotStore) -> None:
    # ids deliberately out of time order: a skewed clock must not matter
    v1 = log_entry(store, "20240105_000000", None, 1, None)
    v2 = log_entry(store, "20240101_000000", "20240105_000000", 2, None)
    fork = log_entry(store, "20240103_000000", "20240105_000000", 2, None)  # an orphan
    v3 = log_entry(store, "20240102_000000", "20240101_000000", 3, None)
    assert store.log.is_ancestor(v1, v3.version) is True
    assert store.log.is_ancestor(v3, v3.version) is True
    assert store.log.is_ancestor(fork, v3.version) is False
    assert store.log.is_ancestor(v3, v2.version) is False
    assert store.log.is_ancestor(v2, None) is False


def test_ancestry_across_an_original_version_is_undecided(store: SnapshotStore) -> None:
    ours = log_entry(store, "20240101_000000_000000_" + "a" * 32, None, 1, None)
    # the original writer published 20240102_000000 (no entry); we built on it
    above = log_entry(
        store, "20240103_000000_000000_" + "b" * 32, "20240102_000000", 1, "20240102_000000"
    )
    assert store.log.is_ancestor(ours, above.version) is None  # cannot tell: never guessed
    assert store.log.is_ancestor(above, above.version) is True
    assert store.log.is_ancestor(ours, VersionId("20240102_000000")) is None


def test_retention_retires_log_entries_and_never_deletes_them(
    store: SnapshotStore, tmp_path: Path
) -> None:
    versions = publish_chain(store, tmp_path, [f"2024010{i}_000000" for i in range(1, 7)])
    assert store.apply_retention(keep=4) == versions[:2]
    for version in versions[:2]:
        entry = store.log.entry(version)
        assert entry is not None and entry.state == EntryState.RETIRED
        assert not store.is_complete(version)
    assert store.log.versions() == versions


def test_a_pre_log_version_with_its_own_manifest_inside_stays_readable(
    store: SnapshotStore, blobs: MemoryBlobStore, tmp_path: Path
) -> None:
    """Written before the commit log: files, a copied hash file, and the manifest last, inside."""
    version = VersionId("20240101_000000_000000_aaaaaaaa")
    src = fake_chroma(tmp_path / "src")
    (src / ".snapshot_hash").write_text("{}")  # carried from its base by the old code
    manifest = replace(manifest_for(version), files=(*scan_files(src), (".snapshot_hash", 2)))
    for rel, path in sorted(
        (p.relative_to(src).as_posix(), p) for p in src.rglob("*") if p.is_file()
    ):
        blobs.put(store.version_prefix(version) + rel, path.read_bytes())
    blobs.put(store.version_prefix(version) + MANIFEST_NAME, manifest.to_json().encode())
    assert store.is_complete(version)
    assert store.download_version(version, tmp_path / "d") is not None
    # the same manifest copied into another version's prefix describes nothing there
    other = VersionId("20240102_000000")
    blobs.put(store.version_prefix(other) + "chroma.sqlite3", b"db")
    blobs.put(store.version_prefix(other) + MANIFEST_NAME, manifest.to_json().encode())
    assert store.manifest(other) is None and store.is_complete(other)
