"""Change sets: what a two-phase publish wrote, so a lost CAS rebases in proportion to it.

    {db}/snapshot/changes/{version}/sources.tar   the sources the version applied, in apply
                                                  order, as one tar (``change_set_tar``)
    {db}/snapshot/changes/{version}.json          {"version", "base_version", "sources",
                                                  "packing"}: written last

Both are outside ``timestamped/`` (the original writer never copies them) and are written before
the version's pointer swap, so a writer that lost its CAS to that version always finds them. A
rebase from our old base ``B`` to the new pointer ``P`` walks ``P``'s base links down to ``B``;
when every step has a change set, the local build (``B`` + ours) becomes ``B`` + ours + each
change set in chain order + ours again, which holds what ``P`` + ours holds: an id we write
keeps our write (we publish after ``P``), any other id takes ``P``'s value. A step without a
change set (a legacy publish, the original writer's) means the full rebuild.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from snapmerge.built import BuiltVersion
from snapmerge.change_set_tar import pack, unpack
from snapmerge.commit_log import lineage
from snapmerge.domain import (
    LATEST_DIRECT,
    Database,
    FinalMergeRequest,
    MergePath,
    Pointer,
    VersionId,
    new_version_id,
)
from snapmerge.errors import MergeInputError, SnapshotError, StoreError
from snapmerge.manifest import EntryState, VersionManifest
from snapmerge.merging import MergeKit
from snapmerge.ports import BlobStore
from snapmerge.snapshots import scan_files

log = logging.getLogger(__name__)

MAX_STEPS = 8  # a rebase over more publishes than this rebuilds in full
MAX_SOURCE_BYTES = 2 * 1024**3  # a change-set source is an intermediate we or a peer wrote


def changes_prefix(db: Database) -> str:
    return f"{db.value}/snapshot/changes/"


class ChangeSets:
    """The change sets of one database: written, walked, fetched, deleted."""

    def __init__(self, blobs: BlobStore, db: Database) -> None:
        self.blobs, self.db = blobs, db
        self.prefix = changes_prefix(db)

    def data_prefix(self, version: VersionId) -> str:
        return f"{self.prefix}{version}/"

    def marker_key(self, version: VersionId) -> str:
        return f"{self.prefix}{version}.json"

    def data_key(self, version: VersionId) -> str:
        return f"{self.data_prefix(version)}sources.tar"

    def write(
        self,
        version: VersionId,
        base: VersionId | None,
        sources: list[Path],
    ) -> None:
        """Upload the sources as they are (in apply order), as one tar (``change_set_tar``),
        then the marker naming the base.

        No merge into one index: creating a Chroma index costs more than uploading the few
        small ones the batches already are.
        """
        with tempfile.TemporaryDirectory(prefix="changes-") as scratch:
            packed = Path(scratch) / "sources.tar"
            pack(sources, packed)
            self.blobs.upload_file(self.data_key(version), packed)
        body = json.dumps(
            {"version": version, "base_version": base, "sources": len(sources), "packing": "tar"}
        ).encode()
        self.blobs.put(self.marker_key(version), body)

    def base_of(self, version: VersionId) -> tuple[int | None, VersionId | None]:
        """(how many sources its change set has, None: no change set; the base it applies to)."""
        blob = self.blobs.get(self.marker_key(version))
        if blob is None:
            return None, None
        try:
            raw = json.loads(blob.body)
            base = raw.get("base_version")
            if str(raw["version"]) != version or raw.get("packing") != "tar":
                return None, None  # another packing (an older writer's): rebuild in full
            return int(raw["sources"]), VersionId(base) if base else None
        except (ValueError, KeyError, TypeError):
            return None, None

    def path(
        self, start: VersionId, old_base: VersionId | None
    ) -> list[tuple[VersionId, int]] | None:
        """The versions from ``old_base`` (exclusive) up to ``start``, oldest first, with their
        source counts, if each has a change set and the walk reaches ``old_base`` within
        ``MAX_STEPS``; else None."""
        steps: list[tuple[VersionId, int]] = []
        current: VersionId | None = start
        while current != old_base:
            if current is None or len(steps) >= MAX_STEPS:
                return None
            count, below = self.base_of(current)
            if count is None:
                return None
            steps.append((current, count))
            current = below
        return steps[::-1]

    def fetch(
        self, steps: list[tuple[VersionId, int]], dest: Path, max_bytes: int = MAX_SOURCE_BYTES
    ) -> list[Path] | None:
        """Every source of every step, in apply order; None if any is missing."""
        out: list[Path] = []
        try:
            for n, (version, count) in enumerate(steps):
                target = dest / f"{n:04d}"
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                packed = dest / f"{n:04d}.tar"
                self.blobs.download_file(self.data_key(version), packed)
                got = unpack(packed, target, count, max_bytes, self.data_key(version))
                if got is None:
                    return None  # cut short (or not ours): rebuild in full, never apply a part
                out.extend(got)
        except (StoreError, SnapshotError, MergeInputError, OSError):
            return None
        return out

    def delete(self, version: VersionId) -> None:
        try:
            self.blobs.delete([self.marker_key(version)])
            self.blobs.delete(self.blobs.list(self.data_prefix(version)))
        except StoreError:
            log.warning("could not delete the change set of %s", version, exc_info=True)

    def prune(self, states: dict[VersionId, str | None]) -> None:
        """Delete change sets of versions whose data is gone (retired, discarded, unknown)."""
        for version, state in states.items():
            if state in (None, EntryState.RETIRED, EntryState.DISCARDED):
                self.delete(version)

    def versions(self) -> list[VersionId]:
        keys = self.blobs.list(self.prefix)
        return sorted(
            VersionId(k[len(self.prefix) : -len(".json")])
            for k in keys
            if k.endswith(".json") and "/" not in k[len(self.prefix) :]
        )


def upload_with_changes(
    kit: MergeKit, db: Database, built: BuiltVersion, sources: list[Path], *, listing: str = ""
) -> BuiltVersion:
    """``kit.upload`` and, at the same time, the change set of ``built``: both are done (or
    neither is left behind) when this returns, so the change set still precedes the swap.

    They were written one after the other; on the embedded server the change set's uploads (a
    few objects per source) added about a quarter of a second to every two-phase publish. The
    change set starts once the version id is claimed (a taken id, redrawn, never gets one: its
    prefix is another writer's). Any failure removes both: the upload discards itself
    (``kit.upload``), the change set is deleted once its writer has stopped.
    """
    if not kit.settings.change_sets:
        return kit.upload(db, built, listing=listing)
    changes = ChangeSets(kit.blobs, db)
    base = built.base.version if built.base else None
    started: list[tuple[VersionId, Future[None]]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="changes") as pool:

        def claimed(version: VersionId) -> None:
            started.append((version, pool.submit(changes.write, version, base, sources)))

        try:
            uploaded = kit.upload(db, built, on_claimed=claimed, listing=listing)
        except BaseException:
            for version, recording in started:
                _stopped(recording)
                changes.delete(version)
            raise
        try:
            for version, recording in started:
                recording.result()
                if version != uploaded.version:  # not expected: a claim is never redrawn
                    changes.delete(version)
            if not any(version == uploaded.version for version, _ in started):
                changes.write(uploaded.version, base, sources)
        except BaseException:
            kit.discard(db, uploaded)
            changes.delete(uploaded.version)
            raise
    return uploaded


def _stopped(future: Future[None]) -> None:
    """Wait for ``future`` to end, whatever it ends with (its error is not ours to raise)."""
    try:
        future.result()
    except BaseException:
        log.debug("change set write failed beside a failed upload", exc_info=True)


def prune_changes(kit: MergeKit, db: Database) -> None:
    """After a publish: drop the change sets of versions whose data retention has deleted.

    One LIST per publish; the log entries are read only once more than twice the retained
    versions have change sets, and then only for those older than the newest ``keep``. Every
    publish read every entry before (about five GETs a publish), and a change set that is
    deleted late costs nothing but its bytes (one deleted early costs a rebaser a full rebuild).
    """
    if not kit.settings.change_sets:
        return
    changes = ChangeSets(kit.blobs, db)
    keep = max(1, kit.settings.keep_versions)
    listed = changes.versions()
    if len(listed) <= 2 * keep:
        return
    states: dict[VersionId, str | None] = {}
    for version in listed[:-keep]:
        try:
            entry = kit.store(db).log.entry(version)
        except SnapshotError:
            entry = None
        states[version] = None if entry is None else entry.state
    changes.prune(states)


def rebase_build(
    kit: MergeKit,
    request: FinalMergeRequest,
    prev: BuiltVersion,
    base: Pointer | None,
    sources: list[Path],
    inputs: str,
    batches: tuple[tuple[str, str, int], ...],
    work: Path,
    path: MergePath,
    *,
    steps: list[tuple[VersionId, int]] | None = None,
) -> BuiltVersion | None:
    """``prev`` (built on an older base, its upload refused) brought up to ``base``: apply each
    publish's change set since ``prev.base``, then ``sources`` again. None: rebuild in full.

    ``steps``: that chain (:meth:`ChangeSets.path`) when the caller has walked it already."""
    db = request.database
    if base is None or not base.exists or base.version == LATEST_DIRECT:
        return None
    changes = ChangeSets(kit.blobs, db)
    if steps is None:
        old = prev.base.version if prev.base is not None else None
        steps = changes.path(base.version, old)
    if not steps:
        return None
    base_manifest = kit.check_base(db, base)
    if base_manifest is None:
        return None
    fetched = changes.fetch(steps, work / "changes", kit.settings.max_tarball_bytes)
    if fetched is None:
        return None
    target = prev.directory
    dimension = base_manifest.dimension or None
    try:
        merged = kit.engine.merge(
            target, [*fetched, *sources], collection=db.value, dimension=dimension
        )
    except MergeInputError:
        # A change set we cannot read is not this batch's bad input: the full rebuild (in a
        # fresh directory) reads our own sources again and raises if they are the bad ones.
        log.warning("change sets over %s unreadable: rebuilding in full", base.version)
        return None
    height, root = lineage(base.version, base_manifest)
    count = merged.final_count
    stats = replace(
        merged, base_count=base_manifest.record_count, new_ids=count - base_manifest.record_count
    )
    manifest = VersionManifest(
        version=new_version_id(),
        base_version=base.version,
        batch_id=request.batch_id,
        record_count=count,
        dimension=merged.dimension,
        path=path.value,
        files=scan_files(target),
        created_at=datetime.now(UTC).isoformat(),
        digest="",  # a publish skips the O(snapshot) content digest (see TwoPhaseFinalMerge)
        height=height,
        root=root,
        inputs_digest=inputs,
        batches=batches,
    )
    kit.hook("rebased_from_changes")
    return BuiltVersion(manifest.version, target, manifest, stats, base, base_manifest)
