"""A group's version, built locally: the base plus every batch of the plan, or a rebase.

A builder applies the batches of its :class:`~snapmerge.group_plan.GroupPlan` in seq order: ours
from the sources this execution fetched, every other batch from its intermediates (fetched once;
a batch whose inputs are gone or changed is left out). A batch enqueued by listing (its execution
fetched nothing) gets its inputs digest here, from the bytes fetched, once their listing is still
the one it enqueued (:func:`fetch_ours` does the same for our own batch). If the group's inputs
are bad, our batch is built alone (its own error is then ours). After a lost CAS, the last build
is brought up to the new base with the change sets of the publishes since, when
:func:`~snapmerge.group_plan.rebase_or_rebuild` allows it (docs/adr/0008); else the group is
built in full. Uploading, claiming and publishing are ``group_publish``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from snapmerge.built import BuiltVersion
from snapmerge.change_sets import ChangeSets, rebase_build
from snapmerge.deltas import fetch_delta
from snapmerge.domain import Database, FinalMergeRequest, Pointer
from snapmerge.errors import MergeInputError
from snapmerge.exactly_once import InputsId, Replay, inputs_digest, inputs_listing
from snapmerge.group_commit import PendingBatch, group_payload
from snapmerge.group_plan import GroupPlan, rebase_or_rebuild
from snapmerge.manifest import VersionManifest

if TYPE_CHECKING:
    from snapmerge.merging import MergeKit
    from snapmerge.two_phase import TwoPhaseFinalMerge


@dataclass(frozen=True)
class Ours:
    """This execution's batch, as every step of the group commit needs it."""

    request: FinalMergeRequest
    pending: PendingBatch  # its entry in the pending queue
    sources: list[Path] | None  # its intermediates; None until fetched (enqueued by listing)
    inputs: str  # their digest ("" until fetched)
    work: Path
    listing: str = ""  # what it was enqueued by, when it was enqueued before the fetch

    @property
    def ident(self) -> InputsId:
        return InputsId(self.inputs, self.listing)


def fetch_ours(kit: MergeKit, ours: Ours) -> Ours | Replay:
    """Our intermediates and their digest, fetched once this execution builds (or must judge a
    claim that only the digest can): the same steps as the fetch-first path (gone with a
    receipt: its replay; a receipt for these inputs: its replay; for others: an error).

    Bytes whose listing is no longer the one enqueued are refused (the pending object names that
    listing, and another builder may already have applied what it named), unless a receipt for
    those bytes appeared meanwhile: then the listing changed because the batch was published and
    its intermediates deleted.
    """
    if ours.sources is not None:
        return ours
    request = ours.request
    got = kit.fetch_inputs(request, ours.work / "sources")
    if isinstance(got, Replay):
        return got
    fetched, digest = got
    if inputs_listing(kit.blobs, request) != ours.listing:
        # Published by another execution and cleaned up since the receipt was read above (its
        # receipt precedes the deletion): bytes that digest to the receipt's are its publish.
        replay = kit.receipt_replay(request, digest)
        if replay is not None:
            return replay
        raise MergeInputError(
            f"batch {request.batch_id}: its intermediates changed after it was enqueued"
            f" ({', '.join(request.intermediate_keys)}). A batch id names one set of inputs:"
            " give new inputs a new batch id"
        )
    return replace(ours, sources=fetched, inputs=digest)


@dataclass(frozen=True)
class GroupVersion:
    """A version built for a group, with the batches it applied and their sources."""

    built: BuiltVersion
    group: list[PendingBatch]
    sources: list[Path]  # in apply order: what its change set records


def consumed_alike(entry: VersionManifest, applied: dict[str, str]) -> tuple[str, ...]:
    """The batches ``entry`` consumed, but those the last build applied with other inputs
    (``applied``: batch id to inputs digest). A reused id published meanwhile with other bytes is
    left out of the new group; counted as consumed, a rebase would keep the bytes the last build
    applied for it, under no claim."""
    return tuple(
        b for b in entry.consumed if applied.get(b, entry.inputs_of(b)) == entry.inputs_of(b)
    )


def local_dir(work: Path, batch: PendingBatch) -> Path:
    return work / "group" / f"{batch.seq:012d}"


class GroupBuild:
    """Builds the versions of one execution's group commit; fetches each batch at most once."""

    def __init__(self, path: TwoPhaseFinalMerge) -> None:
        self.path = path
        self.kit = path.kit
        self._fetched: dict[int, tuple[PendingBatch, list[Path]] | None] = {}

    def make(
        self,
        ours: Ours,
        base: Pointer | None,
        plan: GroupPlan,
        attempt: int,
        prev: GroupVersion | None = None,
    ) -> GroupVersion:
        """Build ``base`` + every batch of ``plan`` whose inputs are still what it enqueued; if
        the group's inputs are bad, our batch alone. After a lost CAS (``prev``: what we built
        and uploaded), rebase ``prev`` onto ``base`` when the change sets allow it."""
        assert ours.sources is not None  # a builder fetches its own batch first (fetch_ours)
        group, paths = [], []
        for batch in plan.group:
            if batch.seq == ours.pending.seq:
                got: tuple[PendingBatch, list[Path]] | None = (
                    replace(batch, inputs_digest=ours.inputs),
                    ours.sources,
                )
            else:
                got = self._sources(ours.request.database, batch, ours.work)
            if got is not None:
                group.append(got[0])
                paths.extend(got[1])
        dest = ours.work / f"g{attempt}"
        if prev is not None:
            rebased = self._rebase(ours, base, prev, group, paths, dest)
            if rebased is not None:
                return GroupVersion(rebased, group, paths)
        try:
            return GroupVersion(self._built(ours, base, group, paths, dest), group, paths)
        except MergeInputError:
            if len(group) == 1:
                raise
        mine = [replace(ours.pending, inputs_digest=ours.inputs)]
        alone = self._built(ours, base, mine, ours.sources, ours.work / f"a{attempt}")
        return GroupVersion(alone, mine, ours.sources)

    def _rebase(
        self,
        ours: Ours,
        base: Pointer | None,
        prev: GroupVersion,
        group: list[PendingBatch],
        paths: list[Path],
        dest: Path,
    ) -> BuiltVersion | None:
        """``prev`` brought up to ``base`` with the change sets of the publishes since; None:
        build in full. The log entries are read oldest first and only up to the first missing."""
        if base is None or not self.kit.settings.change_sets:
            return None
        db = ours.request.database
        old_base = prev.built.base.version if prev.built.base else None
        steps = ChangeSets(self.kit.blobs, db).path(base.version, old_base) or []
        applied = {b.batch_id: b.inputs_digest for b in prev.group}
        consumed: list[tuple[str, ...] | None] = []
        for version, _ in steps:
            entry = self.kit.store(db).log.entry(version)
            consumed.append(None if entry is None else consumed_alike(entry, applied))
            if entry is None:
                break
        if not rebase_or_rebuild(consumed, prev.group, group):
            return None
        rebased = rebase_build(
            self.kit,
            ours.request,
            prev.built,
            base,
            paths,
            ours.inputs,
            group_payload(group),
            dest,
            self.path.path,
            steps=steps,  # walked above: each step is a GET
        )
        if rebased is not None:
            self.path._validate(ours.request, rebased)
        return rebased

    def _built(
        self,
        ours: Ours,
        base: Pointer | None,
        group: list[PendingBatch],
        paths: list[Path],
        dest: Path,
    ) -> BuiltVersion:
        built = self.kit.build(
            ours.request, base, paths, self.path.path, dest, inputs=ours.inputs, digest=False
        )
        built = replace(built, manifest=replace(built.manifest, batches=group_payload(group)))
        self.path._validate(ours.request, built)
        return built

    def _sources(
        self, db: Database, batch: PendingBatch, work: Path
    ) -> tuple[PendingBatch, list[Path]] | None:
        """Another batch's intermediates, fetched once, with the batch (its inputs digest filled
        in); None if gone or not what it enqueued (its digest, or when enqueued by listing, a
        listing still the same after the fetch, so the bytes fetched are the ones it named).

        A read that fails (``StoreError``) raises: leaving the batch out would apply the later
        ones before it, and for an id both write the earlier-enqueued write would win.
        """
        if batch.seq in self._fetched:
            return self._fetched[batch.seq]
        dest = local_dir(work, batch)
        got: tuple[PendingBatch, list[Path]] | None = None
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
            digest = inputs_digest(db, paths)
            if batch.inputs_digest:
                same = digest == batch.inputs_digest
            else:
                same = bool(batch.listing) and (
                    inputs_listing(self.kit.blobs, batch.request(db)) == batch.listing
                )
            if same:
                got = (replace(batch, inputs_digest=digest), paths)
        except MergeInputError:  # gone (published and cleaned up meanwhile) or unreadable
            got = None
        self._fetched[batch.seq] = got
        return got
