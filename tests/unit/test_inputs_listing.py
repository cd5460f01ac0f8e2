"""A batch's inputs named by their listing (ADR 0013): what it names, and when only the content
digest can decide."""

from __future__ import annotations

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.exactly_once import DigestNeeded, InputsId, inputs_listing
from snapmerge.group_commit import PendingBatch, PendingQueue

DB = Database.LINES


def request(*keys: str) -> FinalMergeRequest:
    return FinalMergeRequest(batch_id="b", database=DB, intermediate_keys=keys)


@pytest.fixture
def blobs() -> MemoryBlobStore:
    store = MemoryBlobStore()
    store.put("intermediate/b/chunk-0/chroma.sqlite3", b"one")
    store.put("intermediate/b/chunk-0/seg/data.bin", b"two")
    store.put("intermediate/b/chunk-1/chroma.sqlite3", b"three")
    store.put("lines/delta/run-1/delta.tar.gz", b"tarball")
    store.put("lines/delta/run-1/delta.tar.gz.bak", b"not part of it")
    return store


def test_the_same_objects_give_the_same_listing_and_changed_bytes_another(
    blobs: MemoryBlobStore,
) -> None:
    req = request("intermediate/b/chunk-0/", "intermediate/b/chunk-1")
    first = inputs_listing(blobs, req)
    assert first is not None and first.startswith("listing:")
    blobs.put("intermediate/b/chunk-0/seg/data.bin", b"two")  # the same bytes again
    assert inputs_listing(blobs, req) == first
    blobs.put("intermediate/b/chunk-0/seg/data.bin", b"TWO")
    assert inputs_listing(blobs, req) != first


def test_the_listing_depends_on_order_database_and_a_new_object(blobs: MemoryBlobStore) -> None:
    req = request("intermediate/b/chunk-0/", "intermediate/b/chunk-1/")
    first = inputs_listing(blobs, req)
    swapped = inputs_listing(blobs, request("intermediate/b/chunk-1/", "intermediate/b/chunk-0/"))
    other_db = FinalMergeRequest("b", Database.WORDS, req.intermediate_keys)
    assert swapped != first and inputs_listing(blobs, other_db) != first
    blobs.put("intermediate/b/chunk-1/extra", b"x")
    assert inputs_listing(blobs, req) != first


def test_a_missing_intermediate_has_no_listing(blobs: MemoryBlobStore) -> None:
    assert inputs_listing(blobs, request("intermediate/b/chunk-0/", "intermediate/b/gone/")) is None
    assert inputs_listing(blobs, request("lines/delta/run-2/delta.tar.gz")) is None


def test_a_tarball_key_names_that_object_only(blobs: MemoryBlobStore) -> None:
    req = request("lines/delta/run-1/delta.tar.gz")
    first = inputs_listing(blobs, req)
    blobs.put("lines/delta/run-1/delta.tar.gz.bak", b"changed, but not the tarball")
    assert inputs_listing(blobs, req) == first
    blobs.put("lines/delta/run-1/delta.tar.gz", b"changed")
    assert inputs_listing(blobs, req) != first


@pytest.mark.parametrize(
    ("ours", "claim_digest", "claim_listing", "expected"),
    [
        (InputsId("d1", "L1"), "d1", "L2", True),  # digests decide when both are known
        (InputsId("d1", "L1"), "d2", "L1", False),  # ... even against equal listings
        (InputsId("", "L1"), "d1", "L1", True),  # a waiter that fetched nothing
        (InputsId("", "L1"), "d1", "L2", DigestNeeded),  # the same bytes may list otherwise
        (InputsId("", "L1"), "d1", "", DigestNeeded),  # a claim that records no listing
        (InputsId("d1"), "d1", "", True),
        (InputsId("d1"), "d2", "", False),
        (InputsId("d1", "L1"), "", "L1", False),  # a claim with no digest never matches ours
    ],
)
def test_when_a_claim_matches(
    ours: InputsId, claim_digest: str, claim_listing: str, expected: object
) -> None:
    if expected is DigestNeeded:
        with pytest.raises(DigestNeeded):
            ours.matches(claim_digest, claim_listing)
    else:
        assert ours.matches(claim_digest, claim_listing) is expected


@pytest.mark.parametrize(
    ("digest", "listing", "asked", "expected"),
    [
        ("d1", "", ("d1", ""), True),
        ("d1", "", ("d2", ""), False),
        ("", "L1", ("", "L1"), True),
        ("", "L1", ("d1", "L1"), True),  # a claim by a builder that computed the digest
        ("", "L1", ("d1", "L2"), False),  # unknown: never taken as the same inputs
        ("", "", ("", ""), False),  # an object of an older version without either
    ],
)
def test_pending_batches_are_the_same_inputs_only_when_known_to_be(
    digest: str, listing: str, asked: tuple[str, str], expected: bool
) -> None:
    batch = PendingBatch(1, "b", ("k",), digest, listing=listing)
    assert batch.same_inputs(*asked) is expected


def test_a_pending_object_keeps_its_listing_and_older_ones_read_without() -> None:
    blobs = MemoryBlobStore()
    queue = PendingQueue(blobs, DB)
    mine = queue.enqueue(request("intermediate/b/chunk-0/"), "", "listing:abc")
    assert queue.read(mine.seq) == mine and mine.listing == "listing:abc"
    assert queue.enqueue(request("intermediate/b/chunk-0/"), "", "listing:abc") == mine  # a retry
    with pytest.raises(ValueError, match="digest or their listing"):
        queue.enqueue(request("intermediate/b/chunk-0/"), "", "")
    older = PendingBatch(7, "o", ("k",), "d7", key=queue.key(7))
    body = older.body()
    assert b"listing" not in body  # objects without a listing read as before
    blobs.put(queue.key(7), body)
    assert queue.read(7) == older


def test_a_request_with_no_intermediates_has_no_listing(blobs: MemoryBlobStore) -> None:
    """A listing of nothing would name no inputs; the fetch-first path refuses the request."""
    assert inputs_listing(blobs, request()) is None
