"""Opening and closing a Chroma ``PersistentClient`` on every supported chromadb line.

chromadb ``>=1.0.21,<1.6``. 1.5 has ``Client.close()``; 1.0.x has none, so the shared system the
client registered for its path is stopped and forgotten instead (what ``close()`` does in 1.5).
Either way the caller garbage-collects afterwards: ``close()`` alone leaves one SQLite handle in
a reference cycle. Library errors, and chromadb's Rust panics (``PanicException``, a
``BaseException``), become :class:`~snapmerge.errors.MergeInputError`.
"""

from __future__ import annotations

import functools
import gc
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings
from chromadb.errors import ChromaError

from snapmerge.adapters import chroma_format as fmt
from snapmerge.errors import MergeInputError

LIBRARY_ERRORS = (ChromaError, sqlite3.Error, ValueError, RuntimeError, OSError)


def _settings() -> Settings:
    return Settings(anonymized_telemetry=False, allow_reset=False)


def _is_panic(exc: BaseException) -> bool:
    """chromadb's Rust core panics as ``pyo3_runtime.PanicException``, a ``BaseException``."""
    return type(exc).__name__ == "PanicException"


def close_client(client: ClientAPI) -> None:
    close = getattr(client, "close", None)
    if close is not None:  # chromadb >= 1.1
        close()
        return
    # chromadb 1.0.x: one System per path, kept in a class-level cache; stop and forget it.
    identifier: str = getattr(client, "_identifier")  # noqa: B009 (no such attribute in stubs)
    system = SharedSystemClient._identifier_to_system.pop(identifier, None)
    if system is not None:
        system.stop()


@contextmanager
def open_client(directory: Path, *, collect: bool = True) -> Iterator[ClientAPI]:
    """An open client, closed on exit; ``collect=False`` leaves the final ``gc`` to the caller."""
    try:
        client = chromadb.PersistentClient(path=str(directory), settings=_settings())
    except BaseException as exc:
        if not isinstance(exc, LIBRARY_ERRORS) and not _is_panic(exc):
            raise
        raise MergeInputError(f"{directory}: corrupt or unreadable Chroma database: {exc}") from exc
    try:
        yield client
    except BaseException as exc:
        if not isinstance(exc, LIBRARY_ERRORS) and not _is_panic(exc):
            raise
        raise MergeInputError(f"{directory}: Chroma failed: {exc}") from exc
    finally:
        close_client(client)
        if collect:
            gc.collect()  # the last SQLite handle sits in a reference cycle


@functools.cache
def running_format() -> fmt.ChromaFormat:
    """The format the running chromadb writes (read once from a new, empty directory)."""
    scratch = Path(tempfile.mkdtemp(prefix="snapmerge-format-"))
    try:
        with open_client(scratch):
            pass
        return fmt.read_format(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
