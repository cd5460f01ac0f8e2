"""A BlobStore that passes every call through; the harness's wrappers override what they watch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from snapmerge.ports import Blob, BlobStore


class DelegatingBlobStore:
    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.bucket = inner.bucket

    def get(self, key: str) -> Blob | None:
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
        return self.inner.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )

    def upload_file(self, key: str, path: Path) -> None:
        self.inner.upload_file(key, path)

    def download_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        self.inner.download_file(key, path, progress=progress)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, keys: Sequence[str]) -> None:
        self.inner.delete(keys)
