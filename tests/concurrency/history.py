"""What a history records: landed pointer writes, manifests, deleted keys, outcomes.

The recording wrappers sit between each worker and the real adapters (S3BlobStore,
DynamoLeaseTable on the serialised embedded server). They observe; the nemesis (``nemesis.py``)
is what interferes. Pointer writes pass one history-wide lock so their landing order is exact;
the server applies each write atomically anyway, so the lock removes no interleaving that
matters (which write lands first is still decided by the racing workers). The control with the
server's serialisation turned off records without that lock (``ordered=False``): there the
landing order is the order the replies came back, and two writes may race inside the server.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from snapmerge.domain import FinalMergeResult, VersionId
from snapmerge.ports import BlobStore, DelegatingBlobStore, LeaseGrant, LeaseTable
from snapmerge.snapshots import VersionManifest, completed_entry

PENDING_DIR = "/snapshot/pending/"  # snapmerge.group_commit.pending_prefix, for any database


@dataclass(frozen=True)
class Publish:
    """A pointer write that landed."""

    seq: int
    worker: int
    version: VersionId
    fence: int | None  # the worker's lease when it wrote (None: it held no lease at all)
    confirmed_expires: datetime | None  # that lease's expiry as last confirmed by the table
    sent_at: datetime


@dataclass(frozen=True)
class Outcome:
    """One attempt of one batch: a result, or the exception the workflow would see."""

    seq: int
    worker: int
    batch_id: str
    attempt: int
    result: object | None
    error: BaseException | None


@dataclass(frozen=True)
class Enqueue:
    """A group-commit pending object a worker created (``If-None-Match`` landed): the batch
    and the number it took, in creation order."""

    seq: int
    worker: int
    batch_id: str
    number: int


@dataclass
class History:
    seed_version: VersionId
    publishes: list[Publish] = field(default_factory=list)
    manifests: dict[VersionId, VersionManifest] = field(default_factory=dict)
    manifest_seq: dict[VersionId, int] = field(default_factory=dict)
    deleted_keys: list[tuple[int, str]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    enqueues: list[Enqueue] = field(default_factory=list)
    fault_fired: bool = False  # set by the runner from the victim's nemesis after the run
    pointer_lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def add_outcome(
        self,
        worker: int,
        batch_id: str,
        attempt: int,
        result: object | None,
        error: BaseException | None,
    ) -> None:
        with self._lock:
            seq = next(self._seq)
            self.outcomes.append(Outcome(seq, worker, batch_id, attempt, result, error))

    def successes(self) -> dict[str, FinalMergeResult]:
        return {
            o.batch_id: o.result
            for o in self.outcomes
            if o.error is None and isinstance(o.result, FinalMergeResult)
        }


class RecordingLeaseTable:
    """A worker's view of the lease table; remembers the grant it holds and its confirmed expiry."""

    def __init__(self, inner: LeaseTable, on_acquire: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.on_acquire = on_acquire  # the choreography's "acquire" step
        self.current: LeaseGrant | None = None
        self._lock = threading.Lock()

    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        if self.on_acquire is not None:
            self.on_acquire()
        grant = self.inner.try_acquire(lock_id, collection, owner, duration)
        with self._lock:
            self.current = grant
        return grant

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        renewed = self.inner.renew(grant, duration)
        with self._lock:
            if self.current is not None and self.current.fence == renewed.fence:
                self.current = renewed
        return renewed

    def release(self, grant: LeaseGrant) -> None:
        self.inner.release(grant)
        with self._lock:
            if self.current is not None and self.current.fence == grant.fence:
                self.current = None

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        return self.inner.read(lock_id, collection)


class RecordingBlobStore(DelegatingBlobStore):
    """A worker's view of the bucket: records manifests, landed pointer writes, deletes."""

    def __init__(
        self,
        inner: BlobStore,
        history: History,
        worker: int,
        leases: RecordingLeaseTable,
        pointer_key: str,
        *,
        ordered: bool = True,
    ) -> None:
        super().__init__(inner)
        self.history = history
        self.worker = worker
        self.leases = leases
        self.pointer_key = pointer_key
        self.ordered = ordered

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        if key != self.pointer_key:
            etag = self.inner.put(
                key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
            )
            manifest = completed_entry(key, body)
            if manifest is not None:
                self.history.manifests[manifest.version] = manifest
                self.history.manifest_seq[manifest.version] = self.history.next_seq()
            if if_none_match and PENDING_DIR in key:
                self._enqueued(body)
            return etag
        with self.history.pointer_lock if self.ordered else nullcontext():
            grant = self.leases.current
            sent = datetime.now(UTC)
            etag = self.inner.put(
                key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
            )
            self.history.publishes.append(
                Publish(
                    seq=self.history.next_seq(),
                    worker=self.worker,
                    version=VersionId(body.decode().strip()),
                    fence=grant.fence if grant else None,
                    confirmed_expires=grant.expires if grant else None,
                    sent_at=sent,
                )
            )
            return etag

    def _enqueued(self, body: bytes) -> None:
        raw = json.loads(body)
        entry = Enqueue(self.history.next_seq(), self.worker, str(raw["batch_id"]), int(raw["seq"]))
        self.history.enqueues.append(entry)

    def delete(self, keys: Sequence[str]) -> None:
        self.inner.delete(keys)
        seq = self.history.next_seq()  # one instant for the call: the checker attributes keys
        self.history.deleted_keys.extend((seq, key) for key in keys)
