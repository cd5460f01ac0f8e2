"""The group-commit publish of the two-phase path: enqueue, wait for a live builder or build.

    enqueue ─► loop: a live builder (marker moving)?      ─► our batch published at the
                     │                                      pointer? answer with that publish;
                     │                                      else wait (bounded by ``group_wait``)
                     else take the marker                 ─► build as below (its selection asks
                                                             the same at its base), then answer
    build:  phase 1 (short lock: pointer) ─ pending batches not published at that base, in seq
            order ─ fetch theirs ─ build base + all ─ upload ─ claim every batch ─ phase 3 CAS
            (lost: rebase, as the two-phase path; after ``max_rebases``: the legacy
            algorithm, ``path.fallback``, over the group's steps, under the lock)

Exactly once, for every batch of a build: at the base read in phase 1 no claim of any of them is
that base or an ancestor of it (each is checked), each is claimed before the swap, and the CAS
on that base's ETag succeeds only if nothing was published since. See ADR 0008.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from snapmerge.change_sets import ChangeSets, prune_changes, rebase_build, upload_with_changes
from snapmerge.deltas import fetch_delta
from snapmerge.domain import LATEST_DIRECT, Database, FinalMergeRequest, MergePath, Pointer
from snapmerge.errors import MergeInputError, PointerConflictError, SnapshotError, StoreError
from snapmerge.exactly_once import Replay, inputs_digest, prior_publish, receipt_payload
from snapmerge.group_commit import (
    BUILDING,
    PENDING,
    BuilderSlot,
    Heartbeat,
    PendingBatch,
    PendingQueue,
    Watch,
    group_payload,
    local_dir,
    new_owner,
    poll_delay,
)
from snapmerge.lock import Lease
from snapmerge.manifest import EntryState
from snapmerge.merging import BuiltVersion

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from snapmerge.lock_meter import LockMeter
    from snapmerge.two_phase import TwoPhaseFinalMerge

POLL_S = 0.2  # how often a waiter reads the builder marker (and the pointer)


@dataclass
class GroupOutcome:
    """What the group publish ended with, and what this execution spent on the way."""

    outcome: BuiltVersion | Replay | None = None
    failures: int = 0
    fallback: bool = False
    wasted: int = 0
    group: list[PendingBatch] = field(default_factory=list)
    done: list[PendingBatch] = field(default_factory=list)  # seen published or withdrawn
    highest: int = 0
    waited: bool = False


@dataclass
class _Selection:
    group: list[PendingBatch]
    done: list[PendingBatch]
    highest: int


class _LockedGroup:
    """The group's steps for the legacy algorithm (the fallback, under the lock): at each base
    it reads, the selection (our batch published there: its replay; else every pending batch
    not published there, in seq order), the build of them all, the upload with every claim and
    the change set, and a discard that drops those claims. The rest are the kit's."""

    def __init__(self, commit: GroupCommit, request: FinalMergeRequest, mine: PendingBatch):
        self.commit, self.kit, self.request, self.mine = commit, commit.kit, request, mine
        self.chosen: _Selection | None = None
        self.group: list[PendingBatch] = [mine]

    def resolve_base(self, db: Database) -> Pointer | None:
        return self.kit.resolve_base(db)

    def pin_base(self, db: Database, base: Pointer | None) -> AbstractContextManager[None]:
        return self.kit.pin_base(db, base)

    def already_published(
        self, request: FinalMergeRequest, inputs: str, base: Pointer | None
    ) -> Replay | None:
        chosen = self.commit._select(request, self.mine, inputs, base)
        if isinstance(chosen, Replay):
            return chosen
        self.chosen = chosen
        return None

    def build(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        sources: list[Path],
        path: MergePath,
        dest: Path,
        *,
        digest: bool = True,
        inputs: str = "",
    ) -> BuiltVersion:
        assert self.chosen is not None  # already_published selected at this base
        built, self.group = self.commit._make(
            request, base, self.chosen, self.mine, sources, inputs, dest, 0
        )
        return built

    def upload(self, db: Database, built: BuiltVersion) -> BuiltVersion:
        return self.commit._upload(self.request, built, self.group)

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer:
        return self.kit.publish(db, built, lease)

    def discard(self, db: Database, built: BuiltVersion) -> None:
        self.commit._discard(self.request, built, self.group)


class GroupCommit:
    """One execution's part in the group commit of its collection."""

    def __init__(self, path: TwoPhaseFinalMerge, rng: random.Random | None = None) -> None:
        self.path = path
        self.kit = path.kit
        self._rng = rng or random.Random()
        self._fetched: dict[int, list[Path] | None] = {}
        self._unpublished_at: Pointer | None = None  # a pointer our batch was not published at
        self._paths: list[Path] = []  # the sources of the last build, in apply order

    # -- the loop ------------------------------------------------------------------------------
    def publish(
        self,
        request: FinalMergeRequest,
        sources: list[Path],
        inputs: str,
        work: Path,
        meter: LockMeter,
    ) -> GroupOutcome:
        kit, db = self.kit, request.database
        settings = kit.settings
        store, queue = kit.store(db), PendingQueue(kit.blobs, db)
        slot = BuilderSlot(kit.blobs, db)
        mine = queue.enqueue(request, inputs)
        kit.hook("enqueued")
        owner = new_owner()
        deadline = time.monotonic() + settings.group_wait.total_seconds()
        watch = Watch(settings.group_stale.total_seconds())
        poll = min(POLL_S, settings.group_beat.total_seconds())
        seen: Pointer | bool | None = False  # the pointer at our last look (False: none yet)
        waited = False
        try:
            while True:
                marker = slot.read()
                late = time.monotonic() >= deadline
                live = marker is not None and marker.state == BUILDING and not watch.dead(marker)
                if live and not late:
                    # Waiting: at the first look and after each publish, is ours in it? (A
                    # builder asks the same at its phase-1 base, so one that goes straight to
                    # building does not ask here too.)
                    pointer = store.read_pointer()
                    if pointer != seen:
                        prior = kit.already_published(request, inputs, pointer)
                        if prior is not None:
                            return GroupOutcome(prior, waited=waited)
                        seen = self._unpublished_at = pointer
                    waited = True
                    self.path._sleep(poll_delay(self._rng, poll))
                    continue
                etag = None if late else slot.take(owner, marker)
                if etag is None and not late:  # someone else took it: look again
                    self.path._sleep(poll_delay(self._rng, poll / 5))
                    continue
                out = self._build(request, mine, sources, inputs, work, meter, slot, owner, etag)
                out.waited = waited
                return out
        except MergeInputError:
            queue.withdraw(mine)  # bad inputs: no builder should try them again
            raise

    # -- the builder ---------------------------------------------------------------------------
    def _build(
        self,
        request: FinalMergeRequest,
        mine: PendingBatch,
        sources: list[Path],
        inputs: str,
        work: Path,
        meter: LockMeter,
        slot: BuilderSlot,
        owner: str,
        etag: str | None,
    ) -> GroupOutcome:
        with ExitStack() as stack:
            beat = None
            if etag is not None:
                interval = self.kit.settings.group_beat.total_seconds()
                beat = stack.enter_context(Heartbeat(slot, owner, etag, interval))
            self.kit.hook("builder")
            out = GroupOutcome()
            prev: tuple[BuiltVersion, list[PendingBatch]] | None = None
            for attempt in range(self.path.max_rebases + 1):
                uploaded = False
                with ExitStack() as pins:
                    try:
                        base = self.path._phase1(request, meter, pins)
                        self._warm(request, base)
                        chosen = self._select(request, mine, inputs, base)
                        if isinstance(chosen, Replay):
                            out.outcome = chosen
                            return out
                        if beat is not None:
                            beat.cover([b.batch_id for b in chosen.group])
                        with self.kit.span("phase2"):
                            built, group = self._make(
                                request, base, chosen, mine, sources, inputs, work, attempt, prev
                            )
                            built = self._upload(request, built, group)
                        uploaded = True
                        prev = (built, group)
                        built = self._phase3(request, built, group, meter)
                    except PointerConflictError:
                        out.failures += 1
                        out.wasted += int(uploaded)
                        if attempt < self.path.max_rebases:
                            self.path._sleep(self.path._backoff(attempt))
                        continue
                out.outcome, out.group = built, group
                out.done, out.highest = chosen.done, chosen.highest
                return out
            # After max_rebases lost CASes: the legacy algorithm, with the group's steps. Our
            # batch alone would publish before an earlier-enqueued batch still pending, whose
            # own execution then applies it on top: its older write would beat ours.
            steps = _LockedGroup(self, request, mine)
            with meter.held(self.kit, request, "fallback") as lease:
                outcome, more = self.path.fallback(
                    steps,
                    request,
                    lease,
                    sources,
                    self.path.path,
                    work / "fallback",
                    inputs=inputs,
                    max_rebases=self.path.max_rebases,
                    validate=lambda built: self.path._validate(request, built),
                    digest=False,
                )
            out.outcome, out.group = outcome, steps.group
            if isinstance(outcome, BuiltVersion) and steps.chosen is not None:
                out.done, out.highest = steps.chosen.done, steps.chosen.highest
            out.failures += more
            out.wasted += more
            out.fallback = True
            return out

    def _warm(self, request: FinalMergeRequest, base: Pointer | None) -> None:
        """Download the base before listing the pending batches: the executions that started
        with us have that long to enqueue, and the build needs the base anyway."""
        if base is None or not base.exists or base.version == LATEST_DIRECT:
            return
        with suppress(SnapshotError, StoreError):  # the build reads it again and raises
            self.kit.cache(request.database).get(base.version)

    def _select(
        self, request: FinalMergeRequest, mine: PendingBatch, inputs: str, base: Pointer | None
    ) -> _Selection | Replay:
        """Every pending batch not published at ``base``, in seq order; ours always among them.

        Ours published already: its Replay. Another batch whose claims cannot be judged (reused
        id with other inputs, a chain through the original writer's versions) is left to its own
        execution, which raises the error.
        """
        db = request.database
        # Not asked again at the pointer the wait loop just asked at: claims of a version are
        # written before its swap, so none can appear at or below a pointer already read.
        if base is None or base != self._unpublished_at:
            prior = self.kit.already_published(request, inputs, base)
            if prior is not None:
                return prior
        found, highest = PendingQueue(self.kit.blobs, db).listing()
        group: list[PendingBatch] = []
        done: list[PendingBatch] = []
        seen = {request.batch_id}
        for batch in found:
            if batch.batch_id == request.batch_id:
                if batch.seq != mine.seq and batch.state == PENDING:
                    continue  # an older enqueue of this batch (its digest was checked above)
                if batch.seq != mine.seq:
                    done.append(batch)
                continue
            if batch.state != PENDING:
                done.append(batch)
                continue
            if batch.batch_id in seen:
                continue
            seen.add(batch.batch_id)
            try:
                published = prior_publish(
                    self.kit.store(db), batch.request(db), batch.inputs_digest, base
                )
            except (MergeInputError, SnapshotError):
                continue
            if published is not None:
                done.append(batch)
            else:
                group.append(batch)
        group.append(mine)
        group.sort(key=lambda b: b.seq)
        return _Selection(group, done, highest)

    def _make(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        chosen: _Selection,
        mine: PendingBatch,
        sources: list[Path],
        inputs: str,
        work: Path,
        attempt: int,
        prev: tuple[BuiltVersion, list[PendingBatch]] | None = None,
    ) -> tuple[BuiltVersion, list[PendingBatch]]:
        """Build ``base`` + every chosen batch (a batch whose inputs are gone or changed is left
        out); if the group's inputs are bad, our batch alone (its own error is then ours).

        After a lost CAS (``prev``: what we built and uploaded), bring that build up to ``base``
        with the change sets of the publishes since, when every one has one and every batch we
        no longer apply is one of theirs (docs/adr/0008); else build in full.
        """
        group, paths = [], []
        for batch in chosen.group:
            got = sources if batch.seq == mine.seq else self._sources(request, batch, work)
            if got is not None:
                group.append(batch)
                paths.extend(got)
        self._paths = paths
        dest = work / f"g{attempt}"
        if prev is not None:
            rebased = self._rebase(request, base, prev, group, paths, inputs, dest)
            if rebased is not None:
                return rebased, group
        try:
            return self._built(request, base, group, paths, inputs, dest), group
        except MergeInputError:
            if len(group) == 1:
                raise
        self._paths = sources
        return self._built(request, base, [mine], sources, inputs, work / f"a{attempt}"), [mine]

    def _rebase(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        prev: tuple[BuiltVersion, list[PendingBatch]],
        group: list[PendingBatch],
        paths: list[Path],
        inputs: str,
        dest: Path,
    ) -> BuiltVersion | None:
        built, old_group = prev
        if base is None or not self.kit.settings.change_sets:
            return None
        store = self.kit.store(request.database)
        steps = ChangeSets(self.kit.blobs, request.database).path(
            base.version, built.base.version if built.base else None
        )
        if not steps:
            return None
        theirs: set[str] = set()
        for version, _ in steps:
            entry = store.log.entry(version)
            if entry is None:
                return None
            theirs.update(entry.consumed)
        dropped = {b.batch_id for b in old_group} - {b.batch_id for b in group}
        if not dropped <= theirs:
            return None
        rebased = rebase_build(
            self.kit,
            request,
            built,
            base,
            paths,
            inputs,
            group_payload(group),
            dest,
            self.path.path,
        )
        if rebased is not None:
            self.path._validate(request, rebased)
        return rebased

    def _built(
        self,
        request: FinalMergeRequest,
        base: Pointer | None,
        group: list[PendingBatch],
        paths: list[Path],
        inputs: str,
        dest: Path,
    ) -> BuiltVersion:
        built = self.kit.build(
            request, base, paths, self.path.path, dest, inputs=inputs, digest=False
        )
        built = replace(built, manifest=replace(built.manifest, batches=group_payload(group)))
        self.path._validate(request, built)
        return built

    def _sources(
        self, request: FinalMergeRequest, batch: PendingBatch, work: Path
    ) -> list[Path] | None:
        """Another batch's intermediates, fetched once; None if gone or not what it enqueued.

        A read that fails (``StoreError``) raises: leaving the batch out would apply the later
        ones before it, and for an id both write the earlier-enqueued write would win.
        """
        if batch.seq in self._fetched:
            return self._fetched[batch.seq]
        dest = local_dir(work, batch)
        got: list[Path] | None = None
        try:
            paths = [
                fetch_delta(
                    self.kit.blobs,
                    key,
                    dest / f"src-{i:04d}",
                    max_bytes=self.kit.settings.max_tarball_bytes,
                )
                for i, key in enumerate(batch.intermediate_keys)
            ]
            if inputs_digest(request.database, paths) == batch.inputs_digest:
                got = paths
        except MergeInputError:  # gone (published and cleaned up meanwhile) or unreadable
            got = None
        self._fetched[batch.seq] = got
        return got

    def _upload(
        self, request: FinalMergeRequest, built: BuiltVersion, group: list[PendingBatch]
    ) -> BuiltVersion:
        """Upload (which claims our batch) with the change set, then claim every other batch: all
        before the swap."""
        db = request.database
        built = upload_with_changes(self.kit, db, built, self._paths)  # the change set too
        log_ = self.kit.store(db).log
        try:
            for batch in group:
                if batch.batch_id != request.batch_id:
                    log_.write_claim(batch.batch_id, built.version, batch.inputs_digest)
        except BaseException:
            self._discard(request, built, group)
            raise
        self.kit.hook("after_claims")
        return built

    def _phase3(
        self,
        request: FinalMergeRequest,
        built: BuiltVersion,
        group: list[PendingBatch],
        meter: LockMeter,
    ) -> BuiltVersion:
        try:
            return self.path._phase3(request, built, meter)  # discards our upload if refused
        except BaseException:
            self._drop_claims(request, built, group)
            raise

    def _discard(
        self, request: FinalMergeRequest, built: BuiltVersion, group: list[PendingBatch]
    ) -> None:
        self.kit.discard(request.database, built)
        self._drop_claims(request, built, group)

    def _drop_claims(
        self, request: FinalMergeRequest, built: BuiltVersion, group: list[PendingBatch]
    ) -> None:
        """Other batches' claims on an upload that was discarded (never on one that landed)."""
        store = self.kit.store(request.database)
        try:
            entry = store.log.entry(built.version)
            if entry is None or entry.state != EntryState.DISCARDED:
                return
            ChangeSets(self.kit.blobs, request.database).delete(built.version)
            for batch in group:
                if batch.batch_id != request.batch_id:
                    store.log.delete_claim(batch.batch_id, built.version)
        except Exception:
            log.warning("could not drop the claims of %s", built.version, exc_info=True)

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
