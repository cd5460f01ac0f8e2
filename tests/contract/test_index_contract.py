"""One IndexEngine contract, run against MemoryIndex (the fake) and ChromaIndex (the real one)."""

from __future__ import annotations

import gc
import os
import shutil
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from snapmerge import synth
from snapmerge.adapters import chroma_client
from snapmerge.adapters.chroma_client import open_client
from snapmerge.adapters.chroma_index import ChromaIndex, close_client
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.merge_plan import digest_records, normalize
from snapmerge.domain import Record
from snapmerge.errors import MergeInputError

DIM = 16
Engine = ChromaIndex | MemoryIndex


@pytest.fixture(params=["memory", "chroma"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return MemoryIndex() if request.param == "memory" else ChromaIndex()


def make(engine: Engine, where: Path, rows: Sequence[Record], collection: str = "words") -> Path:
    synth.write_index(engine, where, rows, collection)
    return where


def contents(engine: Engine, directory: Path) -> dict[str, Record]:
    return {r.id: r for page in engine.read_records(directory) for r in page}


def expected_digest(*writes: Sequence[Record]) -> str:
    return digest_records(normalize(r) for r in synth.expected_state(writes).values())


def open_files_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory.resolve())):
            found.append(target)
    return found


def test_merge_into_empty_target(engine: Engine, tmp_path: Path) -> None:
    a = synth.records(1, 120, DIM, id_prefix="a")
    b = synth.records(2, 80, DIM, id_prefix="b")
    sources = [make(engine, tmp_path / "a", a, "receipt_words"), make(engine, tmp_path / "b", b)]
    stats = engine.merge(tmp_path / "out", sources, collection="words")
    assert (stats.base_count, stats.new_ids, stats.final_count) == (0, 200, 200)
    assert stats.dimension == DIM
    assert set(stats.timings_ms) >= {"read", "fold", "classify", "write"}
    assert engine.digest(tmp_path / "out") == expected_digest(a, b)
    assert contents(engine, tmp_path / "out")["a00000005"] == normalize(a[5])


def test_merge_into_base_classifies_every_kind(engine: Engine, tmp_path: Path) -> None:
    base = synth.records(1, 200, DIM)
    make(engine, tmp_path / "base", base)
    changed = synth.overwrite(base, seed=3, fraction=0.3, vector_fraction=0.5)
    touched = {r.id for r in changed}
    identical = [r for r in base if r.id not in touched][:20]
    new = synth.records(2, 50, DIM, id_prefix="n")
    src = make(engine, tmp_path / "src", [*new, *changed, *identical])
    stats = engine.merge(tmp_path / "base", [src], collection="words")
    assert stats.base_count == 200
    assert (stats.new_ids, stats.changed_vectors, stats.metadata_only, stats.unchanged) == (
        50,
        30,
        30,
        20,
    )
    assert stats.final_count == engine.count(tmp_path / "base") == 250
    assert engine.digest(tmp_path / "base") == expected_digest(base, new, changed)


def test_last_writer_wins_at_every_level(engine: Engine, tmp_path: Path) -> None:
    base = synth.records(1, 60, DIM)
    writes = [
        [*synth.overwrite(base, seed=s, fraction=0.5, vector_fraction=0.5), *extra]
        for s, extra in ((10, synth.records(4, 10, DIM, "x")), (11, []), (12, []))
    ]
    writes[1].extend(synth.records(5, 10, DIM, "x"))  # the same new ids, written again
    srcs = [make(engine, tmp_path / f"s{i}", w) for i, w in enumerate(writes)]
    for name in ("direct", "staged"):
        make(engine, tmp_path / name, base)
    stats = engine.merge(tmp_path / "direct", srcs, collection="words")
    assert (stats.new_ids, stats.final_count) == (10, 70)
    engine.merge(tmp_path / "mid", srcs[:2], collection="receipt_words")
    engine.merge(tmp_path / "staged", [tmp_path / "mid", srcs[2]], collection="words")
    want = expected_digest(base, *writes)
    assert engine.digest(tmp_path / "direct") == engine.digest(tmp_path / "staged") == want


def test_metadata_and_document_end_exactly_as_last_written(engine: Engine, tmp_path: Path) -> None:
    vecs = [r.embedding for r in synth.records(9, 6, DIM)]
    other = synth.records(8, 6, DIM)
    full = {"a": 1, "b": "x", "c": True}
    base = [Record(f"k{i}", vecs[i], "doc", dict(full)) for i in range(5)]
    base.append(Record("k5", vecs[5], "doc", None))
    later = [
        Record("k0", vecs[0], "doc", {"a": 1}),  # keys removed, vector kept
        Record("k1", vecs[1], "doc", None),  # every key removed
        Record("k2", other[2].embedding, "doc", {"d": 2.5}),  # new vector, other keys
        Record("k3", vecs[3], None, dict(full)),  # document removed
        Record("k4", vecs[4], "doc", {"a": True, "b": "x", "c": True}),  # 1 -> True
        Record("k5", vecs[5], "new doc", {"z": 1}),  # document changed, metadata added
    ]
    make(engine, tmp_path / "base", base)
    stats = engine.merge(
        tmp_path / "base", [make(engine, tmp_path / "s", later)], collection="words"
    )
    assert (stats.changed_vectors, stats.metadata_only, stats.new_ids) == (1, 5, 0)
    got = contents(engine, tmp_path / "base")
    assert got == {r.id: normalize(r) for r in later}
    assert type(got["k4"].metadata["a"]) is bool  # type: ignore[index]
    assert engine.digest(tmp_path / "base") == expected_digest(later)


def _drop_one_written_record(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sabotage the write path so one new record silently goes missing."""
    if isinstance(engine, MemoryIndex):
        real_store = MemoryIndex._store

        def store(self: MemoryIndex, directory: Path, name: str, rows: dict[str, Any]) -> None:
            real_store(self, directory, name, dict(list(rows.items())[:-1]))

        monkeypatch.setattr(MemoryIndex, "_store", store)
        return
    from chromadb.api.models.Collection import Collection

    real_add = Collection.add

    def add(self: Collection, ids: list[str], **kw: Any) -> None:
        kw = {k: (v[:-1] if v is not None else None) for k, v in kw.items()}
        real_add(self, ids=ids[:-1], **kw)

    monkeypatch.setattr(Collection, "add", add)


def test_count_check_catches_a_lost_record(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make(engine, tmp_path / "base", synth.records(1, 30, DIM))
    src = make(engine, tmp_path / "s", synth.records(2, 20, DIM, "n"))
    _drop_one_written_record(engine, monkeypatch)
    with pytest.raises(MergeInputError, match=r"30 \(base\) \+ 20"):
        engine.merge(tmp_path / "base", [src], collection="words")


@pytest.mark.parametrize(
    ("base_dim", "arg", "dims", "bad"),
    [(16, None, (16, 8), 8), (None, 16, (16, 8), 8), (None, None, (8, 16), 16), (16, 8, (8,), 16)],
)
def test_dimension_mismatch_is_refused(
    engine: Engine,
    tmp_path: Path,
    base_dim: int | None,
    arg: int | None,
    dims: tuple[int, ...],
    bad: int,
) -> None:
    if base_dim:
        make(engine, tmp_path / "base", synth.records(1, 10, base_dim))
    srcs = [make(engine, tmp_path / f"s{d}", synth.records(d, 5, d, f"s{d}-")) for d in dims]
    with pytest.raises(MergeInputError, match=rf"dimension {bad}, expected") as info:
        engine.merge(tmp_path / "base", srcs, collection="words", dimension=arg)
    assert str(tmp_path) in str(info.value)


def _not_an_index(engine: Engine, where: Path) -> None:
    where.mkdir()
    (where / "notes.txt").write_text("hello")


def _empty_index(engine: Engine, where: Path) -> None:
    make(engine, where, [])


def _corrupt_db(engine: Engine, where: Path) -> None:
    make(engine, where, synth.records(3, 5, DIM))
    (where / "chroma.sqlite3").write_bytes(b"this is not a database" * 200)


def _missing(engine: Engine, where: Path) -> None:
    return None


@pytest.mark.parametrize("spoil", [_not_an_index, _empty_index, _corrupt_db, _missing])
def test_unusable_source_is_refused_and_base_untouched(
    engine: Engine, tmp_path: Path, spoil: Callable[[Engine, Path], None]
) -> None:
    make(engine, tmp_path / "base", synth.records(1, 20, DIM))
    before = engine.digest(tmp_path / "base")
    good = make(engine, tmp_path / "good", synth.records(2, 5, DIM, "g"))
    spoil(engine, tmp_path / "bad")
    with pytest.raises(MergeInputError, match=str(tmp_path / "bad")):
        engine.merge(tmp_path / "base", [good, tmp_path / "bad"], collection="words")
    assert engine.digest(tmp_path / "base") == before


def test_corrupt_target_is_refused(engine: Engine, tmp_path: Path) -> None:
    _corrupt_db(engine, tmp_path / "base")
    src = make(engine, tmp_path / "s", synth.records(2, 5, DIM))
    with pytest.raises(MergeInputError, match=str(tmp_path / "base")):
        engine.merge(tmp_path / "base", [src], collection="words")


def test_digest_ignores_order_but_not_content(engine: Engine, tmp_path: Path) -> None:
    rows = synth.records(1, 50, DIM)
    forward = engine.digest(make(engine, tmp_path / "f", rows))
    assert forward == engine.digest(make(engine, tmp_path / "r", rows[::-1]))
    tweaked = [*rows[:-1], Record(rows[-1].id, rows[-1].embedding, rows[-1].document, {"x": 1})]
    assert forward != engine.digest(make(engine, tmp_path / "t", tweaked))
    assert forward == digest_records(rows)


def test_read_records_pages(engine: Engine, tmp_path: Path) -> None:
    rows = synth.records(1, 30, DIM)
    pages = list(engine.read_records(make(engine, tmp_path / "i", rows), page_size=7))
    assert sorted(len(p) for p in pages) == [2, 7, 7, 7, 7]
    got = {r.id: r for p in pages for r in p}
    assert got == {r.id: normalize(r) for r in rows}
    assert all(isinstance(x, float) for x in got[rows[0].id].embedding)


def test_files_released_after_merge(engine: Engine, tmp_path: Path) -> None:
    base = synth.records(1, 40, DIM)
    make(engine, tmp_path / "base", base)
    new = synth.records(2, 40, DIM, "n")
    src = make(engine, tmp_path / "s", new)
    gc.disable()  # the engine must release files itself, not wait for a lucky collection
    try:
        engine.merge(tmp_path / "base", [src], collection="words")
        assert open_files_under(tmp_path) == []
    finally:
        gc.enable()
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "base", moved)
    with tarfile.open(tmp_path / "snap.tar", "w") as tar:
        tar.add(moved, arcname=".")
    with tarfile.open(tmp_path / "snap.tar") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert engine.digest(tmp_path / "unpacked") == expected_digest(base, new)


def test_fd_checker_sees_an_unclosed_client(tmp_path: Path) -> None:
    """Negative control for the test above: a client left open is detected."""
    import chromadb

    make(ChromaIndex(), tmp_path / "i", synth.records(1, 5, DIM))
    client = chromadb.PersistentClient(path=str(tmp_path / "i"))
    client.get_collection("words").count()
    assert open_files_under(tmp_path) != []
    close_client(client)


def test_close_client_returns_after_the_files_are_released(tmp_path: Path) -> None:
    """chromadb closes each SQLite connection later, on a worker thread of its own: 38-77 % of
    the closes returned with the file still open before close_client waited for the release."""
    import chromadb

    make(ChromaIndex(), tmp_path / "i", synth.records(1, 5, DIM))
    gc.disable()  # the release must not depend on a collection either
    try:
        for _ in range(20):
            client = chromadb.PersistentClient(path=str(tmp_path / "i"))
            client.get_collection("words").count()
            close_client(client)
            assert open_files_under(tmp_path) == []
    finally:
        gc.enable()


def test_close_client_reports_a_file_that_stays_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control for the wait above: a descriptor that is never closed is an error."""
    make(ChromaIndex(), tmp_path / "i", synth.records(1, 5, DIM))
    monkeypatch.setattr(chroma_client, "RELEASE_TIMEOUT_S", 0.2)
    with open(tmp_path / "i" / "chroma.sqlite3", "rb") as held:
        stays_open = pytest.raises(MergeInputError, match="1 of its files still open")
        with stays_open, open_client(tmp_path / "i") as client:
            client.get_collection("words").count()
        assert not held.closed
    assert open_files_under(tmp_path) == []


def test_a_failed_open_leaves_nothing_behind(tmp_path: Path) -> None:
    """chromadb caches a half-started system by path; the next client there must not get it."""
    where = tmp_path / "i"
    where.mkdir()
    (where / "chroma.sqlite3").write_bytes(b"this is not a database" * 200)
    for _ in range(2):  # the second open meets the same file, not the first one's broken system
        with pytest.raises(MergeInputError, match="file is not a database"), open_client(where):
            pass
        assert open_files_under(tmp_path) == []
    shutil.rmtree(where)
    make(ChromaIndex(), where, synth.records(1, 5, DIM))
    assert ChromaIndex().count(where) == 5


def test_engines_agree_on_digest(tmp_path: Path) -> None:
    base = synth.records(1, 40, DIM)
    later = synth.overwrite(base, 5, 0.5, 0.5)
    out = []
    for engine in (MemoryIndex(), ChromaIndex()):
        where = tmp_path / type(engine).__name__
        make(engine, where / "base", base)
        engine.merge(where / "base", [make(engine, where / "s", later)], collection="words")
        out.append(engine.digest(where / "base"))
    assert out[0] == out[1] == expected_digest(base, later)


def test_chroma_calls_respect_max_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection

    engine = ChromaIndex()
    base = synth.records(1, 40, DIM)
    make(engine, tmp_path / "base", base)
    later = [*synth.records(2, 25, DIM, "n"), *synth.overwrite(base, 3, 0.75, 0.5)]
    src = make(engine, tmp_path / "s", later)
    sizes: dict[str, list[int]] = {}

    def spy(name: str) -> None:
        real = getattr(Collection, name)

        def call(self: Collection, *args: Any, **kw: Any) -> Any:
            ids = kw.get("ids", args[0] if args else None)
            sizes.setdefault(name, []).append(len(ids) if ids is not None else kw["limit"])
            return real(self, *args, **kw)

        monkeypatch.setattr(Collection, name, call)

    for name in ("add", "update", "get", "upsert", "delete"):
        spy(name)
    monkeypatch.setattr(Client, "get_max_batch_size", lambda self: 7)
    stats = engine.merge(tmp_path / "base", [src], collection="words")
    assert max(n for calls in sizes.values() for n in calls) <= 7
    assert len(sizes["add"]) >= 4 and len(sizes["update"]) >= 4  # 25 new, 30 changed
    assert (stats.new_ids, stats.changed_vectors, stats.metadata_only) == (25, 15, 15)
    assert engine.digest(tmp_path / "base") == expected_digest(base, later)


@pytest.mark.parametrize("spelling", ["lines", "receipt_lines"])
def test_input_of_another_collection_is_refused(
    engine: Engine, tmp_path: Path, spelling: str
) -> None:
    """Issue 10 case 5: a ``lines`` chunk in a ``words`` merge; the spellings of one collection
    (``receipt_words`` / ``words``) still merge together."""
    base = make(engine, tmp_path / "base", synth.records(1, 20, DIM), "words")
    before = engine.digest(base)
    good = make(engine, tmp_path / "good", synth.records(2, 5, DIM, "g"), "receipt_words")
    other = make(engine, tmp_path / "other", synth.records(3, 5, DIM, "l"), spelling)
    for target in (base, tmp_path / "new"):
        with pytest.raises(MergeInputError, match=rf"{tmp_path / 'other'}: .*'{spelling}'"):
            engine.merge(target, [good, other], collection="words")
    assert engine.digest(base) == before
    assert not (tmp_path / "new" / "chroma.sqlite3").exists()
    stats = engine.merge(base, [good], collection="receipt_words")
    assert stats.new_ids == 5


def test_base_of_another_collection_is_refused(engine: Engine, tmp_path: Path) -> None:
    base = make(engine, tmp_path / "base", synth.records(1, 20, DIM), "lines")
    before = engine.digest(base)
    src = make(engine, tmp_path / "s", synth.records(2, 5, DIM, "n"), "receipt_words")
    with pytest.raises(MergeInputError, match=rf"{tmp_path / 'base'}: .*'lines'.*'words'"):
        engine.merge(base, [src], collection="words")
    assert engine.digest(base) == before
