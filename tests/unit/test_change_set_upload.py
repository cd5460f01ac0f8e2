"""``upload_with_changes``: the version and its change set upload side by side, and either both are
there when it returns or neither is left behind (in-memory fakes)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.built import BuiltVersion
from snapmerge.change_sets import ChangeSets, upload_with_changes
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, MergePath, Pointer
from snapmerge.errors import StoreError
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot

DB = Database.WORDS
DIM = 8


def _kit(tmp_path: Path) -> MergeKit:
    settings = Settings(
        bucket="memory",
        table="memory",
        chroma_root=tmp_path / "root",
        lock_wait_timeout=timedelta(seconds=5),
    )
    return MergeKit(MemoryBlobStore(), MemoryIndex(), MemoryLeaseTable(), settings)


def _built(
    kit: MergeKit, tmp_path: Path, name: str = "b1", base: Pointer | None = None
) -> tuple[Pointer, list[Path], BuiltVersion]:
    if base is None:
        records = synth.records(1, 10, DIM)
        base = seed_snapshot(kit.blobs, kit.engine, DB, records, workdir=tmp_path)
    sources = []
    for i in range(2):
        local = tmp_path / f"{name}-src-{i}"
        records = synth.records(len(name) + i, 4, DIM, id_prefix=f"{name}-", start=100 * i)
        synth.write_index(kit.engine, local, records, "receipt_words")
        sources.append(local)
    request = FinalMergeRequest(batch_id=name, database=DB, intermediate_keys=("unused/",))
    dest = tmp_path / f"{name}-build"
    built = kit.build(request, base, sources, MergePath.TWO_PHASE, dest, digest=False, inputs="d")
    return base, sources, built


def _records(kit: MergeKit, paths: list[Path]) -> list[dict[str, object]]:
    return [{r.id: r for page in kit.engine.read_records(p) for r in page} for p in paths]


def _fail_on(kit: MergeKit, part: str) -> None:
    upload = kit.blobs.upload_file

    def failing(key: str, file: Path) -> None:
        if part in key:
            raise StoreError(f"upload {key} failed: connection reset")
        upload(key, file)

    kit.blobs.upload_file = failing  # type: ignore[method-assign]


def test_the_change_set_is_whole_when_the_upload_returns(tmp_path: Path) -> None:
    kit = _kit(tmp_path)
    base, sources, built = _built(kit, tmp_path)

    uploaded = upload_with_changes(kit, DB, built, sources)

    changes = ChangeSets(kit.blobs, DB)
    assert changes.base_of(uploaded.version) == (2, base.version)
    fetched = changes.fetch([(uploaded.version, 2)], tmp_path / "fetched")
    assert fetched is not None
    assert _records(kit, fetched) == _records(kit, sources)
    assert kit.store(DB).list_versions() == sorted([base.version, uploaded.version])


def test_a_failed_upload_leaves_no_change_set(tmp_path: Path) -> None:
    kit = _kit(tmp_path)
    base, sources, built = _built(kit, tmp_path)
    _fail_on(kit, "/timestamped/")

    with pytest.raises(StoreError):
        upload_with_changes(kit, DB, built, sources)

    changes = ChangeSets(kit.blobs, DB)
    assert changes.versions() == []
    assert kit.blobs.list(changes.prefix) == []
    assert kit.store(DB).list_versions() == [base.version]


def test_a_failed_change_set_discards_the_upload(tmp_path: Path) -> None:
    kit = _kit(tmp_path)
    base, sources, built = _built(kit, tmp_path)
    _fail_on(kit, "/changes/")

    with pytest.raises(StoreError):
        upload_with_changes(kit, DB, built, sources)

    assert kit.blobs.list(ChangeSets(kit.blobs, DB).prefix) == []
    assert kit.store(DB).list_versions() == [base.version]


def test_a_taken_version_id_never_gets_our_change_set(tmp_path: Path) -> None:
    """The id we drew is another writer's: its change set stays whole, ours goes under the id
    the upload redrew."""
    kit = _kit(tmp_path)
    base, theirs, built = _built(kit, tmp_path, "aa")
    other = upload_with_changes(kit, DB, built, theirs)
    _, ours, mine = _built(kit, tmp_path, "bbbb", base=base)

    uploaded = upload_with_changes(kit, DB, mine.renamed(other.version), ours)

    assert uploaded.version != other.version
    changes = ChangeSets(kit.blobs, DB)
    for version, sources in ((other.version, theirs), (uploaded.version, ours)):
        assert changes.base_of(version) == (2, base.version)
        fetched = changes.fetch([(version, 2)], tmp_path / f"fetched-{version}")
        assert fetched is not None
        assert _records(kit, fetched) == _records(kit, sources)
