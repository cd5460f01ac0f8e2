"""Scripted histories for the failures of issue 10, one builder per failure, either path.

Each builder returns a plan (the workers, batches and the fault, as the random generator makes
them) and a :class:`Script` that forces the one interleaving that exposes the failure. Every
batch here rewrites ALL seed records, so a batch applied again after a later one visibly reverts
the later one's writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from snapmerge import synth
from snapmerge.domain import Database, Keys, MergePath, Record
from snapmerge.group_commit import PENDING, pending_prefix
from snapmerge.ports import BlobStore
from tests.concurrency.choreography import Script, do, signal, wait
from tests.concurrency.generator import DIMENSION, SEED_RECORDS, BatchPlan, HistoryPlan, WorkerPlan
from tests.concurrency.nemesis import Fault

DB = Database.WORDS
# More later publishes than retention keeps (4) plus one: the crashed publish's manifest is gone
# from the bucket by the time the retry looks for it.
LATER_PUBLISHES = 6


def _other(path: MergePath) -> MergePath:
    return MergePath.LEGACY if path is MergePath.TWO_PHASE else MergePath.TWO_PHASE


def _seed(seed: int) -> tuple[Record, ...]:
    return tuple(synth.records(seed, SEED_RECORDS, DIMENSION, id_prefix="seed-"))


def _batch(
    seed: int, k: int, seed_rows: tuple[Record, ...], batch_id: str, path: MergePath
) -> BatchPlan:
    """Two new ids, and a rewrite of every seed record (half of them re-embedded)."""
    fresh = synth.records(seed + 7 * k, 2, DIMENSION, id_prefix=f"k{k}-")
    rewrites = synth.overwrite(seed_rows, seed=seed + 1000 * k, fraction=1.0, vector_fraction=0.5)
    return BatchPlan(batch_id, path, (tuple([*fresh, *rewrites]),))


def _plan(seed: int, seed_rows: tuple[Record, ...], batches: list[BatchPlan]) -> HistoryPlan:
    workers = tuple(WorkerPlan(w, (b,)) for w, b in enumerate(batches))
    return HistoryPlan(-10, seed, seed_rows, workers, Fault.NONE, 0)


def crash_after_swap_then_many_publishes(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #1: worker 0 (on ``path``) crashes between its pointer swap and its receipt;
    six later batches publish one after another; only then does the crashed batch retry."""
    seed = 10_001
    rows = _seed(seed)
    batches = [_batch(seed, 0, rows, "crashed", path)]
    batches += [
        _batch(seed, k, rows, f"later-{k}", _other(path) if k % 2 else path)
        for k in range(1, LATER_PUBLISHES + 1)
    ]
    plan = _plan(seed, rows, batches)
    plan = HistoryPlan(plan.index, seed, rows, plan.workers, Fault.CRASH_AFTER_SWAP, victim=0)
    script = Script()
    script.at(0, "after_swap", signal("swapped"))
    script.at(0, "retry", wait(f"done-{LATER_PUBLISHES}"))
    for k in range(1, LATER_PUBLISHES + 1):
        script.at(k, "start", wait("swapped" if k == 1 else f"done-{k - 1}"))
        script.at(k, "done", signal(f"done-{k}"))
    return plan, script


def concurrent_duplicates(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #2: batch A runs twice at once (a redelivery) on ``path``: the duplicate passes
    its replay check and fetches the intermediates before the original publishes and cleans up.

    Two-phase: the duplicate then waits (holding no lock) while the original and a batch B
    publish, and its CAS loss rebases it onto B: ``A, B, A`` unless the rebase re-checks. With
    group commit it stops once enqueued (after its fetch; or before any, when it enqueues by
    listing, ADR 0013), and when it resumes its intermediates are gone.
    Legacy: the duplicate waits for the lock the original holds, takes it between the original's
    release and its clean-up, and builds on the original's publish: ``A, A``.
    """
    seed = 10_002
    rows = _seed(seed)
    a = _batch(seed, 0, rows, "dup", path)
    b = _batch(seed, 1, rows, "between", _other(path))
    plan = _plan(seed, rows, [a, a, b])
    script = Script()
    if path is MergePath.TWO_PHASE:
        script.at(1, "enqueued", signal("duplicate-fetched"), wait("between-done"))
        script.at(0, "before_swap", wait("duplicate-fetched"))
        script.at(0, "done", signal("original-done"))
        script.at(2, "start", wait("original-done"))
    else:
        script.at(1, "acquire", signal("duplicate-past-replay"))
        script.at(0, "before_swap", wait("duplicate-past-replay"))
        script.at(0, "after_receipt", wait("duplicate-fetched"))
        script.at(1, "after_fetch", signal("duplicate-fetched"))
        # a core that answers the duplicate from its claim never fetches: release the original
        script.at(1, "done", signal("duplicate-fetched"), signal("duplicate-done"))
        script.at(2, "start", wait("duplicate-done"))
    script.at(2, "done", signal("between-done"))
    return plan, script


def delete_pointer(blobs: BlobStore) -> None:
    """Somebody (a lifecycle rule, a hand, a role allowed to) deletes the pointer object."""
    blobs.delete([Keys.pointer(DB)])


def pointer_deleted(path: MergePath, *, mid_run: bool) -> tuple[HistoryPlan, Script]:
    """Issue 10 #3: the pointer vanishes while complete versions exist — before batch B starts,
    or while B is in flight (between its upload and its swap)."""
    seed = 10_003
    rows = _seed(seed)
    plan = _plan(
        seed,
        rows,
        [_batch(seed, 0, rows, "before", _other(path)), _batch(seed, 1, rows, "after", path)],
    )
    script = Script()
    script.at(0, "done", signal("before-done"))
    if mid_run:
        script.at(1, "start", wait("before-done"))
        script.at(1, "after_upload", do(delete_pointer))
    else:
        script.at(1, "start", wait("before-done"), do(delete_pointer))
    return plan, script


def reused_batch_id(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #4: batch id ``r`` publishes; later a different set of inputs arrives under the
    same id (uploaded only then, as a new workflow would)."""
    seed = 10_004
    rows = _seed(seed)
    first = _batch(seed, 0, rows, "reused", _other(path))
    second = _batch(seed, 1, rows, "reused", path)
    plan = _plan(seed, rows, [first, BatchPlan(second.batch_id, path, second.chunks, True)])
    script = Script()
    script.at(0, "done", signal("first-done"))
    script.at(1, "start", wait("first-done"))
    return plan, script


def other_collections_intermediate(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #5: a ``words`` final merge whose intermediate holds a ``receipt_lines`` index."""
    seed = 10_005
    rows = _seed(seed)
    good = _batch(seed, 0, rows, "words-batch", _other(path))
    bad = _batch(seed, 1, rows, "lines-chunk", path)
    plan = _plan(seed, rows, [good, replace(bad, collection="receipt_lines")])
    script = Script()
    script.at(0, "done", signal("words-done"))
    script.at(1, "start", wait("words-done"))
    return plan, script


PREFIX_SHARING_IDS = ("p", "p-group-7", "p/x")


def prefix_sharing_ids(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #6: ``p`` finishes (on ``path``) while ``p-group-7`` and ``p/x`` wait to run."""
    seed = 10_006
    rows = _seed(seed)
    paths = (path, _other(path), path)
    plan = _plan(
        seed,
        rows,
        [_batch(seed, k, rows, b, paths[k]) for k, b in enumerate(PREFIX_SHARING_IDS)],
    )
    script = Script()
    script.at(0, "done", signal("p-done"))
    script.at(1, "start", wait("p-done"))
    script.at(2, "start", wait("p-done"))
    return plan, script


def version_collision(path: MergePath) -> tuple[HistoryPlan, Script]:
    """Issue 10 #7: two builds get the same version id (the test forces the id generator); the
    second (on ``path``) starts only after the first has published that id."""
    seed = 10_007
    rows = _seed(seed)
    plan = _plan(
        seed,
        rows,
        [_batch(seed, 0, rows, "first", _other(path)), _batch(seed, 1, rows, "second", path)],
    )
    script = Script()
    script.at(0, "done", signal("first-done"))
    script.at(1, "start", wait("first-done"))
    return plan, script


Builder = Callable[[MergePath], tuple[HistoryPlan, Script]]


# -- group commit (issue 12) ----------------------------------------------------------------------
GROUP = ("g0", "g1", "g2")


def group_builder_fault(
    fault: Fault, *, legacy_between: bool = False, redelivered: bool = False
) -> tuple[HistoryPlan, Script]:
    """Worker 0 takes the group-commit builder marker and holds it until workers 1 and 2 have
    enqueued (they then wait for it); ``fault`` hits worker 0 as that builder. Optionally a
    legacy worker publishes while worker 0 builds (``legacy_between``), and a redelivery of
    g1's batch runs once everyone else is done (``redelivered``: a retry of a consumed batch)."""
    seed = 10_012
    rows = _seed(seed)
    batches = [_batch(seed, k, rows, b, MergePath.TWO_PHASE) for k, b in enumerate(GROUP)]
    if legacy_between:
        batches.append(_batch(seed, 3, rows, "legacy", MergePath.LEGACY))
    if redelivered:
        batches.append(batches[1])
    plan = _plan(seed, rows, batches)
    plan = HistoryPlan(plan.index, seed, rows, plan.workers, fault, victim=0)
    script = Script()
    script.at(0, "builder", signal("building"), wait("enqueued-1"), wait("enqueued-2"))
    for k in (1, 2):
        script.at(k, "start", wait("building"))
        script.at(k, "enqueued", signal(f"enqueued-{k}"))
    if legacy_between:
        script.at(0, "after_build", signal("built"), wait("legacy-done"))
        script.at(3, "start", wait("built"))
        script.at(3, "done", signal("legacy-done"))
    if redelivered:
        last = len(batches) - 1
        for k in range(last):
            script.at(k, "done", signal(f"done-{k}"))
        script.at(last, "start", *(wait(f"done-{k}") for k in range(last)))
    return plan, script


def reapplied_consumed() -> tuple[HistoryPlan, Script]:
    """For the negative control: g0 builds g0 + g1; g1's pending object (the highest number)
    stays, as it must; its intermediates are put back (same bytes) before g2 runs, so a builder
    that skips the claims check of other batches applies g1 a second time.

    g1's pending object is put back as it was enqueued (``pending``), too: g0 marks it
    ``published`` after its swap, and a builder that trusts the mark never asks g1's claims, so
    the control would show nothing. A publisher that dies between its swap and that mark (or
    whose mark PUT fails: it is best effort) leaves exactly this, and then the claims check is
    all that stands between g1 and a second apply."""
    seed = 10_013
    rows = _seed(seed)
    batches = [_batch(seed, k, rows, b, MergePath.TWO_PHASE) for k, b in enumerate(GROUP)]
    plan = _plan(seed, rows, batches)
    saved: dict[str, bytes] = {}
    prefix = "intermediate/g1/"
    pending = pending_prefix(DB)

    def save(blobs: BlobStore) -> None:
        for key in blobs.list(prefix):
            blob = blobs.get(key)
            assert blob is not None
            saved[key] = blob.body

    def save_pending(blobs: BlobStore) -> None:  # g1's pending object, before any mark
        for key in blobs.list(pending):
            blob = blobs.get(key)
            if blob is not None and json.loads(blob.body)["batch_id"] == "g1":
                assert json.loads(blob.body)["state"] == PENDING
                saved[key] = blob.body

    def restore(blobs: BlobStore) -> None:
        for key, body in saved.items():
            blobs.put(key, body)

    script = Script()
    script.at(0, "start", do(save))
    script.at(0, "builder", signal("building"), wait("enqueued-1"))
    script.at(1, "start", wait("building"))
    script.at(1, "enqueued", do(save_pending), signal("enqueued-1"))
    script.at(0, "done", signal("done-0"))
    script.at(1, "done", signal("done-1"))
    script.at(2, "start", wait("done-0"), wait("done-1"), do(restore))
    return plan, script
