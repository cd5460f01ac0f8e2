"""The builder of a group commit: plan, build, claim every batch, publish with the CAS.

    each round:  phase 1 (short lock: pointer) ─ warm the base ─ plan the group at that base
                 (``group_plan.plan_group``) ─ build ─ upload with the change set ─ claim every
                 other batch ─ phase 3 CAS
    lost CAS:    back off, next round (rebasing the last build when the change sets allow it)
    after ``max_rebases`` lost rounds: the legacy algorithm, ``path.fallback``, over the group's
                 steps (:class:`LockedGroup`: each base it reads under the lock is planned anew)

Exactly once, for every batch of a build: at the base read in phase 1 no claim of any of them is
that base or an ancestor of it (each is checked), each is claimed before the swap, and the CAS
on that base's ETag succeeds only if nothing was published since. An upload that is discarded
takes the other batches' claims on it along (docs/adr/0008-group-commit.md).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from snapmerge.builder_slot import BuilderSlot, Heartbeat
from snapmerge.built import BuiltVersion
from snapmerge.change_sets import ChangeSets, upload_with_changes
from snapmerge.domain import LATEST_DIRECT, Database, FinalMergeRequest, MergePath, Pointer
from snapmerge.errors import MergeInputError, PointerConflictError, SnapshotError, StoreError
from snapmerge.exactly_once import DigestNeeded, InputsId, Replay, prior_publish
from snapmerge.group_build import GroupBuild, GroupVersion, Ours, fetch_ours
from snapmerge.group_commit import PendingBatch, PendingQueue
from snapmerge.group_plan import Claims, GroupPlan, ask_again, plan_group, to_judge
from snapmerge.lock import Lease
from snapmerge.manifest import EntryState

if TYPE_CHECKING:
    from snapmerge.lock_meter import LockMeter
    from snapmerge.two_phase import TwoPhaseFinalMerge

log = logging.getLogger(__name__)


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

    def landed(self, version: GroupVersion, plan: GroupPlan) -> None:
        self.outcome, self.group = version.built, version.group
        self.done, self.highest = plan.done, plan.highest


class GroupBuilder:
    """One execution building for its collection's pending batches (with the marker or, once
    its wait is over, without it)."""

    def __init__(self, path: TwoPhaseFinalMerge, asked_at: Pointer | None) -> None:
        self.path = path
        self.kit = path.kit
        self.asked_at = asked_at  # a pointer our batch was seen unpublished at
        self.build = GroupBuild(path)

    def run(
        self, ours: Ours, meter: LockMeter, slot: BuilderSlot, owner: str, etag: str | None
    ) -> GroupOutcome:
        """Rounds until one publishes (or our batch is found published); ``etag``: the marker
        we took, kept moving while we build (None: building without it). Our batch's
        intermediates are fetched first if this execution enqueued it by listing."""
        request = ours.request
        with ExitStack() as stack:
            beat = None
            if etag is not None:
                interval = self.kit.settings.group_beat.total_seconds()
                beat = stack.enter_context(Heartbeat(slot, owner, etag, interval))
            self.kit.hook("builder")
            out = GroupOutcome()
            fetched = fetch_ours(self.kit, ours)  # under the heartbeat: a fetch is not a death
            if isinstance(fetched, Replay):
                out.outcome = fetched
                return out
            ours = fetched
            prev: GroupVersion | None = None
            for attempt in range(self.path.max_rebases + 1):
                uploaded = False
                with ExitStack() as pins:
                    try:
                        base = self.path._phase1(request, meter, pins)
                        self._warm(request.database, base)
                        plan = self._plan(ours, base)
                        if isinstance(plan, Replay):
                            out.outcome = plan
                            return out
                        if beat is not None:
                            beat.cover([b.batch_id for b in plan.group])
                        with self.kit.span("phase2"):
                            version = self.build.make(ours, base, plan, attempt, prev)
                            version = self._upload(ours, version)
                        uploaded = True
                        prev = version
                        version = self._phase3(ours, version, meter)
                    except PointerConflictError:
                        out.failures += 1
                        out.wasted += int(uploaded)
                        if attempt < self.path.max_rebases:
                            self.path._sleep(self.path._backoff(attempt))
                        continue
                out.landed(version, plan)
                return out
            # After max_rebases lost CASes: the legacy algorithm, over the group's steps. Our
            # batch alone would publish before an earlier-enqueued batch still pending, whose
            # own execution then applies it on top: its older write would beat ours.
            assert ours.sources is not None  # fetched before the first round
            steps = LockedGroup(self, ours)
            with meter.held(self.kit, request, "fallback") as lease:
                outcome, more = self.path.fallback(
                    steps,
                    request,
                    lease,
                    ours.sources,
                    self.path.path,
                    ours.work / "fallback",
                    inputs=ours.inputs,
                    max_rebases=self.path.max_rebases,
                    validate=lambda built: self.path._validate(request, built),
                    digest=False,
                )
            out.outcome, out.failures = outcome, out.failures + more
            out.wasted += more
            out.fallback = True
            if isinstance(outcome, BuiltVersion) and steps.version is not None:
                assert steps.plan is not None
                out.group, out.done, out.highest = (
                    steps.version.group,
                    steps.plan.done,
                    steps.plan.highest,
                )
            else:
                out.group = [ours.pending]
            return out

    def _warm(self, db: Database, base: Pointer | None) -> None:
        """Download the base before listing the pending batches: the executions that started
        with us have that long to enqueue, and the build needs the base anyway."""
        if base is None or not base.exists or base.version == LATEST_DIRECT:
            return
        with suppress(SnapshotError, StoreError):  # the build reads it again and raises
            self.kit.cache(db).get(base.version)

    def _plan(self, ours: Ours, base: Pointer | None) -> GroupPlan | Replay:
        """Our batch's publish at ``base`` if there is one (its Replay); else the group to build:
        the pending listing and each other batch's claims at ``base``, planned by
        :func:`~snapmerge.group_plan.plan_group`."""
        request, db = ours.request, ours.request.database
        if ask_again(base, self.asked_at):
            prior = self.kit.already_published(request, ours.ident, base)
            if prior is not None:
                return prior
        listing, highest = PendingQueue(self.kit.blobs, db).listing(known=ours.pending)
        claims: dict[int, Claims] = {}
        for batch in to_judge(listing, ours.pending):
            inputs = InputsId(batch.inputs_digest, batch.listing)
            try:
                published = prior_publish(self.kit.store(db), batch.request(db), inputs, base)
            except (MergeInputError, SnapshotError, DigestNeeded):
                # reused id with other inputs, a chain through the original writer's versions, a
                # claim only its digest can judge (enqueued by listing): its own execution decides
                claims[batch.seq] = Claims.UNJUDGED
                continue
            claims[batch.seq] = Claims.UNPUBLISHED if published is None else Claims.PUBLISHED
        return plan_group(listing, highest, ours.pending, claims)

    def _upload(self, ours: Ours, version: GroupVersion) -> GroupVersion:
        """Upload (which claims our batch) with the change set, then claim every other batch: all
        before the swap."""
        db = ours.request.database
        built = upload_with_changes(
            self.kit, db, version.built, version.sources, listing=ours.listing
        )
        version = GroupVersion(built, version.group, version.sources)
        log_ = self.kit.store(db).log
        try:
            for batch in self._others(ours, version):
                log_.write_claim(batch.batch_id, built.version, batch.inputs_digest, batch.listing)
        except BaseException:
            self._discard(ours, version)
            raise
        self.kit.hook("after_claims")
        return version

    def _phase3(self, ours: Ours, version: GroupVersion, meter: LockMeter) -> GroupVersion:
        try:  # the two-phase path's phase 3 discards our upload if refused
            built = self.path._phase3(ours.request, version.built, meter)
        except BaseException:
            self._drop_claims(ours, version)
            raise
        return GroupVersion(built, version.group, version.sources)

    def _discard(self, ours: Ours, version: GroupVersion) -> None:
        self.kit.discard(ours.request.database, version.built)
        self._drop_claims(ours, version)

    def _drop_claims(self, ours: Ours, version: GroupVersion) -> None:
        """Other batches' claims on an upload that was discarded (never on one that landed)."""
        db, built = ours.request.database, version.built
        store = self.kit.store(db)
        try:
            entry = store.log.entry(built.version)
            if entry is None or entry.state != EntryState.DISCARDED:
                return
            ChangeSets(self.kit.blobs, db).delete(built.version)
            for batch in self._others(ours, version):
                store.log.delete_claim(batch.batch_id, built.version)
        except Exception:
            log.warning("could not drop the claims of %s", built.version, exc_info=True)

    @staticmethod
    def _others(ours: Ours, version: GroupVersion) -> list[PendingBatch]:
        return [b for b in version.group if b.batch_id != ours.request.batch_id]


class LockedGroup:
    """The group's steps for the legacy algorithm (the fallback, under the lock): at each base
    it reads, the plan (our batch published there: its replay; else every pending batch not
    published there, in seq order), the build of them all, the upload with every claim and the
    change set, and a discard that drops those claims. The rest are the kit's."""

    def __init__(self, builder: GroupBuilder, ours: Ours) -> None:
        self.builder, self.kit, self.ours = builder, builder.kit, ours
        self.plan: GroupPlan | None = None
        self.version: GroupVersion | None = None
        self._attempts = 0

    def resolve_base(self, db: Database) -> Pointer | None:
        return self.kit.resolve_base(db)

    def pin_base(self, db: Database, base: Pointer | None) -> AbstractContextManager[None]:
        return self.kit.pin_base(db, base)

    def already_published(
        self, request: FinalMergeRequest, inputs: str, base: Pointer | None
    ) -> Replay | None:
        plan = self.builder._plan(self.ours, base)
        if isinstance(plan, Replay):
            return plan
        self.plan = plan
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
        assert self.plan is not None  # already_published planned the group at this base
        self._attempts += 1  # a directory of its own for each locked try
        self.version = self.builder.build.make(self.ours, base, self.plan, 100 + self._attempts)
        return self.version.built

    def upload(self, db: Database, built: BuiltVersion) -> BuiltVersion:
        assert self.version is not None and self.version.built is built
        self.version = self.builder._upload(self.ours, self.version)
        return self.version.built

    def publish(self, db: Database, built: BuiltVersion, lease: Lease | None) -> Pointer:
        return self.kit.publish(db, built, lease)

    def discard(self, db: Database, built: BuiltVersion) -> None:
        assert self.version is not None
        self.builder._discard(
            self.ours, GroupVersion(built, self.version.group, self.version.sources)
        )
