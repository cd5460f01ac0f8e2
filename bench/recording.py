"""What a benchmark run watches without touching the paths: lock grants, uploads, publishes.

The paths get a wrapped bucket and lock table; the wrappers pass every call through and note:

* each lock grant's hold, from ``try_acquire`` returning it to its ``release``;
* each version whose commit-log entry turned `complete` (every file of it uploaded: a version was
  built and uploaded), and each pointer write that landed, in order (a publish).

``uploaded - published`` is then the number of wasted builds, whatever the result shape says.
:class:`Fingerprints` compares a snapshot's content with the expected one without holding the
vectors (13k x 1536 floats as Python tuples would take most of a gigabyte).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from snapmerge.domain import Record
from snapmerge.ports import Blob, BlobStore, DelegatingBlobStore, LeaseGrant, LeaseTable
from snapmerge.snapshots import completed_entry


@dataclass
class RunRecord:
    """What one execution (or a whole run, :meth:`merged`) saw; thread-safe, picklable.

    ``published`` holds ``(time.time(), version)`` per landed pointer write: wall-clock times
    order the publishes of executions in different processes (each publish reads the pointer
    the one before it wrote, so two landed writes are never close enough to tie).
    """

    holds_ms: list[float] = field(default_factory=list)
    uploaded: set[str] = field(default_factory=set)
    published: list[tuple[float, str]] = field(default_factory=list)
    _open: dict[tuple[str, int], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def merged(cls, records: Iterable[RunRecord]) -> RunRecord:
        out = cls()
        for r in records:
            out.holds_ms += r.holds_ms
            out.uploaded |= r.uploaded
            out.published += r.published
        out.published.sort()
        return out

    @property
    def publish_order(self) -> list[str]:
        return [version for _, version in sorted(self.published)]

    def granted(self, grant: LeaseGrant) -> None:
        with self._lock:
            self._open[(grant.lock_id, grant.fence)] = time.perf_counter()

    def released(self, grant: LeaseGrant) -> None:
        with self._lock:
            began = self._open.pop((grant.lock_id, grant.fence), None)
            if began is not None:
                self.holds_ms.append((time.perf_counter() - began) * 1000.0)

    def upload(self, version: str) -> None:
        with self._lock:
            self.uploaded.add(version)

    def publish(self, version: str) -> None:
        with self._lock:
            self.published.append((time.time(), version))


class RecordingLeaseTable:
    def __init__(self, inner: LeaseTable, record: RunRecord) -> None:
        self.inner, self.record = inner, record

    def try_acquire(
        self, lock_id: str, collection: str, owner: str, duration: timedelta
    ) -> LeaseGrant:
        grant = self.inner.try_acquire(lock_id, collection, owner, duration)
        self.record.granted(grant)
        return grant

    def renew(self, grant: LeaseGrant, duration: timedelta) -> LeaseGrant:
        return self.inner.renew(grant, duration)

    def release(self, grant: LeaseGrant) -> None:
        self.record.released(grant)
        self.inner.release(grant)

    def read(self, lock_id: str, collection: str | None = None) -> LeaseGrant | None:
        return self.inner.read(lock_id, collection)


class RecordingBlobStore(DelegatingBlobStore):
    """Notes versions whose log entry turned complete, and landed writes of a pointer."""

    def __init__(self, inner: BlobStore, record: RunRecord) -> None:
        super().__init__(inner)
        self.record = record

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        etag = self.inner.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )
        if key.endswith("/latest-pointer.txt"):
            self.record.publish(body.decode().strip())
        elif (entry := completed_entry(key, body)) is not None:
            self.record.upload(entry.version)  # its log entry turned complete: every file is up
        return etag


def fingerprint(record: Record) -> str:
    """Id, float32 vector bytes, document and metadata: equal iff the content is equal."""
    h = hashlib.blake2b(digest_size=16)
    h.update(record.id.encode())
    h.update(np.asarray(record.embedding, dtype=np.float32).tobytes())
    h.update((record.document or "").encode())
    h.update(json.dumps(record.metadata or {}, sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class Fingerprints:
    by_id: dict[str, str]

    @classmethod
    def of(cls, records: Iterable[Record]) -> Fingerprints:
        return cls({r.id: fingerprint(r) for r in records})

    def apply(self, records: Iterable[Record]) -> None:
        """A later write of these records (last write wins)."""
        self.by_id.update((r.id, fingerprint(r)) for r in records)

    def compare(self, actual: Fingerprints) -> dict[str, int]:
        """Counts of ids missing, unexpected, and present with the wrong content."""
        want, got = self.by_id, actual.by_id
        return {
            "missing": len(want.keys() - got.keys()),
            "unexpected": len(got.keys() - want.keys()),
            "wrong_content": sum(1 for k in want.keys() & got.keys() if want[k] != got[k]),
        }


class CountingBlobStore(DelegatingBlobStore):
    """Counts requests by operation (GET, PUT, LIST, DELETE), whatever thread sends them.

    ``upload_file`` counts as a PUT and ``download_file`` as a GET (one object each); a
    ``delete`` of several keys is one request, as S3's DeleteObjects is.
    """

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        # (operation, area): the area is the key's segment after ``{db}/snapshot/`` (claims,
        # changes, …), else its first segment — what a test pins request by request
        self.calls: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @staticmethod
    def area(key: str) -> str:
        parts = key.split("/")
        return parts[2] if len(parts) > 2 and parts[1] == "snapshot" else parts[0]

    def _note(self, op: str, key: str) -> None:
        with self._lock:
            self.calls[op, self.area(key)] += 1

    def snapshot(self) -> dict[str, int]:
        """Requests so far by operation."""
        totals: Counter[str] = Counter()
        with self._lock:
            for (op, _), n in self.calls.items():
                totals[op] += n
        return dict(totals)

    def get(self, key: str) -> Blob | None:
        self._note("GET", key)
        return self.inner.get(key)

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self._note("PUT", key)
        return self.inner.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )

    def upload_file(self, key: str, path: Path) -> None:
        self._note("PUT", key)
        self.inner.upload_file(key, path)

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        self._note("GET", key)
        self.inner.download_file(key, path, progress=progress)

    def list_etags(self, prefix: str) -> list[tuple[str, str]]:
        self._note("LIST", prefix)
        return self.inner.list_etags(prefix)

    def list(self, prefix: str) -> list[str]:
        self._note("LIST", prefix)
        return self.inner.list(prefix)

    def delete(self, keys: Sequence[str]) -> None:
        self._note("DELETE", keys[0] if keys else "")
        self.inner.delete(keys)
