"""Every batch applied exactly once: what a retry, a duplicate run and a rebase consult.

A batch's publish leaves three records, written in this order:

    claim   {db}/snapshot/claims/{batch}/{version}.json   before the pointer swap (inputs digest)
    swap    the pointer names the version                  the CAS
    receipt {db}/snapshot/receipts/{batch}.json            after the swap (derived from the log)

At every base a merge reads (its first and each rebase), :func:`prior_publish` asks whether a
claim of this batch is that base or one of its ancestors (a walk of the commit log by height).
If so the batch is already published: the run replays that publish. If not, the run builds and
CASes on the base's ETag, and a successful CAS proves nothing was published since that base —
so no claim of this batch can have become an ancestor in between. See docs/adr/0006.

A batch's inputs are named by their content digest (:func:`inputs_digest`, over the bytes
fetched). A group-commit waiter with ``enqueue_by_listing`` names them by their listing too
(:func:`inputs_listing`, every object's key and ETag: one LIST per intermediate, nothing
downloaded), so that it can enqueue and recognise its batch's publish without fetching what a
builder fetches anyway; a claim records both. Where the listing cannot decide, the digest does
(:class:`InputsId`, docs/adr/0013).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapmerge.deltas import is_tarball
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    FinalMergeResult,
    Keys,
    MergePath,
    Pointer,
    VersionId,
)
from snapmerge.errors import MergeInputError, SnapshotError, StoreError
from snapmerge.manifest import VersionManifest
from snapmerge.ports import BlobStore
from snapmerge.snapshots import SnapshotStore
from snapmerge.transfer import local_files


@dataclass(frozen=True)
class Replay:
    """An earlier publish of this batch, and the receipt that records it."""

    result: FinalMergeResult
    receipt: dict[str, Any]


def inputs_digest(db: Database, sources: Sequence[Path]) -> str:
    """sha256 over the database and every file of each source, in merge order (later wins).

    Bytes as fetched, before anything opens them: cheap enough to take under legacy's lock. The
    same intermediates (a redelivered or duplicated final merge) give the same digest; a re-run of
    the chunk merges writes other bytes for the same records and so counts as other inputs (an
    error if the batch already published, never a second apply).
    """
    total = hashlib.sha256(f"{db.value}\n".encode())
    for i, source in enumerate(sources):
        total.update(f"source {i}\n".encode())
        for rel, path in local_files(source):
            total.update(f"{rel}\n{_file_sha256(path)}\n".encode())
    return total.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def inputs_listing(blobs: BlobStore, request: FinalMergeRequest) -> str | None:
    """sha256 over the database and, per intermediate in merge order, every object it names
    (key and ETag, as ``fetch_delta`` reads it); None if an intermediate has no object, or there
    are none (a listing of nothing names no inputs: the fetch refuses the request).

    One LIST per intermediate. Equal listings name equal bytes (an ETag changes with an object's
    content); unequal ones may still (a multipart re-upload of the same bytes): the caller then
    asks the content digest.
    """
    if not request.intermediate_keys:
        return None
    total = hashlib.sha256(f"{request.database.value}\nlisting\n".encode())
    for i, key in enumerate(request.intermediate_keys):
        if is_tarball(key):
            objects = [(k, e) for k, e in blobs.list_etags(key) if k == key]
        else:
            prefix = key if key.endswith("/") else key + "/"
            objects = [(k, e) for k, e in blobs.list_etags(prefix) if not k.endswith("/")]
        if not objects:
            return None
        total.update(f"source {i} {key}\n".encode())
        for name, etag in objects:
            total.update(f"{name}\n{etag}\n".encode())
    return "listing:" + total.hexdigest()


class DigestNeeded(Exception):
    """A claim of this batch that only the content digest can judge, and the caller has none yet
    (its listing differs from the claim's, or the claim records none)."""


@dataclass(frozen=True)
class InputsId:
    """What names a batch's inputs to the claim checks: the content digest when it was computed
    (authoritative), and the listing (what a waiter that fetched nothing has)."""

    digest: str = ""
    listing: str = ""

    def matches(self, claim_digest: str, claim_listing: str) -> bool:
        """With our digest known, only an equal digest matches (as before listings existed);
        without it, an equal listing matches and anything else raises :class:`DigestNeeded`
        (unequal listings may name equal bytes)."""
        if self.digest:
            return self.digest == claim_digest
        if self.listing and claim_listing and self.listing == claim_listing:
            return True
        raise DigestNeeded


def as_inputs(inputs: str | InputsId) -> InputsId:
    return inputs if isinstance(inputs, InputsId) else InputsId(digest=inputs)


def inputs_present(blobs: BlobStore, request: FinalMergeRequest) -> bool:
    """Every intermediate still has an object (a finished batch deleted them after its receipt)."""
    return all(blobs.list(key) for key in request.intermediate_keys)


def receipt_payload(manifest: VersionManifest, request: FinalMergeRequest) -> dict[str, Any]:
    """The receipt: derived from the log entry alone, so a duplicate run writes the same bytes.

    A group-commit version (several batches) adds who published it and what it consumed.
    """
    group: dict[str, Any] = {}
    if manifest.batches:
        group = {"published_by": manifest.batch_id, "consumed_batches": list(manifest.consumed)}
    return {
        **group,
        "batch_id": request.batch_id,
        "database": request.database.value,
        "version": manifest.version,
        "base_version": manifest.base_version,
        "snapshot_key": Keys.version_prefix(request.database, manifest.version),
        "total_embeddings": manifest.record_count,
        "path": manifest.path,
        "digest": manifest.digest,
        "inputs_digest": manifest.inputs_of(request.batch_id),
        "snapshot_format": manifest.format,
        "format_upgraded": bool(manifest.format_upgraded_from),
    }


def replayed_result(receipt: dict[str, Any], request: FinalMergeRequest) -> FinalMergeResult:
    """A replay's answer: the earlier publish's version and counts, nothing measured now."""
    try:
        version = VersionId(str(receipt["version"]))
        base = receipt.get("base_version")
        return FinalMergeResult(
            path=MergePath(str(receipt["path"])),
            batch_id=request.batch_id,
            database=request.database,
            version=version,
            base_version=VersionId(str(base)) if base else None,
            snapshot_key=Keys.version_prefix(request.database, version),
            total_embeddings=int(receipt["total_embeddings"]),
            processing_time_seconds=0.0,
            chunk_count=len(request.intermediate_keys),
            delta_count=request.delta_count,
            records_merged=0,
            lock_wait_ms=0.0,
            lock_hold_ms=0.0,
            replayed=True,
            digest=str(receipt.get("digest", "")),
            snapshot_format=str(receipt.get("snapshot_format") or ""),
            format_upgraded=bool(receipt.get("format_upgraded", False)),
            consumed_batches=tuple(str(b) for b in receipt.get("consumed_batches") or ()),
            published_by=str(receipt["published_by"]) if receipt.get("published_by") else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SnapshotError(f"receipt of batch {request.batch_id} is unreadable: {exc}") from exc


def check_receipt(receipt: dict[str, Any], request: FinalMergeRequest, inputs: str) -> None:
    """A receipt for other inputs under the same batch id is an error naming both digests.

    Receipts written before inputs digests existed carry none; they are taken as matching.
    """
    recorded = str(receipt.get("inputs_digest") or "")
    if recorded and recorded != inputs:
        raise reused_batch(request, recorded, inputs, VersionId(str(receipt.get("version"))))


def reused_batch(
    request: FinalMergeRequest, published: str, ours: str, version: VersionId
) -> MergeInputError:
    return MergeInputError(
        f"batch {request.batch_id} was already published as {version} from inputs {published};"
        f" these inputs digest to {ours}. A batch id names one set of inputs: give new inputs a"
        " new batch id"
    )


def prior_publish(
    store: SnapshotStore, request: FinalMergeRequest, inputs: str | InputsId, base: Pointer | None
) -> VersionManifest | None:
    """The log entry of this batch's publish if it is ``base`` or an ancestor of it, else None.

    ``inputs``: the content digest, or an :class:`InputsId` (which may raise
    :class:`DigestNeeded`: only the digest can judge this claim).

    A claim whose entry is not complete or retired is an orphan (its CAS lost) and never counts.
    A walk that meets a version we hold no entry for before deciding is refused: re-applying
    could revert later writes and skipping could lose the batch, so neither is done silently.
    """
    start = base.version if base is not None else None
    for claim in store.log.claims(request.batch_id):
        entry = store.log.entry(claim.version)
        if entry is None or entry.state not in ("complete", "retired"):
            continue
        verdict = store.log.is_ancestor(entry, start)
        if verdict is None:
            key = Keys.claim(store.db, request.batch_id, claim.version)
            raise SnapshotError(
                f"batch {request.batch_id} claimed version {claim.version}, but the chain below"
                f" {start} reaches a version with no manifest (written by the original pipeline)"
                f" before {claim.version}: cannot tell whether the batch is already applied."
                f" Check the chain, then delete {key}"
                " to re-apply the batch, or leave it and do not retry"
            )
        if verdict:
            ours = as_inputs(inputs)
            if not ours.matches(claim.inputs_digest, claim.listing):
                theirs = claim.inputs_digest
                raise reused_batch(request, theirs, ours.digest, claim.version)
            return entry
    return None


class ExactlyOnceSteps:
    """The merge steps that answer a retry instead of merging again; mixed into
    :class:`~snapmerge.merging.MergeKit`, so a path calls ``kit.replay(...)`` like any step."""

    blobs: BlobStore

    def store(self, db: Database) -> SnapshotStore:
        raise NotImplementedError

    def fetch_sources(self, request: FinalMergeRequest, dest: Path) -> list[Path]:
        raise NotImplementedError

    def replay(self, request: FinalMergeRequest) -> Replay | None:
        """A retry of a batch that finished: its receipt is there and its intermediates gone.

        Answered before anything is fetched. A receipt beside intermediates that are still there
        (a crash between receipt and clean-up, or a reused batch id) is judged after the fetch,
        by inputs digest (:meth:`inputs`).
        """
        receipt = self.store(request.database).read_receipt(request.batch_id)
        if receipt is None or inputs_present(self.blobs, request):
            return None
        return Replay(replayed_result(receipt, request), receipt)

    def fetch_or_replay(self, request: FinalMergeRequest, dest: Path) -> list[Path] | Replay:
        """The intermediates; or, when they are gone because a duplicate run of this batch
        finished meanwhile (its receipt is there), that run's publish."""
        try:
            return self.fetch_sources(request, dest)
        except (MergeInputError, StoreError):
            replay = self.replay(request)
            if replay is None:
                raise
            return replay

    def inputs(self, request: FinalMergeRequest, sources: list[Path]) -> tuple[str, Replay | None]:
        """The inputs digest, and the receipt's replay if this batch already finished with them.

        A receipt for other inputs raises ``MergeInputError`` naming both digests.
        """
        digest = inputs_digest(request.database, sources)
        return digest, self.receipt_replay(request, digest)

    def receipt_replay(self, request: FinalMergeRequest, digest: str) -> Replay | None:
        """The receipt's replay if this batch finished with inputs of ``digest``; None without a
        receipt; a receipt for other inputs raises ``MergeInputError`` naming both digests."""
        receipt = self.store(request.database).read_receipt(request.batch_id)
        if receipt is None:
            return None
        check_receipt(receipt, request, digest)
        return Replay(replayed_result(receipt, request), receipt)

    def fetch_inputs(
        self, request: FinalMergeRequest, dest: Path
    ) -> tuple[list[Path], str] | Replay:
        """The intermediates and their digest; or this batch's finished publish (gone with its
        receipt, or a receipt for these very inputs). What every path does before it merges."""
        fetched = self.fetch_or_replay(request, dest)
        if isinstance(fetched, Replay):
            return fetched
        digest, replay = self.inputs(request, fetched)
        return (fetched, digest) if replay is None else replay

    def already_published(
        self, request: FinalMergeRequest, inputs: str | InputsId, base: Pointer | None
    ) -> Replay | None:
        """This batch's publish, if a claim of it is ``base`` or an ancestor of ``base``."""
        entry = prior_publish(self.store(request.database), request, inputs, base)
        if entry is None:
            return None
        receipt = receipt_payload(entry, request)
        return Replay(replayed_result(receipt, request), receipt)
