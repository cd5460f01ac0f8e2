"""Attacks on the ``published`` mark of the kept highest pending object (4c97fcb): each race
the unconditional rewrite can lose, and what keeps every batch applied once, in enqueue order.

The mark is only ever written for a batch its publisher saw published (its own group, or judged
published by claims at its base), under a key whose number is never reused; every state but
``pending`` means done to a plan. So a stale or recreated mark can only name a published batch,
and a mark that never lands leaves the claims check to decide, as before the change
(tests/concurrency/test_group_histories.py keeps both sides of that with the real builder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.errors import PointerConflictError
from snapmerge.group_commit import PENDING, PUBLISHED, WITHDRAWN, PendingQueue
from snapmerge.group_plan import Claims, plan_group, to_judge

DB = Database.WORDS


def request(batch: str) -> FinalMergeRequest:
    return FinalMergeRequest(batch, DB, (f"intermediate/{batch}/chunk-0/",))


class LostReply(MemoryBlobStore):
    """The first conditional create lands, then ``meanwhile`` runs and the caller sees a 412
    (the SDK retried a PUT whose reply was lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: Callable[[], None] | None = None

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        etag = super().put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )
        if if_none_match and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
            raise PointerConflictError(key, None)
        return etag


def test_a_mark_recreated_after_a_later_publisher_deleted_it_is_skipped_and_collected() -> None:
    queue = PendingQueue(MemoryBlobStore(), DB)
    a = queue.enqueue(request("a"), "da")
    stale, stale_highest = queue.listing()  # the slow publisher of a: a is the highest
    b = queue.enqueue(request("b"), "db")
    queue.forget([a, b], highest=2)  # b's publisher: a's object deleted, b marked
    queue.forget(stale, stale_highest)  # a's publisher, late: recreates a, marked

    found, highest = queue.listing()
    assert [(p.seq, p.state) for p in found] == [(1, PUBLISHED), (2, PUBLISHED)]
    c = queue.enqueue(request("c"), "dc")
    assert c.seq == 3  # numbering never goes back
    listing, highest = queue.listing()
    assert to_judge(listing, c) == []  # neither a nor b is read for claims
    plan = plan_group(listing, highest, c, {})
    assert plan.group == [c] and {p.seq for p in plan.done} == {1, 2}
    queue.forget([*plan.group, *plan.done], plan.highest)
    assert [(p.seq, p.state) for p in queue.listing()[0]] == [(3, PUBLISHED)]


def test_an_enqueue_whose_reply_was_lost_while_its_batch_was_marked_is_judged_by_claims() -> None:
    blobs = LostReply()
    queue = PendingQueue(blobs, DB)

    def published_and_marked() -> None:  # a builder took seq 1, published it, marked it
        first = queue.read(1)
        assert first is not None and first.state == PENDING
        queue.forget([first], highest=1)

    blobs.meanwhile = published_and_marked
    again = queue.enqueue(request("a"), "da")
    assert again.seq == 2 and again.state == PENDING  # the body differs now: a second enqueue
    other = queue.enqueue(request("z"), "dz")
    listing, highest = queue.listing()
    # the next builder reads a's claims for seq 2 (its first pending enqueue) and finds them
    assert [b.seq for b in to_judge(listing, other)] == [2]
    plan = plan_group(listing, highest, other, {2: Claims.PUBLISHED})
    assert plan.group == [other] and [b.seq for b in plan.done] == [1, 2]


def test_mark_and_withdraw_in_either_order_leave_the_batch_done() -> None:
    for mark_first in (True, False):
        queue = PendingQueue(MemoryBlobStore(), DB)
        a = queue.enqueue(request("a"), "da")
        listing, highest = queue.listing()
        if mark_first:
            queue.forget(listing, highest)
            queue.withdraw(a)
        else:
            queue.withdraw(a)
            queue.forget(listing, highest)  # the stale listing said pending: overwritten
        mine = queue.enqueue(request("m"), "dm")
        found, top = queue.listing()
        assert found[0].state == (WITHDRAWN if mark_first else PUBLISHED)
        plan = plan_group(found, top, mine, {})
        assert plan.group == [mine] and [b.seq for b in plan.done] == [1]
