"""The on-disk format of a Chroma directory, read from its ``chroma.sqlite3`` without chromadb.

A Chroma ``PersistentClient`` applies its system-database migrations to a directory the moment it
opens it, and an older chromadb cannot open the result: chromadb 1.0.21 panics
(``PanicException``, a ``BaseException``) on a directory that chromadb 1.5 has opened, because
1.5 records sysdb migration 10 and 1.0.21 knows nine. The format is therefore a contract with
every reader of a published snapshot (DESIGN §1).

The format is the highest migration recorded for each migration directory in the database's
``migrations`` table (``sysdb``, ``metadb``, ``embeddings_queue``), read over a read-only SQLite
connection, so telling the format never changes the file. A database whose migrations are
missing, unknown or have gaps has no format we can tell: :class:`SnapshotFormatError`.

Measured lines (what each writes into a new directory):

==================  =================================
chromadb 1.0.21     ``sysdb9.metadb5.queue2``
chromadb 1.5.9      ``sysdb10.metadb6.queue2``
==================  =================================
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from dataclasses import astuple, dataclass
from pathlib import Path

from snapmerge.errors import InvalidEventError, SnapshotFormatError

DB_FILE = "chroma.sqlite3"
MIGRATION_DIRS = ("sysdb", "metadb", "embeddings_queue")
UPGRADE_ENV = "SNAPMERGE_ALLOW_FORMAT_UPGRADE"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class ChromaFormat:
    """The highest migration applied per migration directory."""

    sysdb: int
    metadb: int
    embeddings_queue: int

    @property
    def id(self) -> str:
        return f"sysdb{self.sysdb}.metadb{self.metadb}.queue{self.embeddings_queue}"

    @property
    def line(self) -> str:
        """The chromadb line known to write this format, or a plain description."""
        return KNOWN_LINES.get(self, "an unrecognised chromadb line")

    def newer_than(self, other: ChromaFormat) -> bool:
        """True if any directory has a migration ``other`` lacks (``other`` cannot open it)."""
        return any(a > b for a, b in zip(astuple(self), astuple(other), strict=True))

    def __str__(self) -> str:
        return f"{self.id} ({self.line})"


CHROMADB_1_0 = ChromaFormat(9, 5, 2)
CHROMADB_1_5 = ChromaFormat(10, 6, 2)
KNOWN_LINES = {CHROMADB_1_0: "chromadb 1.0.21", CHROMADB_1_5: "chromadb 1.5.x"}


def read_format(directory: Path) -> ChromaFormat:
    """The format of the Chroma directory ``directory``; the file is opened read-only."""
    path = directory / DB_FILE
    if not path.is_file():
        raise SnapshotFormatError(f"{directory}: cannot tell its format: no {DB_FILE}")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            rows = con.execute("SELECT dir, version FROM migrations").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise SnapshotFormatError(
            f"{directory}: cannot tell its format: {DB_FILE} has no readable migrations table "
            f"({exc})"
        ) from exc
    return _from_rows(directory, rows)


def _from_rows(directory: Path, rows: list[tuple[object, object]]) -> ChromaFormat:
    seen: dict[str, set[int]] = defaultdict(set)
    for name, version in rows:
        if not isinstance(name, str) or not isinstance(version, int):
            raise SnapshotFormatError(
                f"{directory}: cannot tell its format: migration row {(name, version)!r}"
            )
        seen[name].add(version)
    unknown = sorted(set(seen) - set(MIGRATION_DIRS))
    missing = [d for d in MIGRATION_DIRS if d not in seen]
    if unknown or missing:
        raise SnapshotFormatError(
            f"{directory}: cannot tell its format: migration directories "
            f"missing {missing}, unknown {unknown}"
        )
    highest = []
    for name in MIGRATION_DIRS:
        versions = seen[name]
        if versions != set(range(1, max(versions) + 1)):
            raise SnapshotFormatError(
                f"{directory}: cannot tell its format: {name} migrations {sorted(versions)} "
                "are not 1..n"
            )
        highest.append(max(versions))
    return ChromaFormat(*highest)


def upgrade_allowed(env: dict[str, str] | None = None) -> bool:
    """``SNAPMERGE_ALLOW_FORMAT_UPGRADE``: may a merge leave a base in a newer format?"""
    raw = (os.environ if env is None else env).get(UPGRADE_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidEventError(f"{UPGRADE_ENV}={raw!r}: expected one of 1/0, true/false, yes/no")


def check_base(base: ChromaFormat, running: ChromaFormat, where: Path, *, allow: bool) -> None:
    """Refuse a directory this chromadb cannot open, or would migrate without the operator's
    consent (opening migrates; a merge target is then published in the new format)."""
    if base.newer_than(running):
        raise SnapshotFormatError(
            f"{where}: snapshot format {base} is newer than this chromadb's {running}: opening "
            f"it would fail. Run snapmerge on the chromadb line of its readers ({base.line})."
        )
    if running.newer_than(base) and not allow:
        raise SnapshotFormatError(
            f"{where}: snapshot format {base}; opening it with this chromadb migrates it to "
            f"{running}, which readers on {base.line} cannot open. Run snapmerge on the "
            f"readers' chromadb line ({base.line}), or set {UPGRADE_ENV}=1 to upgrade the "
            "format on purpose."
        )


def check_source(source: ChromaFormat, running: ChromaFormat, where: Path) -> None:
    """A source (delta, intermediate) is opened in place: only a newer format is a problem."""
    if source.newer_than(running):
        raise SnapshotFormatError(
            f"{where}: input format {source} is newer than this chromadb's {running}: it cannot "
            f"be opened. Run snapmerge on {source.line} or write the input with {running.line}."
        )
