"""The pending queue, the builder marker and the heartbeat watch, on the in-memory blob store."""

from __future__ import annotations

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.builder_slot import BUILDING, BuilderSlot, Marker, Watch
from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.errors import PointerConflictError
from snapmerge.group_commit import PUBLISHED, WITHDRAWN, PendingQueue
from snapmerge.group_plan import Claims, plan_group

DB = Database.WORDS


def request(batch: str) -> FinalMergeRequest:
    return FinalMergeRequest(batch, DB, (f"intermediate/{batch}/chunk-0/",))


def test_sequence_numbers_follow_the_listing_and_a_retry_reuses_its_entry() -> None:
    queue = PendingQueue(MemoryBlobStore(), DB)
    a = queue.enqueue(request("a"), "da")
    b = queue.enqueue(request("b"), "db")
    again = queue.enqueue(request("a"), "da")
    assert (a.seq, b.seq, again.seq) == (1, 2, 1)
    other_inputs = queue.enqueue(request("a"), "other")  # a reused id is a new entry
    assert other_inputs.seq == 3
    found, highest = queue.listing()
    assert [p.batch_id for p in found] == ["a", "b", "a"] and highest == 3


def test_a_taken_number_is_never_overwritten() -> None:
    blobs = MemoryBlobStore()
    queue = PendingQueue(blobs, DB)
    first = queue.enqueue(request("a"), "da")
    with pytest.raises(PointerConflictError):
        blobs.put(first.key, b"{}", if_none_match=True)
    assert queue.read(1) == first


def test_forget_keeps_the_highest_number_so_numbers_are_never_reused() -> None:
    queue = PendingQueue(MemoryBlobStore(), DB)
    batches = [queue.enqueue(request(n), f"d{n}") for n in "abc"]
    queue.forget(batches, highest=3)
    found, highest = queue.listing()
    assert [p.batch_id for p in found] == ["c"] and highest == 3
    assert found[0].state == PUBLISHED  # kept for its number, marked so builders skip it
    assert queue.enqueue(request("d"), "dd").seq == 4


def test_forget_marks_only_a_pending_highest_and_never_unmarks_a_withdrawn_one() -> None:
    queue = PendingQueue(MemoryBlobStore(), DB)
    a, b = (queue.enqueue(request(n), f"d{n}") for n in "ab")
    queue.withdraw(b)
    withdrawn = queue.read(2)
    assert withdrawn is not None
    queue.forget([a, withdrawn], highest=2)
    found, _ = queue.listing()
    assert [(p.seq, p.state) for p in found] == [(2, WITHDRAWN)]
    queue.forget([a], highest=2)  # the highest not among ours: nothing written
    assert [(p.seq, p.state) for p in queue.listing()[0]] == [(2, WITHDRAWN)]


def test_withdraw_keeps_the_number_and_marks_the_entry() -> None:
    queue = PendingQueue(MemoryBlobStore(), DB)
    a = queue.enqueue(request("a"), "da")
    queue.withdraw(a)
    found, _ = queue.listing()
    assert [(p.seq, p.state) for p in found] == [(1, WITHDRAWN)]
    assert queue.enqueue(request("b"), "db").seq == 2


def test_the_marker_is_taken_once_and_taken_over_only_from_the_etag_seen() -> None:
    blobs = MemoryBlobStore()
    slot = BuilderSlot(blobs, DB)
    assert slot.take("one", None) is not None
    assert slot.take("two", None) is None  # it exists now
    seen = slot.read()
    assert seen is not None and seen.owner == "one" and seen.state == BUILDING
    assert slot.take("two", seen) is not None
    assert slot.take("three", seen) is None  # the ETag it saw is gone


def test_watch_calls_a_marker_dead_only_when_its_etag_stops_moving() -> None:
    now = [0.0]
    watch = Watch(5.0, clock=lambda: now[0])
    marker = Marker(BUILDING, "b", (), '"e1"')
    assert not watch.dead(marker)
    now[0] = 4.9
    assert not watch.dead(marker)
    now[0] = 5.0
    assert watch.dead(marker)
    moved = Marker(BUILDING, "b", (), '"e2"')
    assert not watch.dead(moved)


@pytest.mark.parametrize("meanwhile", ["deleted", "withdrawn", "untouched"])
def test_the_plan_is_the_same_whether_or_not_our_pending_object_is_read_back(
    meanwhile: str,
) -> None:
    """The builder does not read its own pending object back (``listing(known=...)``); between
    the enqueue and the plan, another builder published our batch and forgot
    its pending object, or (hypothetically) it was withdrawn: plan_group never looks at our own
    entry of the listing, so not reading it back changes nothing."""
    blobs = MemoryBlobStore()
    queue = PendingQueue(blobs, DB)
    other = queue.enqueue(request("other"), "d-other")
    ours = queue.enqueue(request("ours"), "d-ours")
    queue.enqueue(request("later"), "d-later")  # ours is not the highest: it may be forgotten
    if meanwhile == "deleted":
        blobs.delete([ours.key])
    elif meanwhile == "withdrawn":
        queue.withdraw(ours)
    claims = {other.seq: Claims.UNPUBLISHED, ours.seq + 1: Claims.UNPUBLISHED}
    read_back = plan_group(*queue.listing(), ours, claims)
    known = plan_group(*queue.listing(known=ours), ours, claims)
    assert known == read_back
    assert [b.batch_id for b in known.group] == ["other", "ours", "later"]
