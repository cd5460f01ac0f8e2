"""The decisions of group commit, as pure functions of what was read (no I/O here).

    the loop     :func:`next_step`       wait for a live builder, take the marker, or build
                                         without it once the wait is over
                 :func:`ask_again`       is our batch's publish worth asking about at this base?
    the builder  :func:`to_judge`        whose claims must be read at the phase-1 base
                 :func:`plan_group`      the group to build (seq order, ours always in it), the
                                         batches already done, the highest seq listed
    a lost CAS   :func:`rebase_or_rebuild`  bring the last build up to the new pointer with the
                                         change sets of the publishes since, or build in full

The callers (``group_merge``, ``group_publish``, ``group_build``) gather the inputs, call these
and apply the result; the unit tests drive each one with tables (tests/unit/test_group_plan.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from snapmerge.domain import Pointer
from snapmerge.group_commit import PENDING, PendingBatch


class Step(StrEnum):
    """What an execution of the group loop does next."""

    WAIT = "wait"  # a live builder holds the marker and our wait is not over
    TAKE = "take"  # no live builder: take the marker, then build
    BUILD_UNMARKED = "build_unmarked"  # the wait is over: build without the marker


def next_step(live_builder: bool, late: bool) -> Step:
    """Waiting is bounded: once ``late``, build whatever the marker says, so that no execution's
    liveness depends on another's."""
    if late:
        return Step.BUILD_UNMARKED
    return Step.WAIT if live_builder else Step.TAKE


def ask_again(base: Pointer | None, asked_at: Pointer | None) -> bool:
    """Must a builder ask whether our batch is published at ``base``? Not at the pointer the wait
    loop already asked at (``asked_at``): claims of a version are written before its swap, so
    none can appear at or below a pointer already read. No base: always ask."""
    return base is None or base != asked_at


class Claims(StrEnum):
    """What a pending batch's claims say at the builder's base."""

    PUBLISHED = "published"  # a claim at or below the base: published already, done
    UNPUBLISHED = "unpublished"  # no claim at or below the base: build it
    UNJUDGED = "unjudged"  # its claims cannot be judged: left to its own execution, which raises


@dataclass(frozen=True)
class GroupPlan:
    """What a builder builds at its base, and which pending objects it may forget after."""

    group: list[PendingBatch]  # ours and every other unpublished batch, in seq order
    done: list[PendingBatch]  # seen published (by claims or marked) or withdrawn
    highest: int  # the highest seq listed (its pending object is never deleted)


def to_judge(listing: Sequence[PendingBatch], mine: PendingBatch) -> list[PendingBatch]:
    """The batches whose claims a builder must read: the first pending enqueue of every other
    batch id, in seq order. Never ours (its own publish is asked about once, by
    :func:`ask_again`), nor one withdrawn or marked published, nor a later enqueue of an id
    already listed."""
    seen = {mine.batch_id}
    out: list[PendingBatch] = []
    for batch in listing:
        if batch.state != PENDING or batch.batch_id in seen:
            continue
        seen.add(batch.batch_id)
        out.append(batch)
    return out


def plan_group(
    listing: Sequence[PendingBatch],
    highest: int,
    mine: PendingBatch,
    claims: Mapping[int, Claims],
) -> GroupPlan:
    """Every pending batch not published at the base, in seq order; ours always among them.

    ``listing`` is the pending queue in seq order, ``claims`` the verdict at the base for each
    batch of :func:`to_judge` by seq (one without a verdict counts as unjudged: left out, so it
    is never applied on a guess). Another enqueue of our own id is done if withdrawn and skipped
    if pending (an older enqueue of this batch: its digest was checked with ours).
    """
    judged = {b.seq for b in to_judge(listing, mine)}
    group: list[PendingBatch] = []
    done: list[PendingBatch] = []
    for batch in listing:
        if batch.batch_id == mine.batch_id:
            if batch.seq != mine.seq and batch.state != PENDING:
                done.append(batch)
            continue
        if batch.state != PENDING:
            done.append(batch)
            continue
        if batch.seq not in judged:
            continue  # a later enqueue of an id already considered
        verdict = claims.get(batch.seq, Claims.UNJUDGED)
        if verdict is Claims.PUBLISHED:
            done.append(batch)
        elif verdict is Claims.UNPUBLISHED:
            group.append(batch)
    group.append(mine)
    group.sort(key=lambda b: b.seq)
    return GroupPlan(group, done, highest)


def rebase_or_rebuild(
    consumed: Sequence[Collection[str] | None],
    old_group: Sequence[PendingBatch],
    new_group: Sequence[PendingBatch],
) -> bool:
    """After a lost CAS: may the last build be rebased with the change sets of the publishes
    since (True), or must the group be built in full (False)?

    ``consumed`` holds, per publish since the last build's base (oldest first), the batches its
    log entry says it consumed, or None where the entry is missing. Rebase only when there is at
    least one publish, each has an entry, and every batch the last build applied that the new
    group leaves out is one of theirs: a batch left out for another reason (its inputs gone or
    changed) is still in the last build, and a rebase would publish it.
    """
    if not consumed or any(c is None for c in consumed):
        return False
    theirs = {batch_id for c in consumed if c is not None for batch_id in c}
    dropped = {b.batch_id for b in old_group} - {b.batch_id for b in new_group}
    return dropped <= theirs
