"""The workflow operations and the legacy final merge through the Lambda entry point, on fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from handlers import bootstrap
from handlers.compaction import lambda_handler
from handlers.local import run_execution
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import Database, Keys, Record
from snapmerge.errors import InvalidEventError, MergeInputError
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore

DIM = 8


@pytest.fixture
def app(tmp_path: Path) -> Iterator[bootstrap.App]:
    settings = Settings(
        bucket="mem", table="mem", chroma_root=tmp_path / "chroma", chunk_size_words=2
    )
    instance = bootstrap.build(
        settings, blobs=MemoryBlobStore(), engine=MemoryIndex(), leases=MemoryLeaseTable()
    )
    bootstrap.install(instance)
    yield instance
    bootstrap.install(None)


def _deltas(
    app: bootstrap.App, tmp_path: Path, writes: list[list[Record]], db: Database = Database.WORDS
) -> list[dict[str, str]]:
    out = []
    for i, records in enumerate(writes):
        fmt = DeltaFormat.TARBALL if i % 2 else DeltaFormat.DIRECTORY
        key = upload_delta(
            app.blobs, app.engine, db, f"d{i:03d}", records, workdir=tmp_path, fmt=fmt
        )
        out.append({"delta_key": key, "collection": f"receipt_{db.value}"})
    return out


def _snapshot(app: bootstrap.App, db: Database, tmp_path: Path) -> dict[str, Record]:
    store = SnapshotStore(app.blobs, db)
    pointer = store.read_pointer()
    assert pointer is not None
    dest = tmp_path / "check"
    store.download_version(pointer.version, dest)
    return {r.id: r for page in app.engine.read_records(dest) for r in page}


def _writes(n_deltas: int, per: int = 5, seed: int = 1) -> list[list[Record]]:
    writes: list[list[Record]] = []
    for i in range(n_deltas):
        fresh = synth.records(seed + i, per, DIM, id_prefix="r", start=i * per)
        # every third delta rewrites ids of the previous one: the later write must win
        if i % 3 == 2:
            fresh = fresh + synth.overwrite(writes[-1], seed + 100 + i, 1.0, 0.5)
        writes.append(fresh)
    return writes


@pytest.mark.parametrize("n_deltas", [3, 12])  # 12 deltas / chunk size 2 = 6 chunks -> groups
def test_every_delta_lands_with_its_last_write(
    app: bootstrap.App, tmp_path: Path, n_deltas: int
) -> None:
    seed_snapshot(
        app.blobs,
        app.engine,
        Database.WORDS,
        synth.records(99, 20, DIM, id_prefix="base"),
        workdir=tmp_path,
    )
    writes = _writes(n_deltas)
    deltas = _deltas(app, tmp_path, writes)
    out = run_execution({"batch_id": "b1", "database": "words", "delta_results": deltas})

    assert out["split"]["use_groups"] is (n_deltas > 8)
    assert out["final"]["merge_path"] == "legacy"
    snapshot = _snapshot(app, Database.WORDS, tmp_path)
    for rid, record in synth.expected_state(writes).items():
        assert snapshot[rid] == record, rid
    assert out["final"]["total_embeddings"] == 20 + len(synth.expected_state(writes))
    assert app.blobs.list("intermediate/b1") == []  # consumed, so deleted


@pytest.mark.parametrize(
    ("collection", "env", "expected"),
    [
        ("words", "CHUNK_SIZE_WORDS", 3),
        ("receipt_words", "CHUNK_SIZE_WORDS", 3),
        ("lines", "CHUNK_SIZE_LINES", 4),
        ("receipt_lines", "CHUNK_SIZE_LINES", 4),
        ("something_else", "CHUNK_SIZE", 5),
    ],
)
def test_chunk_size_applies_to_both_spellings(
    tmp_path: Path, collection: str, env: str, expected: int
) -> None:
    settings = Settings.from_env(
        {
            "CHROMADB_BUCKET": "b",
            "DYNAMODB_TABLE_NAME": "t",
            "CHUNK_SIZE_WORDS": "3",
            "CHUNK_SIZE_LINES": "4",
            "CHUNK_SIZE": "5",
        }
    )
    app = bootstrap.build(
        settings, blobs=MemoryBlobStore(), engine=MemoryIndex(), leases=MemoryLeaseTable()
    )
    from snapmerge.split import split_into_chunks

    deltas = [{"delta_key": f"words/delta/{i}/", "collection": collection} for i in range(11)]
    out = split_into_chunks(
        app.workflow, {"batch_id": "b", "database": "words", "delta_results": deltas}
    )
    assert out["chunk_size"] == expected
    assert next(len(c["deltas"]) for c in out["chunks"]) == expected
    assert sum(len(c["deltas"]) for c in out["chunks"]) == 11


def test_large_chunk_list_goes_to_s3_and_groups_are_written(app: bootstrap.App) -> None:
    from snapmerge.split import split_into_chunks

    deltas = [{"delta_key": f"words/delta/{i:05d}-{'x' * 200}/"} for i in range(2000)]
    out = split_into_chunks(
        app.workflow, {"batch_id": "big", "database": "words", "delta_results": deltas}
    )
    assert out["chunks_s3_key"] == "chunks/big/chunks.json"
    assert all("deltas" not in c for c in out["chunks"])
    assert app.blobs.get("chunks/big/chunks.json") is not None
    assert out["use_groups"] and app.blobs.get("chunk_groups/big/groups.json") is not None


def test_retry_after_publish_returns_the_same_result(app: bootstrap.App, tmp_path: Path) -> None:
    deltas = _deltas(app, tmp_path, _writes(2))
    first = run_execution({"batch_id": "again", "database": "words", "delta_results": deltas})
    versions = SnapshotStore(app.blobs, Database.WORDS).list_versions()
    # Step Functions retries the final merge after a timeout: its intermediates are gone by now.
    retry = lambda_handler(
        {**first["split"], "operation": "final_merge", "chunk_results": first["chunk_results"]}
    )
    assert retry["replayed"] is True
    assert retry["version"] == first["final"]["version"]
    assert SnapshotStore(app.blobs, Database.WORDS).list_versions() == versions


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"operation": "nope"}, "unknown operation"),
        ({"operation": "final_merge", "database": "words"}, "batch_id"),
        (
            {
                "operation": "split_into_chunks",
                "batch_id": "b",
                "database": "images",
                "delta_results": [],
            },
            "unknown database",
        ),
        ({"operation": "process_chunk", "batch_id": "b", "database": "words"}, "chunk_index"),
        (
            {
                "operation": "final_merge",
                "batch_id": "b",
                "database": "words",
                "chunk_results": [{"chunk_index": 0}],
            },
            "intermediate_key",
        ),
    ],
)
def test_bad_events_raise_a_named_error(app: bootstrap.App, event: dict, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        lambda_handler(event)


def test_missing_intermediate_raises_and_changes_nothing(
    app: bootstrap.App, tmp_path: Path
) -> None:
    seed_snapshot(app.blobs, app.engine, Database.WORDS, synth.records(1, 5, DIM), workdir=tmp_path)
    deltas = _deltas(app, tmp_path, _writes(2))
    chunk = lambda_handler(
        {
            "operation": "process_chunk",
            "batch_id": "lost",
            "database": "words",
            "chunk_index": 0,
            "deltas": [d["delta_key"] for d in deltas],
        }
    )
    store = SnapshotStore(app.blobs, Database.WORDS)
    before = (store.read_pointer(), sorted(app.blobs.list("")))
    event = {
        "operation": "final_merge",
        "batch_id": "lost",
        "database": "words",
        "chunk_results": [
            {"chunk_index": 0, "intermediate_key": chunk["intermediate_key"]},
            {"chunk_index": 1, "intermediate_key": "intermediate/lost/chunk-1/"},
        ],
    }
    with pytest.raises(MergeInputError, match="intermediate/lost/chunk-1"):
        lambda_handler(event)
    assert (store.read_pointer(), sorted(app.blobs.list(""))) == before


def test_wrong_dimension_is_refused_before_publishing(app: bootstrap.App, tmp_path: Path) -> None:
    seed_snapshot(app.blobs, app.engine, Database.WORDS, synth.records(1, 5, DIM), workdir=tmp_path)
    wrong = [replace(r, embedding=(*r.embedding, 0.0)) for r in synth.records(2, 3, DIM)]
    deltas = _deltas(app, tmp_path, [wrong])
    pointer = SnapshotStore(app.blobs, Database.WORDS).read_pointer()
    with pytest.raises(MergeInputError, match="dimension"):
        run_execution({"batch_id": "dim", "database": "words", "delta_results": deltas})
    assert SnapshotStore(app.blobs, Database.WORDS).read_pointer() == pointer
    assert app.blobs.list("intermediate/dim/")  # kept: nothing consumed them
    assert Keys.pointer(Database.WORDS) in app.blobs.list("words/")


def test_a_merge_error_names_the_s3_key_not_the_scratch_path(
    app: bootstrap.App, tmp_path: Path
) -> None:
    good = _deltas(app, tmp_path, _writes(1))[0]["delta_key"]
    app.blobs.put("words/delta/corrupt/chroma.sqlite3", b"not a database")
    app.blobs.put("words/delta/corrupt/records.json", b"{}")
    event = {
        "operation": "process_chunk",
        "batch_id": "c",
        "database": "words",
        "chunk_index": 0,
        "deltas": [good, "words/delta/corrupt/"],
    }
    with pytest.raises(MergeInputError) as info:
        lambda_handler(event)
    assert "words/delta/corrupt/" in str(info.value)
    assert str(app.settings.chroma_root) not in str(info.value)


def _split_event(n: int, batch_id: str) -> dict:
    deltas = [
        {"delta_key": f"words/delta/{i:032x}/", "collection": "receipt_words"} for i in range(n)
    ]
    return {"batch_id": batch_id, "database": "words", "delta_results": deltas}


STEP_FUNCTIONS_LIMIT = 256 * 1024


@pytest.mark.parametrize("n_deltas", [1, 15, 16, 3_000, 50_000])
def test_the_split_answer_and_the_chunk_results_fit_in_a_state(
    app: bootstrap.App, n_deltas: int
) -> None:
    """Before: 50,000 deltas made 3,334 chunk items, a 390 KB answer Step Functions refuses."""
    from snapmerge.split import MAX_CHUNKS, split_into_chunks

    batch_id = "x" * 80  # an execution name at its longest
    out = split_into_chunks(app.workflow, _split_event(n_deltas, batch_id))
    assert out["total_chunks"] <= MAX_CHUNKS
    assert sum(1 for _ in out["chunks"]) == out["total_chunks"]
    # The state after the chunk Map: the split answer plus one answer per chunk, at its largest.
    chunk_answer = {
        "batch_id": batch_id,
        "chunk_index": MAX_CHUNKS,
        "delta_count": out["chunk_size"],
        "intermediate_key": f"intermediate/{batch_id}/chunk-{MAX_CHUNKS}/",
        "record_count": 10**9,
    }
    state = {**out, "chunk_results": [chunk_answer] * out["total_chunks"]}
    assert len(json.dumps(state)) < STEP_FUNCTIONS_LIMIT
    # Every delta is in exactly one chunk, in order.
    if "chunks_s3_key" in out:
        blob = app.blobs.get(out["chunks_s3_key"])
        assert blob is not None
        stored = json.loads(blob.body)
    else:
        stored = out["chunks"]
    keys = [k for c in stored for k in c["deltas"]]
    assert keys == [d["delta_key"] for d in _split_event(n_deltas, batch_id)["delta_results"]]


@pytest.mark.parametrize("path", ["legacy", "two_phase"])
def test_a_final_merge_error_names_the_intermediate_key(
    app: bootstrap.App, tmp_path: Path, path: str
) -> None:
    seed_snapshot(app.blobs, app.engine, Database.WORDS, synth.records(1, 5, DIM), workdir=tmp_path)
    good = _deltas(app, tmp_path, _writes(1))[0]["delta_key"]
    app.blobs.put("intermediate/bad/chunk-1/chroma.sqlite3", b"not a database")
    app.blobs.put("intermediate/bad/chunk-1/records.json", b"{}")
    event = {
        "operation": "final_merge",
        "batch_id": "bad",
        "database": "words",
        "chunk_results": [
            {"chunk_index": 0, "intermediate_key": good},
            {"chunk_index": 1, "intermediate_key": "intermediate/bad/chunk-1/"},
        ],
        "routing": {"path": path},
    }
    with pytest.raises(MergeInputError) as info:
        lambda_handler(event)
    assert "intermediate/bad/chunk-1/" in str(info.value)
    assert str(app.settings.chroma_root) not in str(info.value)
