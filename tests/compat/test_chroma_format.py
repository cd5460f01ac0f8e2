"""Telling a snapshot's chromadb format from its file, and refusing a merge that would change it.

Runs on both chromadb lines (``make test`` on 1.5, ``make test-chroma-1021`` on 1.0.21); each
line meets the other line's fixture: on 1.5 the base is older (an upgrade, refused unless
allowed), on 1.0.21 it is newer (it cannot be opened: refused instead of a panic).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import chromadb
import pytest

from snapmerge import synth
from snapmerge.adapters import chroma_format as fmt
from snapmerge.adapters.chroma_index import ChromaIndex, running_format
from snapmerge.errors import InvalidEventError, MergeInputError, SnapshotFormatError
from tests.compat.helpers import FIXTURES, extract, other_line, tree_digest
from tests.compat.make_fixture import COUNT, DIMENSION, fixture_records

RUNNING_IS_1_0 = running_format() == fmt.CHROMADB_1_0


def test_each_line_writes_the_format_named_for_it(tmp_path: Path) -> None:
    for line, fixture in FIXTURES.items():
        assert fmt.read_format(extract(fixture, tmp_path / line.id)) == line
    assert running_format() in FIXTURES
    if chromadb.__version__ == "1.0.21":
        assert running_format() == fmt.CHROMADB_1_0
    if chromadb.__version__.startswith("1.5."):
        assert running_format() == fmt.CHROMADB_1_5
    assert fmt.CHROMADB_1_5.newer_than(fmt.CHROMADB_1_0)
    assert not fmt.CHROMADB_1_0.newer_than(fmt.CHROMADB_1_5)
    assert "chromadb 1.0.21" in str(fmt.CHROMADB_1_0)


def test_reading_the_format_changes_nothing(tmp_path: Path) -> None:
    directory = extract(FIXTURES[other_line()], tmp_path / "d")
    before = tree_digest(directory)
    fmt.read_format(directory)
    assert tree_digest(directory) == before
    assert sorted(p.name for p in directory.iterdir() if p.is_file()) == ["chroma.sqlite3"]


def _migrations(tmp: Path, rows: list[tuple[str, int]] | None) -> Path:
    tmp.mkdir()
    con = sqlite3.connect(tmp / "chroma.sqlite3")
    if rows is not None:
        con.execute("CREATE TABLE migrations (dir TEXT, version INTEGER, filename TEXT)")
        con.executemany("INSERT INTO migrations VALUES (?, ?, 'x.sql')", rows)
    else:
        con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    return tmp


def _full(sysdb: int = 9, skip: tuple[str, int] | None = None) -> list[tuple[str, int]]:
    rows = [("sysdb", v) for v in range(1, sysdb + 1)]
    rows += [("metadb", v) for v in range(1, 6)] + [("embeddings_queue", v) for v in (1, 2)]
    return [r for r in rows if r != skip]


@pytest.mark.parametrize(
    ("name", "rows", "why"),
    [
        ("no-table", None, "no readable migrations table"),
        ("gap", _full(skip=("sysdb", 4)), r"sysdb migrations \[1, 2, 3, 5"),
        ("missing-dir", [r for r in _full() if r[0] != "metadb"], r"missing \['metadb'\]"),
        ("unknown-dir", [*_full(), ("vectordb", 1)], r"unknown \['vectordb'\]"),
    ],
)
def test_a_format_that_cannot_be_told_is_an_error(
    tmp_path: Path, name: str, rows: list[tuple[str, int]] | None, why: str
) -> None:
    directory = _migrations(tmp_path / name, rows)
    with pytest.raises(SnapshotFormatError, match=f"cannot tell its format: .*{why}"):
        fmt.read_format(directory)


def test_no_database_or_a_corrupt_one_cannot_be_told(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotFormatError, match=r"no chroma\.sqlite3"):
        fmt.read_format(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "chroma.sqlite3").write_bytes(b"not a database" * 300)
    with pytest.raises(SnapshotFormatError, match="no readable migrations table"):
        fmt.read_format(tmp_path / "bad")
    assert issubclass(SnapshotFormatError, MergeInputError)  # an input no retry can fix


def test_the_upgrade_setting_is_parsed_strictly() -> None:
    assert fmt.upgrade_allowed({fmt.UPGRADE_ENV: " True "}) is True
    assert fmt.upgrade_allowed({fmt.UPGRADE_ENV: "0"}) is False
    assert fmt.upgrade_allowed({}) is False
    with pytest.raises(InvalidEventError, match=fmt.UPGRADE_ENV):
        fmt.upgrade_allowed({fmt.UPGRADE_ENV: "maybe"})


def _source(tmp_path: Path) -> Path:
    rows = synth.records(77, 5, DIMENSION, id_prefix="new")
    synth.write_index(ChromaIndex(), tmp_path / "src", rows, "receipt_words")
    return tmp_path / "src"


@pytest.mark.skipif(RUNNING_IS_1_0, reason="on 1.0.21 the other line's base is newer (below)")
def test_older_base_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    base = extract(FIXTURES[fmt.CHROMADB_1_0], tmp_path / "base")
    before = tree_digest(base)
    with pytest.raises(SnapshotFormatError) as info:
        ChromaIndex(allow_format_upgrade=False).merge(base, [_source(tmp_path)], collection="words")
    message = str(info.value)
    for part in (str(base), fmt.CHROMADB_1_0.id, running_format().id, fmt.UPGRADE_ENV, "1.0.21"):
        assert part in message
    assert tree_digest(base) == before  # never opened: chromadb would have migrated it


@pytest.mark.skipif(RUNNING_IS_1_0, reason="nothing is older than 1.0.21's format")
def test_an_allowed_upgrade_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = extract(FIXTURES[fmt.CHROMADB_1_0], tmp_path / "base")
    monkeypatch.setenv(fmt.UPGRADE_ENV, "1")
    engine = ChromaIndex()  # reads the setting from the environment
    stats = engine.merge(base, [_source(tmp_path)], collection="words")
    assert (stats.format_before, stats.format_after) == (fmt.CHROMADB_1_0.id, running_format().id)
    assert stats.format_upgraded and stats.final_count == COUNT + 5
    assert fmt.read_format(base) == running_format()
    got = {r.id: r for page in engine.read_records(base) for r in page}
    assert all(got[r.id].metadata == r.metadata for r in fixture_records())


@pytest.mark.skipif(RUNNING_IS_1_0, reason="needs a base older than the running line")
def test_the_after_check_catches_an_upgrade_the_pre_check_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: with the pre-check disabled, the format read after closing refuses."""
    base = extract(FIXTURES[fmt.CHROMADB_1_0], tmp_path / "base")
    monkeypatch.setattr(fmt, "check_base", lambda *a, **k: None)
    with pytest.raises(SnapshotFormatError, match="changed the base's format from sysdb9"):
        ChromaIndex(allow_format_upgrade=False).merge(base, [_source(tmp_path)], collection="words")


@pytest.mark.skipif(not RUNNING_IS_1_0, reason="on 1.5 the other line's base is older (above)")
def test_newer_base_or_input_is_refused_not_a_panic(tmp_path: Path) -> None:
    newer = extract(FIXTURES[fmt.CHROMADB_1_5], tmp_path / "newer")
    before = tree_digest(newer)
    source = _source(tmp_path)
    for allow in (False, True):  # no setting makes a newer format openable
        with pytest.raises(SnapshotFormatError, match=r"newer than this chromadb's sysdb9"):
            ChromaIndex(allow_format_upgrade=allow).merge(newer, [source], collection="words")
    shutil.copytree(newer, tmp_path / "as-input")
    with pytest.raises(SnapshotFormatError, match="input format sysdb10"):
        ChromaIndex().merge(tmp_path / "fresh", [tmp_path / "as-input"], collection="words")
    assert tree_digest(newer) == before


def test_same_format_and_new_target_merge_without_upgrade(tmp_path: Path) -> None:
    engine = ChromaIndex(allow_format_upgrade=False)
    stats = engine.merge(tmp_path / "new", [_source(tmp_path)], collection="words")
    assert (stats.format_before, stats.format_after) == (None, running_format().id)
    assert not stats.format_upgraded
    base = extract(FIXTURES[running_format()], tmp_path / "base")
    synth.write_index(engine, tmp_path / "more", synth.records(5, 3, DIMENSION, "m"), "words")
    stats = engine.merge(base, [tmp_path / "more"], collection="words")
    assert stats.format_before == stats.format_after == running_format().id
    assert not stats.format_upgraded and stats.final_count == COUNT + 3


def test_reading_refuses_what_it_would_migrate_or_cannot_open(tmp_path: Path) -> None:
    """count/digest/read_records open the directory too, and opening migrates it."""
    line = other_line()
    directory = extract(FIXTURES[line], tmp_path / "d")
    before = tree_digest(directory)
    engine = ChromaIndex(allow_format_upgrade=False)
    for read in (engine.count, engine.digest, lambda d: list(engine.read_records(d))):
        with pytest.raises(SnapshotFormatError, match=line.id):
            read(directory)
    assert tree_digest(directory) == before
    if not RUNNING_IS_1_0:  # an older directory may be read (and migrated) on purpose
        assert ChromaIndex(allow_format_upgrade=True).count(directory) == COUNT
        assert fmt.read_format(directory) == running_format()
