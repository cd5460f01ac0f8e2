"""Which keys a finished batch may delete (``bases.batch_intermediates``), in memory."""

from __future__ import annotations

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.bases import batch_intermediates
from snapmerge.domain import Database, FinalMergeRequest, Keys


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
