"""Opening and closing a Chroma ``PersistentClient`` on every supported chromadb line.

chromadb ``>=1.0.21,<1.6``. 1.5 has ``Client.close()``; 1.0.x has none, so the shared system the
client registered for its path is stopped and forgotten instead (what ``close()`` does in 1.5).

Closing returns only once this process holds no file of the directory open. Stopping the system
drops chromadb's Rust bindings at once (no garbage collection is involved), but each SQLite
connection of its pool (sqlx) lives on its own ``sqlx-sqlite-worker`` thread, which closes the
file some time *after* the drop returns, and nobody joins that thread: measured on both lines,
38–77 % of closes returned with ``chroma.sqlite3`` still open (median 2 ms idle, 7 ms with both
cores busy; up to 100 ms). So :func:`close_client` waits for the directory's files to be
released (the process's open descriptors, compared by device and inode) and raises if they are
not within ``RELEASE_TIMEOUT_S``.

A client that fails to open leaves its half-started system in chromadb's class-level cache,
keyed by the path; the next client on that path would get that broken system (a misleading
error, or an ``AttributeError`` on 1.5). A failed open forgets it and waits for its files too.

Library errors, and chromadb's Rust panics (``PanicException``, a ``BaseException``), become
:class:`~snapmerge.errors.MergeInputError`.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import stat
import tempfile
import time
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
RELEASE_TIMEOUT_S = 30.0
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def _settings() -> Settings:
    return Settings(anonymized_telemetry=False, allow_reset=False)


def _is_panic(exc: BaseException) -> bool:
    """chromadb's Rust core panics as ``pyo3_runtime.PanicException``, a ``BaseException``."""
    return type(exc).__name__ == "PanicException"


FileId = tuple[int, int]


def _files_under(directory: Path) -> set[FileId]:
    """(device, inode) of every regular file under ``directory``."""
    found: set[FileId] = set()
    for root, _dirs, names in os.walk(directory):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.add((st.st_dev, st.st_ino))
    return found


def _descriptors_on(files: set[FileId]) -> list[int]:
    """This process's open descriptors on any of ``files`` (none where fds cannot be listed)."""
    listing = next((d for d in _FD_DIRS if os.path.isdir(d)), None)
    if listing is None or not files:
        return []
    held = []
    for name in os.listdir(listing):
        try:
            st = os.fstat(int(name))
        except (OSError, ValueError):  # closed since the listing (or the listing's own fd)
            continue
        if (st.st_dev, st.st_ino) in files:
            held.append(int(name))
    return held


def _await_release(directory: Path, files: set[FileId]) -> None:
    """Wait until no descriptor of this process is on ``files`` (of ``directory``)."""
    files = files | _files_under(directory)
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    pause = 0.0005
    while held := _descriptors_on(files):
        if time.monotonic() > deadline:
            raise MergeInputError(
                f"{directory}: {len(held)} of its files still open in this process "
                f"{RELEASE_TIMEOUT_S:g} s after its Chroma client was closed"
            )
        time.sleep(pause)  # the owner is a native thread that signals nothing: poll its result
        pause = min(pause * 2, 0.01)


def _persist_directory(client: ClientAPI) -> Path | None:
    settings = client.get_settings()
    return Path(settings.persist_directory) if settings.is_persistent else None


def close_client(client: ClientAPI) -> None:
    """Close ``client``; when that stops its path's system, return once its files are released.

    A system still shared with another open client of the same path (1.5) keeps its files open.
    """
    directory = _persist_directory(client)
    files = _files_under(directory) if directory else set()
    identifier: str = getattr(client, "_identifier")  # noqa: B009 (no such attribute in stubs)
    close = getattr(client, "close", None)
    if close is not None:  # chromadb >= 1.1
        close()
        stopped = identifier not in SharedSystemClient._identifier_to_system
    else:  # chromadb 1.0.x: one System per path, kept in a class-level cache; stop and forget it.
        system = SharedSystemClient._identifier_to_system.pop(identifier, None)
        if system is not None:
            system.stop()
        stopped = True
    if stopped and directory is not None:
        _await_release(directory, files)


@contextmanager
def open_client(directory: Path) -> Iterator[ClientAPI]:
    """An open client, closed (its files released) on exit."""
    identifier = str(directory)  # what PersistentClient keys its system by, on both lines
    cached = identifier in SharedSystemClient._identifier_to_system
    try:
        client = chromadb.PersistentClient(path=identifier, settings=_settings())
    except BaseException as exc:
        if not cached:  # the half-started system is ours: another client's would have been reused
            SharedSystemClient._identifier_to_system.pop(identifier, None)
            _await_release(directory, set())  # it walks the directory's files itself
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
