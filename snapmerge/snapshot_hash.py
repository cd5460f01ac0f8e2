"""The ``.snapshot_hash`` file the original pipeline's verifier reads beside each version.

Its verifier downloads a version, recomputes a digest of the directory and compares it with the
JSON in ``{prefix}.snapshot_hash``: the digest, the algorithm, the file count and the byte total.
The digest (written here from the format, independently of the original's code):

* every regular file under the directory, by its relative POSIX path, except paths matching
  ``*.tmp``, ``*.log`` or ``.snapshot_hash`` (shell-style patterns over the whole relative path);
* in path order, one line per file: ``<md5 hex of the content>  <relative path>\\n``;
* the md5 of those lines, UTF-8 encoded, in order.

A version whose hash file was copied from its base fails that check, so every version we upload
gets a hash computed over exactly the files we upload (``SnapshotStore.upload_version``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HASH_NAME = ".snapshot_hash"
EXCLUDED = ("*.tmp", "*.log", HASH_NAME)
ALGORITHM = "md5"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class DirectoryHash:
    directory_hash: str
    file_count: int
    total_size_bytes: int
    algorithm: str = ALGORITHM

    def to_json(self) -> str:
        """The file's body: the four fields the verifier requires, plus when it was made."""
        return json.dumps(
            {
                "directory_hash": self.directory_hash,
                "algorithm": self.algorithm,
                "file_count": self.file_count,
                "total_size_bytes": self.total_size_bytes,
                "calculated_at": datetime.now(UTC).isoformat(),
                "calculation_time_seconds": 0.0,
                "version": "1.0",
            },
            indent=2,
        )


def excluded(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in EXCLUDED)


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hash_files(files: Iterable[tuple[str, Path]]) -> DirectoryHash:
    """The directory hash of ``(relative path, path)`` pairs (exclusions applied here)."""
    kept = sorted((rel, path) for rel, path in files if not excluded(rel))
    total = hashlib.md5(usedforsecurity=False)
    size = 0
    for rel, path in kept:
        total.update(f"{_file_md5(path)}  {rel}\n".encode())
        size += path.stat().st_size
    return DirectoryHash(total.hexdigest(), len(kept), size)
