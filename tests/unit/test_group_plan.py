"""The pure decisions of group commit (snapmerge/group_plan.py), table by table."""

from __future__ import annotations

import pytest

from snapmerge.domain import Pointer, VersionId
from snapmerge.group_commit import PENDING, WITHDRAWN, PendingBatch
from snapmerge.group_plan import (
    Claims,
    Step,
    ask_again,
    next_step,
    plan_group,
    rebase_or_rebuild,
    to_judge,
)

P, U, X = Claims.PUBLISHED, Claims.UNPUBLISHED, Claims.UNJUDGED


def batch(spec: str) -> PendingBatch:
    """``"3:b"``: seq 3, batch ``b``, pending; ``"3:b-"``: the same, withdrawn."""
    seq, name = spec.split(":")
    state = WITHDRAWN if name.endswith("-") else PENDING
    name = name.rstrip("-")
    return PendingBatch(int(seq), name, (f"intermediate/{name}/chunk-0/",), f"d{name}", 1, state)


def specs(batches: list[PendingBatch]) -> list[str]:
    return [f"{b.seq}:{b.batch_id}{'-' if b.state != PENDING else ''}" for b in batches]


@pytest.mark.parametrize(
    ("live", "late", "step"),
    [
        (True, False, Step.WAIT),
        (False, False, Step.TAKE),
        (True, True, Step.BUILD_UNMARKED),  # the wait is bounded, even behind a live builder
        (False, True, Step.BUILD_UNMARKED),
    ],
)
def test_next_step(live: bool, late: bool, step: Step) -> None:
    assert next_step(live, late) is step


A = Pointer(VersionId("20260101_000000-a"), '"e1"')
B = Pointer(VersionId("20260101_000001-b"), '"e2"')


@pytest.mark.parametrize(
    ("base", "asked_at", "ask"),
    [
        (A, A, False),  # the wait loop saw ours unpublished at this very pointer
        (B, A, True),  # a publish since: ask again
        (A, None, True),  # never asked
        (None, None, True),  # no pointer: always asked (nothing to trust)
    ],
)
def test_ask_again(base: Pointer | None, asked_at: Pointer | None, ask: bool) -> None:
    assert ask_again(base, asked_at) is ask


# (listing, ours, verdicts by seq) -> (to judge, group, done)
CASES = [
    pytest.param(
        ["1:a", "2:b", "3:c"], "2:b", {1: U, 3: U},
        ["1:a", "3:c"], ["1:a", "2:b", "3:c"], [],
        id="every unpublished batch, in seq order, ours among them",
    ),
    pytest.param(
        ["3:c", "1:a", "2:b"], "1:a", {3: U, 2: U},
        ["3:c", "2:b"], ["1:a", "2:b", "3:c"], [],
        id="the group is sorted by seq whatever the listing order",
    ),
    pytest.param(
        ["1:a", "2:b"], "2:b", {1: P},
        ["1:a"], ["2:b"], ["1:a"],
        id="a batch already published at the base is done, not applied again",
    ),
    pytest.param(
        ["1:a", "2:b", "3:c"], "3:c", {1: X, 2: U},
        ["1:a", "2:b"], ["2:b", "3:c"], [],
        id="a batch whose claims cannot be judged is left to its own execution",
    ),
    pytest.param(
        ["1:a", "2:b"], "2:b", {},
        ["1:a"], ["2:b"], [],
        id="a batch without a verdict is never applied on a guess",
    ),
    pytest.param(
        ["1:b", "2:a", "3:b"], "3:b", {2: U},
        ["2:a"], ["2:a", "3:b"], [],
        id="an older pending enqueue of our own batch is skipped, neither built nor forgotten",
    ),
    pytest.param(
        ["1:b-", "2:b"], "2:b", {},
        [], ["2:b"], ["1:b-"],
        id="an older withdrawn enqueue of our own batch is done",
    ),
    pytest.param(
        ["1:a-", "2:a", "3:b"], "3:b", {2: U},
        ["2:a"], ["2:a", "3:b"], ["1:a-"],
        id="a withdrawn batch is done; a later pending enqueue of its id is judged",
    ),
    pytest.param(
        ["1:a", "2:a", "3:b"], "3:b", {1: U},
        ["1:a"], ["1:a", "3:b"], [],
        id="only the first pending enqueue of another id is judged and applied",
    ),
    pytest.param(
        ["1:a", "2:a", "3:b"], "3:b", {1: X},
        ["1:a"], ["3:b"], [],
        id="an unjudged id is not retried through its later enqueue",
    ),
    pytest.param(
        ["1:a"], "5:b", {1: P},
        ["1:a"], ["5:b"], ["1:a"],
        id="ours is always in the group, even when the listing missed it",
    ),
    pytest.param(
        ["1:a", "2:b-"], "3:c", {1: P},
        ["1:a"], ["3:c"], ["1:a", "2:b-"],
        id="everything else done: ours alone",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("listing", "ours", "verdicts", "judge", "group", "done"), CASES)
def test_plan_group(
    listing: list[str],
    ours: str,
    verdicts: dict[int, Claims],
    judge: list[str],
    group: list[str],
    done: list[str],
) -> None:
    found, mine = [batch(s) for s in listing], batch(ours)
    assert specs(to_judge(found, mine)) == judge
    plan = plan_group(found, 9, mine, verdicts)
    assert (specs(plan.group), specs(plan.done), plan.highest) == (group, done, 9)
    assert sum(b.seq == mine.seq for b in plan.group) == 1  # ours exactly once
    assert len({b.batch_id for b in plan.group}) == len(plan.group)  # no id applied twice


def test_verdicts_for_batches_not_to_be_judged_are_ignored() -> None:
    """Only :func:`to_judge`'s batches are decided by their claims: a verdict for our own older
    enqueue or for a later enqueue of another id does not bring either into the group."""
    found, mine = [batch(s) for s in ("1:b", "2:a", "3:a", "4:b")], batch("4:b")
    plan = plan_group(found, 4, mine, {1: U, 2: U, 3: U})
    assert specs(plan.group) == ["2:a", "4:b"]


G = [batch(s) for s in ("1:a", "2:b", "3:c")]


@pytest.mark.parametrize(
    ("consumed", "old", "new", "rebase"),
    [
        ([("x",)], G, G, True),  # same group, one publish of another batch since
        ([("a",), ("y",)], G, G[1:], True),  # a left out: consumed by a publish since
        ([("y",)], G, G[1:], False),  # a left out for another reason: still in the last build
        ([("a",), None], G, G[1:], False),  # a publish without a log entry
        ([None], G, G, False),
        ([], G, G, False),  # no publish since (or no change set walk): nothing to rebase on
        ([("b", "a")], G, [G[2]], True),  # a group publish consumed two of ours
    ],
)
def test_rebase_or_rebuild(
    consumed: list[tuple[str, ...] | None],
    old: list[PendingBatch],
    new: list[PendingBatch],
    rebase: bool,
) -> None:
    assert rebase_or_rebuild(consumed, old, new) is rebase
