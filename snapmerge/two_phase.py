"""The two-phase final merge: the lock only around a pointer read and a pointer swap (DESIGN §2).

    replay? (receipt; then, after the fetch, inputs digest vs receipt)
    phase 1 (lock) ── read pointer + ETag (none: refuse, or opted in the published top) ── release
    off the lock   ── pin base ─ base complete? ─ already published here? (replay)
    phase 2 (none) ── build on the base ─ validate ─ upload to a fresh prefix
    phase 3 (lock) ── lease.verify ─ pointer CAS (If-Match: phase-1 ETag) ── release
                          │ refused (someone published since phase 1)
                          └─► discard our upload, back off, phase 1 again, REBASE (same
                              intermediates onto the new base), phase 3 again … after
                              ``max_rebases`` refusals: the legacy algorithm, ``fallback``
                              (the lock held across the whole merge).

The lock only keeps writers from wasting work; the conditional pointer write is what keeps a
publish from overwriting another (and what refuses a holder whose lease lapsed after its
``verify``). A refused CAS is never a skip: nothing redelivers a skipped batch.

Every step is a :class:`~snapmerge.merging.MergeKit` step, as in the legacy path; the two paths
differ only in where the lock is held.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from snapmerge.built import BuiltVersion, make_result
from snapmerge.change_sets import prune_changes, rebase_build, upload_with_changes
from snapmerge.domain import (
    FinalMergeRequest,
    FinalMergeResult,
    MergePath,
    Pointer,
    VersionId,
)
from snapmerge.errors import MergeInputError, PointerConflictError, SnapshotError
from snapmerge.exactly_once import Replay, inputs_listing, receipt_payload
from snapmerge.group_merge import GroupCommit
from snapmerge.lock_meter import LockMeter
from snapmerge.locked_merge import LockedMerge
from snapmerge.merging import MergeKit


class TwoPhaseFinalMerge:
    """``run`` publishes; ``dry_run`` computes the result on a given base and writes nothing.

    ``fallback`` is the legacy locked merge, run after ``max_rebases`` lost CASes.
    """

    path = MergePath.TWO_PHASE

    def __init__(
        self,
        kit: MergeKit,
        *,
        fallback: LockedMerge,
        max_rebases: int = 3,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 1.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_rebases < 0:
            raise ValueError("max_rebases must be >= 0")
        self.kit = kit
        self.fallback = fallback
        self.max_rebases = max_rebases
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = rng or random.Random()
        self._sleep = sleep

    # -- the published path --------------------------------------------------------------------
    def run(self, request: FinalMergeRequest, *, defer_cleanup: bool = False) -> FinalMergeResult:
        early = self.kit.replay(request)
        if early is not None:
            return self.kit.finish_replay(request, early, cleanup=not defer_cleanup)
        started = time.monotonic()
        meter = LockMeter()
        with self.kit.workspace() as work:
            listing = self._listing(request)
            if listing is not None:  # group commit: enqueue now, fetch only if we build
                return self._group(
                    request, None, "", work, meter, started, defer_cleanup, listing=listing
                )
            got = self.kit.fetch_inputs(request, work / "sources")
            if isinstance(got, Replay):
                return self.kit.finish_replay(request, got, cleanup=not defer_cleanup)
            fetched, inputs = got
            if self.kit.settings.group_commit:
                return self._group(request, fetched, inputs, work, meter, started, defer_cleanup)
            outcome, failures, fallback = self._publish(request, fetched, inputs, work, meter)
        if isinstance(outcome, Replay):
            return self.kit.finish_replay(request, outcome, cleanup=not defer_cleanup)
        stats = meter.stats(failures, fallback)
        result = make_result(request, outcome, self.path, started=started, lease_stats=stats)
        receipt = receipt_payload(outcome.manifest, request)
        lost = self.kit.finish(request, result, cleanup=not defer_cleanup, receipt=receipt)
        prune_changes(self.kit, request.database)
        return replace(result, lost_publishes=lost)

    def _listing(self, request: FinalMergeRequest) -> str | None:
        """With group commit and ``enqueue_by_listing`` (off by default), the listing our batch
        is enqueued by before anything is fetched (docs/adr/0013): a waiter then downloads
        nothing that its builder downloads again.

        None (fetch first) when the option is off, an intermediate has no object (the
        fetch raises, or replays a duplicate's finished publish) or a receipt of this batch is
        there beside its intermediates (only the digest can tell a crash before clean-up from a
        reused batch id).
        """
        settings = self.kit.settings
        if not (settings.group_commit and settings.enqueue_by_listing):
            return None
        if self.kit.store(request.database).read_receipt(request.batch_id) is not None:
            return None
        return inputs_listing(self.kit.blobs, request)

    def _group(
        self,
        request: FinalMergeRequest,
        sources: list[Path] | None,
        inputs: str,
        work: Path,
        meter: LockMeter,
        started: float,
        defer_cleanup: bool,
        *,
        listing: str = "",
    ) -> FinalMergeResult:
        """Group commit (ADR 0008): publish every pending batch, or answer with the publish of
        another execution that carried ours, in the same shape plus ``published_by``."""
        group = GroupCommit(self)
        out = group.publish(request, sources, inputs, work, meter, listing)
        stats = meter.stats(out.failures, out.fallback)
        outcome = out.outcome
        assert outcome is not None
        if isinstance(outcome, Replay):
            # timed up to the answer, as a publisher's duration stops at its swap: the receipt,
            # clean-up and lineage check that follow are not the merge (either path's)
            elapsed = round(time.monotonic() - started, 3)
            self.kit.finish_replay(request, outcome, cleanup=not defer_cleanup)
            by = outcome.result.published_by
            if by is None or by == request.batch_id:
                return outcome.result  # a publish of this batch by an earlier run of it
            return replace(  # carried by another execution: its publish, our own figures
                outcome.result,
                replayed=False,
                processing_time_seconds=elapsed,
                wasted_builds=out.wasted,
                **stats,
            )
        result = make_result(request, outcome, self.path, started=started, lease_stats=stats)
        result = replace(
            result,
            consumed_batches=outcome.manifest.consumed,
            published_by=request.batch_id,
            wasted_builds=out.wasted,
        )
        group.finish_others(request, out, cleanup=not defer_cleanup)
        receipt = receipt_payload(outcome.manifest, request)
        lost = self.kit.finish(request, result, cleanup=not defer_cleanup, receipt=receipt)
        return replace(result, lost_publishes=lost)

    def _publish(
        self,
        request: FinalMergeRequest,
        sources: list[Path],
        inputs: str,
        work: Path,
        meter: LockMeter,
    ) -> tuple[BuiltVersion | Replay, int, bool]:
        """Phases 1–3, rebasing on each lost CAS; then the locked fallback. (outcome, losses,
        fell back). At each base, a publish of this batch already there is the outcome."""
        failures = 0
        prev: BuiltVersion | None = None
        for attempt in range(self.max_rebases + 1):
            with ExitStack() as pins:
                try:
                    # each retry is a rebase: phase 1 again, onto what was published meanwhile
                    base = self._phase1(request, meter, pins)
                    prior = self.kit.already_published(request, inputs, base)
                    if prior is not None:
                        return prior, failures, False
                    with self.kit.span("phase2"):
                        dest = work / f"v{attempt}"
                        candidate = self._phase2(request, base, sources, inputs, dest, prev)
                    prev = candidate
                    candidate = self._phase3(request, candidate, meter)
                except PointerConflictError:
                    failures += 1
                    if attempt < self.max_rebases:
                        self._sleep(self._backoff(attempt))
                    continue
            return candidate, failures, False
        outcome, more = self._fallback(request, sources, inputs, work, meter)
        return outcome, failures + more, True

    def _phase1(
        self, request: FinalMergeRequest, meter: LockMeter, pins: ExitStack
    ) -> Pointer | None:
        """Under a short lock: no writer is mid-publish; read the pointer (value and ETag).

        Only the read is under the lock (with no pointer: the checks of ``kit.resolve_base``).
        Then, off it, the base is pinned (an in-flight marker retention spares) and checked to
        be whole. Retention never deletes the pointer's version, so the base can be gone here
        only if the pointer moved on (and enough newer versions were published to push it out)
        in that instant: that is a conflict and we rebase. A pointer that still names a missing
        or incomplete version is a SnapshotError.
        """
        db = request.database
        store = self.kit.store(db)
        with meter.held(self.kit, request, "phase1") as lease:
            lease.check()
            base = self.kit.resolve_base(db)
        pins.enter_context(self.kit.pin_base(db, base))
        try:
            self.kit.check_base(db, base)
        except SnapshotError:
            current = store.read_pointer()
            if current == base or base is None or not base.exists:
                raise
            raise PointerConflictError(store.pointer_key, base.etag, str(current)) from None
        return base

    def _phase2(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        sources: list[Path],
        inputs: str,
        dest: Path,
        prev: BuiltVersion | None = None,
    ) -> BuiltVersion:
        """No lock: build on ``base``, validate, upload (unless the upload belongs to phase 3).

        After a lost CAS (``prev``), the change sets of the publishes since bring ``prev`` up to
        ``base`` when each has one (``snapmerge/change_sets.py``); else the full build. Each
        upload records its own change set before the swap.
        """
        built = None
        if prev is not None and self.kit.settings.change_sets:
            built = rebase_build(
                self.kit, request, prev, base, sources, inputs, (), dest, self.path
            )
        if built is None:
            built = self.kit.build(
                request, base, sources, self.path, dest, inputs=inputs, digest=False
            )
        self._validate(request, built)
        return upload_with_changes(self.kit, request.database, built, sources)

    def _phase3(
        self, request: FinalMergeRequest, built: BuiltVersion, meter: LockMeter
    ) -> BuiltVersion:
        """Under a short lock: verify the lease, then the conditional pointer write.

        Whatever refuses the publish, our upload is an orphan and goes (``discard`` re-reads the
        pointer first, so an ambiguous failure never deletes a version that did land).
        """
        db = request.database
        try:
            with meter.held(self.kit, request, "phase3") as lease:
                self.kit.publish(db, built, lease)
        except BaseException:
            self.kit.discard(db, built)  # never raises: a conflict still reaches the rebase
            raise
        return built

    def _fallback(
        self,
        request: FinalMergeRequest,
        sources: list[Path],
        inputs: str,
        work: Path,
        meter: LockMeter,
    ) -> tuple[BuiltVersion | Replay, int]:
        """After ``max_rebases`` lost CASes: hold the lock across read, build, upload and publish.

        Every writer takes the same collection lock, so the CAS under it only loses to a writer
        outside the lock (a per-batch lock id, a holder racing its expiry); each such loss is
        rebased once more, with the same bound.
        """
        with meter.held(self.kit, request, "fallback") as lease:
            return self.fallback(
                self.kit,
                request,
                lease,
                sources,
                self.path,
                work,
                inputs=inputs,
                max_rebases=self.max_rebases,
                validate=lambda built: self._validate(request, built),
            )

    # -- shadow mode ---------------------------------------------------------------------------
    def dry_run(self, request: FinalMergeRequest, base: VersionId | None) -> FinalMergeResult:
        """Build on exactly ``base`` from the same intermediates; upload and publish nothing.

        No replay check (in shadow mode the legacy publish of this batch already exists) and no
        in-flight marker (that would be a write). The result's ``digest`` is the content digest of
        what a real publish on the same base holds: the one result that is compared with another
        (legacy's, in shadow mode), so the one a two-phase run computes. A publish skips that
        O(snapshot) read, as legacy does unless it is shadowed.
        """
        started = time.monotonic()
        pointer = Pointer(base, etag="") if base is not None else None
        with self.kit.workspace() as work:
            sources = self.kit.fetch_sources(request, work / "sources")
            built = self.kit.build(request, pointer, sources, self.path, work / "dry")
            self._validate(request, built)
        stats = LockMeter().stats(0, False)
        return make_result(request, built, self.path, started=started, lease_stats=stats)

    # -- helpers -------------------------------------------------------------------------------
    def _validate(self, request: FinalMergeRequest, built: BuiltVersion) -> None:
        """Count = base + new unique ids; dimension = the base's (the engine checks both too)."""
        stats = built.stats
        if stats.final_count != stats.base_count + stats.new_ids:
            raise MergeInputError(
                f"batch {request.batch_id}: merged {stats.final_count} records, expected "
                f"{stats.base_count} + {stats.new_ids} new ids"
            )
        base = built.base_manifest
        if base is None:  # no base, or an original-format version: no manifest to compare with
            return
        if base.record_count != stats.base_count:
            raise MergeInputError(
                f"batch {request.batch_id}: base {base.version} holds {stats.base_count} records,"
                f" its manifest says {base.record_count}"
            )
        if base.dimension and stats.dimension != base.dimension:
            raise MergeInputError(
                f"batch {request.batch_id}: dimension {stats.dimension}, base has {base.dimension}"
            )

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(attempt, 20))
        return self._rng.uniform(0.0, ceiling)
