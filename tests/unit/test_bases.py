"""What a final merge builds on with the pointer gone, and which keys a finished batch may delete
(``snapmerge/bases.py``), in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.bases import PublishedHead, batch_intermediates, published_head, resolve_base
from snapmerge.domain import Database, FinalMergeRequest, Keys, Pointer, VersionId
from snapmerge.errors import SnapshotError
from snapmerge.manifest import VersionManifest
from snapmerge.snapshots import SnapshotStore


def request(batch_id: str, *keys: str) -> FinalMergeRequest:
    return FinalMergeRequest(batch_id=batch_id, database=Database.WORDS, intermediate_keys=keys)


def test_only_the_batchs_own_chunks_groups_and_request_keys() -> None:
    blobs = MemoryBlobStore()
    own = [
        "intermediate/b/chunk-0/chroma.sqlite3",
        "intermediate/b/chunk-1/chroma.sqlite3",
        "intermediate/b-group-0/merged/chroma.sqlite3",
        "intermediate/b-group-12/merged/seg/header.bin",
    ]
    others = [
        "intermediate/b-group-7/chunk-0/chroma.sqlite3",  # batch "b-group-7"
        "intermediate/b-group-7-group-0/merged/chroma.sqlite3",  # its group
        "intermediate/b/x/chunk-0/chroma.sqlite3",  # batch "b/x"
        "intermediate/bb/chunk-0/chroma.sqlite3",  # batch "bb"
        "intermediate/b-2/chunk-0/chroma.sqlite3",  # batch "b-2"
        "words/delta/run1/chroma.sqlite3",  # a delta: the fast path's input, never deleted
    ]
    for key in own + others:
        blobs.put(key, b"x")
    found = batch_intermediates(blobs, request("b", Keys.group_prefix("b", 0), "words/delta/run1/"))
    assert found == sorted(own)


def test_request_keys_are_delimited_prefixes() -> None:
    blobs = MemoryBlobStore()
    for key in ("intermediate/c/chunk-1/a", "intermediate/c/chunk-10/a", "intermediate/c/extra"):
        blobs.put(key, b"x")
    # a request key without its trailing slash still means that directory only
    found = batch_intermediates(blobs, request("other", "intermediate/c/chunk-1"))
    assert found == ["intermediate/c/chunk-1/a"]


def test_a_batch_named_below_another_keeps_its_intermediates() -> None:
    """Found by the adversarial review: finishing ``b`` deleted ``b/chunk-1``'s chunk outputs."""
    blobs = MemoryBlobStore()
    own = ["intermediate/b/chunk-1/chroma.sqlite3", "intermediate/b/chunk-1/seg/header.bin"]
    others = [
        "intermediate/b/chunk-1/chunk-0/chroma.sqlite3",  # batch "b/chunk-1"
        "intermediate/b/chunk-1/chunk-0/seg/header.bin",
        "intermediate/b/chunk-1-group-0/merged/chroma.sqlite3",  # its group
        "intermediate/b-group-0/merged/x/chunk-3/chroma.sqlite3",  # batch "b-group-0/merged/x"
        "intermediate/b/chunk-2/y-group-1/merged/chroma.sqlite3",  # batch "b/chunk-2/y"'s group
    ]
    for key in own + others:
        blobs.put(key, b"x")
    assert batch_intermediates(blobs, request("b")) == sorted(own)
    assert batch_intermediates(blobs, request("b/chunk-1")) == sorted(others[:3])


# -- the base with the pointer gone (adversarial finding F1) ------------------------------------
def _upload(store: SnapshotStore, tmp: Path, base: VersionId | None, name: str) -> VersionId:
    version = VersionId(name)
    local = tmp / name
    local.mkdir()
    (local / "chroma.sqlite3").write_bytes(name.encode())
    manifest = VersionManifest(version, base, f"batch-{name}", 1, 8, "two_phase", (), "2026-12-02")
    store.upload_version(version, local, manifest)
    return version


def test_the_published_top_is_chosen_and_an_unmarked_upload_on_it_only_named(
    tmp_path: Path,
) -> None:
    store = SnapshotStore(MemoryBlobStore(), Database.WORDS)
    seed = _upload(store, tmp_path, None, "20260101_000000_a")
    store.log.mark_published(seed)
    published = _upload(store, tmp_path, seed, "20260101_000001_b")  # marked by its successor
    later = _upload(store, tmp_path, published, "20260101_000002_c")
    store.log.mark_published(later)
    orphan = _upload(store, tmp_path, published, "20260101_000009_d")  # died before its CAS
    on_top = _upload(store, tmp_path, later, "20260101_000003_e")  # died around its CAS

    head = published_head(store)
    assert head == PublishedHead(later, undecided=(on_top,))
    assert resolve_base(store, rebuild_from_newest=True) == Pointer(later, "", exists=False)
    with pytest.raises(SnapshotError, match=f"newest published: {later}") as refused:
        resolve_base(store, rebuild_from_newest=False)
    assert f"Not chosen: {on_top}" in str(refused.value) and orphan not in str(refused.value)


def test_no_record_of_a_publish_or_two_tops_is_refused_even_opted_in(tmp_path: Path) -> None:
    store = SnapshotStore(MemoryBlobStore(), Database.WORDS)
    first = _upload(store, tmp_path, None, "20260101_000000_a")
    with pytest.raises(SnapshotError, match=f"no record says which version.*{first}"):
        resolve_base(store, rebuild_from_newest=True)
    left = _upload(store, tmp_path, first, "20260101_000001_b")
    right = _upload(store, tmp_path, first, "20260101_000002_c")
    store.log.mark_published(left)
    store.log.mark_published(right)  # only a writer outside the protocol forks the chain
    with pytest.raises(SnapshotError, match=f"several tops \\({left}, {right}\\)"):
        resolve_base(store, rebuild_from_newest=True)


def test_an_empty_prefix_is_a_first_publish(tmp_path: Path) -> None:
    assert (
        resolve_base(SnapshotStore(MemoryBlobStore(), Database.WORDS), rebuild_from_newest=False)
        is None
    )
