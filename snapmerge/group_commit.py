"""Group commit of final merges on the two-phase path, and its pending queue (docs/adr/0008).

    enqueue    {db}/snapshot/pending/{seq:012d}.json   If-None-Match; seq = highest listed + 1
    builder    {db}/snapshot/pending-builder.json      one builder at a time; its heartbeat
    publish    base + every unpublished pending batch, in seq order, one fenced CAS

Every execution enqueues its batch, then loops: if its batch is published at the pointer (a claim
at or below it), it answers with that publish; if a live builder holds the marker, it waits (the
marker's ETag changing is the heartbeat, observed on the waiter's own clock); otherwise it takes
the marker (``If-None-Match`` / ``If-Match`` on the ETag it saw idle or dead) and builds the
current base plus every pending batch not yet published, claims each before the swap, and
publishes with the same CAS as the two-phase path. Waiting is bounded (``group_wait``): after it,
an execution builds without the marker, so its liveness never depends on another execution.

The enqueue order trusts no clock: a sequence number is taken with a conditional create of
exactly that key, after a listing that showed every lower one. So a batch that is visible has
every lower-numbered batch visible too (or already published), and a builder that applies a
batch applies every unpublished lower one before it: for an id two batches write, the
later-enqueued one wins. The highest-numbered pending object is never deleted, so numbers are
never reused, and deleting a published batch's pending object by its exact key is safe. The
publisher marks that highest object ``published`` instead, so no later builder reads its claims.

This module is the queue; the marker is ``builder_slot``, an execution's loop ``group_merge``,
the builder ``group_publish`` (with ``group_build``), the decisions ``group_plan``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from snapmerge.domain import Database, FinalMergeRequest
from snapmerge.errors import PointerConflictError, SnapshotError, StoreError
from snapmerge.exactly_once import DigestNeeded, InputsId
from snapmerge.ports import BlobStore

log = logging.getLogger(__name__)

PENDING = "pending"
WITHDRAWN = "withdrawn"
PUBLISHED = "published"  # the highest number, kept after its publish (never read for claims)
ENQUEUE_TRIES = 200


def pending_prefix(db: Database) -> str:
    return f"{db.value}/snapshot/pending/"


@dataclass(frozen=True)
class PendingBatch:
    """A batch waiting to be published: what a builder needs to apply it and claim it."""

    seq: int
    batch_id: str
    intermediate_keys: tuple[str, ...]
    inputs_digest: str  # "" when its execution enqueued it by listing (the builder computes it)
    delta_count: int = 0
    state: str = PENDING
    key: str = ""
    listing: str = ""  # exactly_once.inputs_listing at enqueue ("" in objects of older versions)

    def same_inputs(self, digest: str, listing: str) -> bool:
        """Known to name the same inputs (``InputsId.matches``); what only a digest could
        decide is not known."""
        try:
            return InputsId(self.inputs_digest, self.listing).matches(digest, listing)
        except DigestNeeded:
            return False

    def request(self, db: Database) -> FinalMergeRequest:
        return FinalMergeRequest(
            batch_id=self.batch_id,
            database=db,
            intermediate_keys=self.intermediate_keys,
            delta_count=self.delta_count,
        )

    def body(self) -> bytes:
        return json.dumps(
            {
                "seq": self.seq,
                "batch_id": self.batch_id,
                "intermediate_keys": list(self.intermediate_keys),
                "inputs_digest": self.inputs_digest,
                "delta_count": self.delta_count,
                "state": self.state,
                **({"listing": self.listing} if self.listing else {}),
            },
            sort_keys=True,
        ).encode()


def _seq_of(key: str, prefix: str) -> int | None:
    name = key[len(prefix) :]
    if not name.endswith(".json") or not name[: -len(".json")].isdigit():
        return None
    return int(name[: -len(".json")])


class PendingQueue:
    """The pending batches of one database."""

    def __init__(self, blobs: BlobStore, db: Database) -> None:
        self.blobs, self.db = blobs, db
        self.prefix = pending_prefix(db)

    def key(self, seq: int) -> str:
        return f"{self.prefix}{seq:012d}.json"

    def _seqs(self) -> list[int]:
        found = (_seq_of(k, self.prefix) for k in self.blobs.list(self.prefix))
        return sorted(s for s in found if s is not None)

    def read(self, seq: int) -> PendingBatch | None:
        key = self.key(seq)
        blob = self.blobs.get(key)
        if blob is None:
            return None
        try:
            raw = json.loads(blob.body)
            return PendingBatch(
                seq=int(raw["seq"]),
                batch_id=str(raw["batch_id"]),
                intermediate_keys=tuple(str(k) for k in raw["intermediate_keys"]),
                inputs_digest=str(raw["inputs_digest"]),
                delta_count=int(raw.get("delta_count", 0)),
                state=str(raw.get("state", PENDING)),
                key=key,
                listing=str(raw.get("listing") or ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"pending batch {key} is unreadable: {exc}") from exc

    def listing(self, known: PendingBatch | None = None) -> tuple[list[PendingBatch], int]:
        """Every pending object (withdrawn ones too), in seq order, and the highest seq listed.

        ``known``: a pending object the caller wrote and only it can change (its own batch);
        when listed it is not read again.
        """
        seqs = self._seqs()

        def read(seq: int) -> PendingBatch | None:
            return known if known is not None and known.seq == seq else self.read(seq)

        found = [b for b in (read(s) for s in seqs) if b is not None]
        return found, (seqs[-1] if seqs else 0)

    def enqueue(self, request: FinalMergeRequest, inputs: str, listing: str = "") -> PendingBatch:
        """Record ``request`` as pending; a retry whose pending object is still there reuses it.

        ``inputs`` is the content digest, or "" when the execution has fetched nothing yet; then
        ``listing`` names the inputs (one of the two is required).
        """
        if not inputs and not listing:
            raise ValueError("enqueue needs the inputs digest or their listing")
        found, highest = self.listing()
        for batch in found:
            if (
                batch.batch_id == request.batch_id
                and batch.state == PENDING
                and batch.same_inputs(inputs, listing)
            ):
                return batch
        for attempt in range(ENQUEUE_TRIES):
            if attempt:  # the first try numbers after the listing above: one LIST less
                seqs = self._seqs()
                highest = seqs[-1] if seqs else 0
            seq = highest + 1
            batch = PendingBatch(
                seq,
                request.batch_id,
                request.intermediate_keys,
                inputs,
                request.delta_count,
                key=self.key(seq),
                listing=listing,
            )
            try:
                self.blobs.put(batch.key, batch.body(), if_none_match=True)
            except PointerConflictError:  # another batch took this number: list again
                found_now = self.read(seq)
                if found_now is not None and found_now.body() == batch.body():
                    return batch  # our own write, its reply lost
                continue
            return batch
        raise SnapshotError(f"could not enqueue batch {request.batch_id}: too much contention")

    def settle(self, batch: PendingBatch) -> None:
        """A batch its own execution found published: its pending object forgotten, as its
        publisher forgets the ones it publishes (one LIST for the highest number)."""
        seqs = self._seqs()
        self.forget([batch], seqs[-1] if seqs else batch.seq)

    def withdraw(self, batch: PendingBatch) -> None:
        """A batch that failed its own merge: builders skip it (the number stays taken)."""
        withdrawn = replace(batch, state=WITHDRAWN)
        try:
            self.blobs.put(batch.key, withdrawn.body())
        except StoreError:
            log.warning("could not withdraw pending batch %s", batch.key, exc_info=True)

    def forget(self, batches: Sequence[PendingBatch], highest: int) -> None:
        """Delete the pending objects of published batches, all but the highest number listed;
        that one, if still marked pending, is marked published instead, so that the builders
        after us skip it without reading its claims (two requests each)."""
        keys = [b.key for b in batches if b.seq < highest]
        if keys:
            try:
                self.blobs.delete(keys)
            except StoreError:
                log.warning("could not delete pending objects %s", keys, exc_info=True)
        for batch in batches:
            if batch.seq == highest and batch.state == PENDING:
                # Unconditional: if a later publisher deleted it meanwhile (it is no longer the
                # highest), this recreates a published entry that the next builder forgets.
                try:
                    self.blobs.put(batch.key, replace(batch, state=PUBLISHED).body())
                except StoreError:
                    log.warning("could not mark pending batch %s published", batch.key)


def group_payload(batches: Sequence[PendingBatch]) -> tuple[tuple[str, str, int], ...]:
    return tuple((b.batch_id, b.inputs_digest, b.seq) for b in batches)
