"""An in-memory :class:`~snapmerge.ports.BlobStore` with S3's contract, for tests and nemeses.

One lock makes every operation atomic, as S3 applies a conditional write atomically; the same
contract suite (``tests/contract/``) runs against this and the S3 adapter so they cannot drift.

Fault injection:

- ``fail_next(op, error, count=1, after=False)`` makes the next ``count`` calls of ``op`` raise
  ``error``; with ``after=True`` the call takes effect first and *then* raises, which is how a
  lost reply looks to the caller (the write landed, the answer did not).
- ``before_put`` is called with the key before each ``put`` is evaluated, outside the lock, so a
  test can slip another writer in between a read and a conditional write.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from snapmerge.errors import PointerConflictError, StoreError
from snapmerge.ports import Blob

T = TypeVar("T")

OPERATIONS = frozenset({"get", "put", "upload_file", "download_file", "list", "delete"})


@dataclass
class _Fault:
    error: Exception
    remaining: int
    after: bool


def _etag(body: bytes) -> str:
    return f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'


class MemoryBlobStore:
    """A bucket held in a dict. ETags are the quoted MD5 of the body, like a simple S3 PUT."""

    def __init__(self, bucket: str = "memory") -> None:
        self.bucket = bucket
        self.before_put: Callable[[str], None] | None = None
        self._lock = threading.Lock()
        self._objects: dict[str, Blob] = {}
        self._faults: dict[str, list[_Fault]] = {}

    # -- fault injection -----------------------------------------------------------------------
    def fail_next(self, op: str, error: Exception, count: int = 1, *, after: bool = False) -> None:
        """Make the next ``count`` calls of ``op`` raise ``error`` (after acting, if ``after``)."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}: expected one of {sorted(OPERATIONS)}")
        with self._lock:
            self._faults.setdefault(op, []).append(_Fault(error, count, after))

    def _take_fault(self, op: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(op)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    def _run(self, op: str, action: Callable[[], T]) -> T:
        fault = self._take_fault(op)
        if fault is not None and not fault.after:
            raise fault.error
        result = action()
        if fault is not None:
            raise fault.error
        return result

    # -- the BlobStore port --------------------------------------------------------------------
    def get(self, key: str) -> Blob | None:
        def action() -> Blob | None:
            with self._lock:
                return self._objects.get(key)

        return self._run("get", action)

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        if self.before_put is not None:
            self.before_put(key)

        def action() -> str:
            with self._lock:
                current = self._objects.get(key)
                if if_none_match and current is not None:
                    raise PointerConflictError(key, expected="*")
                if if_match is not None and (
                    current is None or current.etag.strip('"') != if_match.strip('"')
                ):
                    raise PointerConflictError(key, expected=if_match)
                blob = Blob(bytes(body), _etag(body), dict(metadata or {}))
                self._objects[key] = blob
                return blob.etag

        return self._run("put", action)

    def upload_file(self, key: str, path: Path) -> None:
        def action() -> None:
            try:
                body = path.read_bytes()
            except OSError as exc:
                raise StoreError(f"upload {path} to memory://{self.bucket}/{key}: {exc}") from exc
            with self._lock:
                self._objects[key] = Blob(body, _etag(body), {})

        self._run("upload_file", action)

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        def action() -> None:
            with self._lock:
                blob = self._objects.get(key)
            if blob is None:
                raise StoreError(f"memory://{self.bucket}/{key} does not exist")
            if progress is not None:
                progress(len(blob.body))  # before writing: a refusal writes nothing
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(blob.body)
            shutil.move(partial, path)

        self._run("download_file", action)

    def list_etags(self, prefix: str) -> list[tuple[str, str]]:
        def action() -> list[tuple[str, str]]:
            with self._lock:
                return sorted((k, b.etag) for k, b in self._objects.items() if k.startswith(prefix))

        return self._run("list", action)

    def list(self, prefix: str) -> list[str]:
        return [key for key, _ in self.list_etags(prefix)]

    def delete(self, keys: Sequence[str]) -> None:
        def action() -> None:
            with self._lock:
                for key in keys:
                    self._objects.pop(key, None)

        self._run("delete", action)
