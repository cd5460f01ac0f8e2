"""The group-commit publish of the two-phase path: enqueue, then wait for a live builder or build.

    enqueue ─► loop: a live builder (marker moving)?      ─► our batch published at the
                     │                                      pointer? answer with that publish;
                     │                                      else wait (bounded by ``group_wait``)
                     else take the marker (once the wait  ─► build (``group_publish``: its plan
                     is over: build without it)              asks the same at its base), then answer
    after the publish: the other batches' receipts, their intermediates, the pending objects

Where the rest lives: the pending queue in ``group_commit``, the builder marker and its heartbeat
in ``builder_slot``, the decisions in ``group_plan`` (pure), the builder's rounds in
``group_publish``, the local build in ``group_build``. See docs/adr/0008-group-commit.md.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from snapmerge.builder_slot import BUILDING, BuilderSlot, Watch, new_owner, poll_delay
from snapmerge.built import BuiltVersion
from snapmerge.change_sets import prune_changes
from snapmerge.domain import FinalMergeRequest, Pointer
from snapmerge.errors import MergeInputError, SnapshotError
from snapmerge.exactly_once import DigestNeeded, Replay, receipt_payload
from snapmerge.group_build import Ours, fetch_ours
from snapmerge.group_commit import PENDING, PendingQueue
from snapmerge.group_plan import Step, next_step
from snapmerge.group_publish import GroupBuilder, GroupOutcome

if TYPE_CHECKING:
    from snapmerge.lock_meter import LockMeter
    from snapmerge.two_phase import TwoPhaseFinalMerge

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiter reads the builder marker (and the pointer)


class GroupCommit:
    """One execution's part in the group commit of its collection."""

    def __init__(self, path: TwoPhaseFinalMerge, rng: random.Random | None = None) -> None:
        self.path = path
        self.kit = path.kit
        self._rng = rng or random.Random()

    def publish(
        self,
        request: FinalMergeRequest,
        sources: list[Path] | None,
        inputs: str,
        work: Path,
        meter: LockMeter,
        listing: str = "",
    ) -> GroupOutcome:
        """Enqueue our batch; answer with the publish that carried it, ours or a builder's.

        ``sources`` None: nothing fetched yet, the batch is enqueued by ``listing`` (and fetched
        only if this execution builds, or must judge a claim the listing cannot).
        """
        kit, db = self.kit, request.database
        settings = kit.settings
        store, queue = kit.store(db), PendingQueue(kit.blobs, db)
        slot = BuilderSlot(kit.blobs, db)
        pending = queue.enqueue(request, inputs, listing)
        ours = Ours(request, pending, sources, inputs, work, listing)
        kit.hook("enqueued")
        owner = new_owner()
        deadline = time.monotonic() + settings.group_wait.total_seconds()
        watch = Watch(settings.group_stale.total_seconds())
        poll = min(POLL_S, settings.group_beat.total_seconds())
        seen: Pointer | bool | None = False  # the pointer at our last look (False: none yet)
        asked_at: Pointer | None = None  # a pointer our batch was not published at
        waited = False  # a live builder was at work while we looked
        try:
            while True:
                marker = slot.read()
                late = time.monotonic() >= deadline
                live = marker is not None and marker.state == BUILDING and not watch.dead(marker)
                step = next_step(live, late)
                if step is Step.WAIT or (step is Step.TAKE and waited):
                    # At the first look, after each publish, and when the builder we waited for
                    # has stopped: is ours in the pointer? (A builder asks the same at its
                    # phase-1 base, so one that goes straight to building does not ask here too;
                    # one that waited asks before it takes the marker, or it would pay a lock,
                    # a base and a plan to learn what one pointer read tells.)
                    pointer = store.read_pointer()
                    if pointer != seen:
                        asked = self._published_at(ours, pointer)
                        if isinstance(asked, Replay):
                            return self._answered(queue, ours, GroupOutcome(asked))
                        ours = asked
                        seen = asked_at = pointer
                if step is Step.WAIT:
                    waited = True
                    self.path._sleep(poll_delay(self._rng, poll))
                    continue
                etag = slot.take(owner, marker) if step is Step.TAKE else None
                if etag is None and step is Step.TAKE:  # someone else took it: look again
                    self.path._sleep(poll_delay(self._rng, poll / 5))
                    continue
                out = GroupBuilder(self.path, asked_at).run(ours, meter, slot, owner, etag)
                return self._answered(queue, ours, out)
        except MergeInputError:
            queue.withdraw(ours.pending)  # bad inputs: no builder should try them again
            raise

    @staticmethod
    def _answered(queue: PendingQueue, ours: Ours, out: GroupOutcome) -> GroupOutcome:
        """``out``; if it answers with an earlier publish of our batch and our pending object
        names it by listing alone, that object is forgotten here. The claim that published it
        may record no listing (legacy's, a fetch-first builder's own) or another one: then no
        builder can judge the object (it stays unjudged, never planned done) and gc cannot match
        it to the claim, so it would stay pending for good, its claims read by every builder."""
        pending = ours.pending
        listing_only = pending.state == PENDING and not pending.inputs_digest
        if isinstance(out.outcome, Replay) and listing_only:
            queue.settle(pending)
        return out

    def _published_at(self, ours: Ours, pointer: Pointer | None) -> Ours | Replay:
        """Our batch's publish at ``pointer`` (its replay), or ``ours`` (fetched, if a claim
        there could be judged only by the content digest)."""
        try:
            prior = self.kit.already_published(ours.request, ours.ident, pointer)
        except DigestNeeded:
            fetched = fetch_ours(self.kit, ours)
            if isinstance(fetched, Replay):
                return fetched
            ours = fetched
            prior = self.kit.already_published(ours.request, ours.ident, pointer)
        return ours if prior is None else prior

    # -- after the publish ---------------------------------------------------------------------
    def finish_others(self, request: FinalMergeRequest, out: GroupOutcome, cleanup: bool) -> None:
        """Receipts of every other batch we published, then their intermediates (exact keys),
        then the pending objects of published batches (never the highest number listed)."""
        if not isinstance(out.outcome, BuiltVersion):
            return
        db = request.database
        store = self.kit.store(db)
        manifest = out.outcome.manifest
        others = [b for b in out.group if b.batch_id != request.batch_id]
        for batch in others:
            try:
                store.write_receipt(batch.batch_id, receipt_payload(manifest, batch.request(db)))
            except SnapshotError:
                log.warning("batch %s already has another receipt", batch.batch_id)
        if cleanup:
            for batch in others:
                self.kit.delete_intermediates(batch.request(db))
        PendingQueue(self.kit.blobs, db).forget([*out.group, *out.done], out.highest)
        prune_changes(self.kit, db)
