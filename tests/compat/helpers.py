"""Shared pieces of the compatibility suite: the committed fixtures and file snapshots."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from snapmerge.adapters.chroma_format import CHROMADB_1_0, CHROMADB_1_5, ChromaFormat
from snapmerge.adapters.chroma_index import running_format
from tests.compat.make_fixture import fixture_path

# The fixture each measured line wrote (tests/compat/make_fixture.py), by the format it holds.
FIXTURES: dict[ChromaFormat, Path] = {
    CHROMADB_1_0: fixture_path("1.0.21"),
    CHROMADB_1_5: fixture_path("1.5.9"),
}


def other_line() -> ChromaFormat:
    """The measured line the running chromadb is not on."""
    return CHROMADB_1_5 if running_format() == CHROMADB_1_0 else CHROMADB_1_0


def extract(fixture: Path, dest: Path) -> Path:
    with tarfile.open(fixture) as tar:
        tar.extractall(dest, filter="data")
    return dest


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory``: proves nothing was written there."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
