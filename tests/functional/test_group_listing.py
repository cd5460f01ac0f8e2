"""Group commit with waiters that enqueue by listing (ADR 0013), on the embedded server with real
ChromaDB: each batch's intermediates are downloaded once per publish, and bytes that change after
their batch was enqueued are never applied under the listing it was enqueued by."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import FinalMergeRequest, Keys
from snapmerge.errors import MergeInputError
from snapmerge.group_commit import WITHDRAWN, PendingQueue
from snapmerge.two_phase import TwoPhaseFinalMerge
from tests.conftest import AwsEnv
from tests.functional import test_group_commit
from tests.functional.merge_rig import DB, Rig, make_rig
from tests.functional.test_group_commit import (
    History,
    batch_rows,
    builder_waiting_for,
    enqueued,
    run_crowd,
    violations,
    wait_for,
)
from tests.functional.test_group_commit import group_settings as group_settings_of_commit


@pytest.fixture
def rig(aws: AwsEnv, tmp_path: Path) -> Rig:
    return make_rig(aws.bucket, aws.table, tmp_path)


def listing_settings() -> dict[str, Any]:
    return {**group_settings_of_commit(), "enqueue_by_listing": True}


@pytest.fixture(autouse=True)
def by_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every two-phase execution of these histories enqueues by listing (off by default)."""
    monkeypatch.setattr(test_group_commit, "group_settings", listing_settings)


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every intermediate object downloaded, by key, across every execution of the test."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    original = S3BlobStore.download_file

    def counting(self: S3BlobStore, key: str, path: Path, **kw: Any) -> None:
        if key.startswith("intermediate/"):
            with lock:
                seen[key] += 1
        original(self, key, path, **kw)

    monkeypatch.setattr(S3BlobStore, "download_file", counting)
    return seen


def test_a_crowd_downloads_each_intermediate_once(rig: Rig, downloads: Counter[str]) -> None:
    """Before, every waiter downloaded its own intermediates to digest them before it enqueued,
    and the builder downloaded them again: twice per carried batch."""
    h = History(rig)
    names = [f"n{i}" for i in range(4)]
    objects = set()
    for i, name in enumerate(names):
        h.batch(name, i)
        for key in h.requests[name].intermediate_keys:
            objects.update(rig.blobs.list(key))
    run_crowd(h, names)

    assert h.errors == {}
    assert violations(h) == []
    (publish,) = h.chain()
    assert publish.consumed == tuple(names)
    assert objects and set(downloads) == objects  # every object of every batch was read ...
    assert set(downloads.values()) == {1}  # ... once, by the builder
    for name in names:  # the digest each receipt and claim records is still the content's
        claims = rig.store.log.claims(name)
        assert [c.inputs_digest for c in claims] == [publish.inputs_of(name)]
        assert publish.inputs_of(name) and not publish.inputs_of(name).startswith("listing:")
        receipt = rig.receipt(name)
        assert receipt is not None and receipt["inputs_digest"] == publish.inputs_of(name)
    # every claim records the listing its batch was enqueued by, the builder's own too (so a
    # pending object left by a crash after the swap is recognised as published)
    claims = [c for n in names for c in rig.store.log.claims(n)]
    assert len(claims) == 4 and all(c.listing.startswith("listing:") for c in claims)


def test_bytes_changed_after_their_batch_was_enqueued_are_not_applied(rig: Rig) -> None:
    """The builder finds the waiter's listing changed and leaves its batch out; the waiter,
    building next, refuses it with an error that says why. Neither the bytes it enqueued nor
    the new ones are published under its id."""
    h = History(rig)
    h.batch("x0", 0)
    h.batch("x1", 1)
    taken = threading.Event()
    wait_two = builder_waiting_for(rig, 2, taken)

    def overwrite_then_build(step: str) -> None:
        wait_two(step)
        if step == "builder" and "x1" not in h.errors and not overwritten:
            rig.batch("x1", [batch_rows(9)])  # the producer writes other bytes, same keys
            overwritten.append(True)

    overwritten: list[bool] = []
    first = h.start("x0", hooks=overwrite_then_build)
    taken.wait(60)
    second = h.start("x1")
    for t in (first, second):
        t.join(120)

    assert overwritten == [True]  # the fault fired, after x1 had enqueued
    assert "x0" not in h.errors and h.results["x0"].consumed_batches == ("x0",)
    error = h.errors["x1"]
    assert isinstance(error, MergeInputError)
    assert "changed after it was enqueued" in str(error) and "new batch id" in str(error)
    assert violations(h, expect={"x0"}) == []
    assert [e.consumed for e in h.chain()] == [("x0",)]
    assert rig.store.log.claims("x1") == [] and rig.receipt("x1") is None
    found, _ = PendingQueue(rig.blobs, DB).listing()
    assert [b.state for b in found if b.batch_id == "x1"] == [WITHDRAWN]


def test_a_waiter_whose_batch_another_path_published_answers_by_digest(rig: Rig) -> None:
    """A claim without a listing (legacy's own claim) cannot be judged by the listing: the
    execution fetches, digests and answers with that publish; it publishes nothing."""
    h = History(rig)
    h.batch("d0", 0)
    request = h.requests["d0"]
    seen: list[str] = []

    def legacy_publishes_once_enqueued(step: str) -> None:
        seen.append(step)
        if step == "enqueued":
            done = rig.merger("legacy").run(request, defer_cleanup=True)
            assert done.version is not None
            assert rig.store.log.claims("d0")[0].listing == ""

    t = h.start("d0", hooks=legacy_publishes_once_enqueued)
    t.join(120)

    assert h.errors == {}
    result = h.results["d0"]
    (publish,) = h.chain()  # no second publish of d0
    assert publish.path == "legacy" and result.version == publish.version and result.replayed
    assert "after_fetch" in seen  # only the digest could judge legacy's claim
    assert len(rig.blobs.list(Keys.claims_prefix(DB, "d0"))) == 1


def test_a_batch_answered_by_digest_leaves_no_pending_object_behind(rig: Rig) -> None:
    """Its pending object names it by listing only, and the claim that published it (legacy's)
    records none: no builder can judge it (unjudged, never planned done) and gc cannot match it
    to the claim. Before, it stayed pending for good, and every builder after read its claims."""
    h = History(rig)
    h.batch("s0", 0)
    h.batch("s1", 1)
    request = h.requests["s0"]

    def legacy_publishes_once_enqueued(step: str) -> None:
        if step == "enqueued":
            rig.merger("legacy").run(request, defer_cleanup=True)

    h.start("s0", hooks=legacy_publishes_once_enqueued).join(120)
    assert h.errors == {} and h.results["s0"].replayed
    h.start("s1").join(120)  # a later publish: its builder plans with s0's pending object

    assert h.errors == {}
    assert violations(h) == []
    assert [e.consumed for e in h.chain()] == [("s0",), ("s1",)]
    found, _ = PendingQueue(rig.blobs, DB).listing()
    assert [b.seq for b in found if b.batch_id == "s0"] == []


def test_a_batch_published_and_cleaned_up_while_its_builder_fetched_is_answered(
    rig: Rig,
) -> None:
    """A duplicate on the legacy path publishes the batch and deletes its intermediates between
    our fetch's receipt check and its listing check: the listing changed because the batch was
    published, and the answer is that publish, not an error that says the inputs changed."""
    h = History(rig)
    h.batch("c0", 0)
    request = h.requests["c0"]
    merger = rig.merger("two_phase", **listing_settings())
    assert isinstance(merger, TwoPhaseFinalMerge)
    kit = merger.kit
    original = kit.inputs
    fired: list[bool] = []

    def inputs_then_duplicate_finishes(req: FinalMergeRequest, sources: list[Path]) -> Any:
        got = original(req, sources)
        if not fired:
            fired.append(True)
            rig.merger("legacy").run(request)  # receipt, then its intermediates deleted
        return got

    kit.inputs = inputs_then_duplicate_finishes  # type: ignore[method-assign]
    result = merger.run(request)

    assert fired == [True]
    (publish,) = h.chain()
    assert publish.path == "legacy"
    assert result.replayed and result.version == publish.version
    assert rig.blobs.list("intermediate/c0/") == []


def test_a_reused_id_published_elsewhere_meanwhile_is_not_kept_by_a_rebase(rig: Rig) -> None:
    """x (enqueued by listing) is in a builder's group when another run of id x, other bytes,
    publishes (two-phase without group commit: it leaves a change set). The builder's CAS loses;
    at the new base x's claim names other inputs, so x is left out. The change sets may bring the
    last build up to the new base only if every batch left out was consumed since with the same
    inputs: here the last build holds x's other bytes, and a rebase published them under no
    claim (the ids only they wrote stayed in the snapshot)."""
    h = History(rig)
    h.batch("x", 2)  # what the waiter enqueued
    h.batch("y", 3)
    ours = h.writes["x"]
    theirs = batch_rows(1)
    other = replace(rig.batch("x-other", [theirs]), batch_id="x")
    release = threading.Event()

    def stay_enqueued(step: str) -> None:
        if step == "enqueued":
            release.wait(120)

    def the_other_run_publishes(step: str) -> None:
        if step == "after_claims" and not published:
            run = rig.merger("two_phase", group_commit=False).run
            published.append(run(other, defer_cleanup=True))

    published: list[Any] = []
    waiter = h.start("x", hooks=stay_enqueued)
    wait_for(lambda: enqueued(rig, "x"), "x enqueued")
    h.start("y", hooks=the_other_run_publishes).join(120)
    release.set()
    waiter.join(120)

    assert published and published[0].version is not None
    assert "y" not in h.errors
    assert isinstance(h.errors.get("x"), MergeInputError)  # a batch id names one set of inputs
    assert [e.consumed for e in h.chain()] == [("x",), ("y",)]
    h.writes["x"] = theirs
    assert ours != theirs
    assert violations(h) == []


def test_a_batch_with_no_intermediates_is_refused_and_never_carried(rig: Rig) -> None:
    """An empty key list has a listing (of nothing) but no inputs: enqueued by it, a builder
    fetched nothing, claimed the batch and published it as a no-op, and the execution answered
    with that publish; alone, the same request was refused. It is refused either way now."""
    h = History(rig)
    h.batch("e0", 0)
    h.writes["empty"] = []
    h.requests["empty"] = FinalMergeRequest(batch_id="empty", database=DB, intermediate_keys=())
    taken = threading.Event()

    def build_once_it_enqueued_or_failed(step: str) -> None:
        if step == "builder" and not taken.is_set():
            taken.set()
            wait_for(lambda: enqueued(rig, "empty") or "empty" in h.errors, "the empty batch")

    first = h.start("e0", hooks=build_once_it_enqueued_or_failed)
    taken.wait(60)
    second = h.start("empty")
    for t in (first, second):
        t.join(120)

    assert "e0" not in h.errors
    error = h.errors["empty"]
    assert isinstance(error, MergeInputError) and "no intermediates" in str(error)
    assert [e.consumed for e in h.chain()] == [("e0",)]
    assert rig.store.log.claims("empty") == [] and rig.receipt("empty") is None
