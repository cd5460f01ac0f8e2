"""Every event shape the original state machine sends is accepted (issue 9, part 4).

On today's code before this change each of these failed: ``delta_results`` was refused
("process_chunk needs 'deltas' or 'chunks_s3_key'"), a ``chunks.json`` whose items carry
``delta_results`` ended in a bare ``KeyError``, ``chunk_group`` was refused (missing
``chunk_results``), and a CompactionRun prefix was "not a Chroma directory".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers import bootstrap
from handlers.compaction import lambda_handler
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import Database, Record
from snapmerge.errors import InvalidEventError
from snapmerge.seeding import seed_snapshot
from snapmerge.snapshots import SnapshotStore
from tests.compat import original_events as orig

DIM = 8
DB = Database.WORDS


@pytest.fixture
def app(tmp_path: Path) -> Iterator[bootstrap.App]:
    settings = Settings(bucket="mem", table="mem", chroma_root=tmp_path / "chroma")
    instance = bootstrap.build(
        settings, blobs=MemoryBlobStore("mem"), engine=MemoryIndex(), leases=MemoryLeaseTable()
    )
    bootstrap.install(instance)
    yield instance
    bootstrap.install(None)


def _writes(n: int) -> list[list[Record]]:
    """``n`` deltas; every other one rewrites ids of the one before, so order matters."""
    writes: list[list[Record]] = []
    for i in range(n):
        fresh = synth.records(10 + i, 4, DIM, id_prefix="w", start=i * 4)
        if i % 2:
            fresh += synth.overwrite(writes[-1], 50 + i, 1.0, 0.5)
        writes.append(fresh)
    return writes


def _original_deltas(app: bootstrap.App, tmp: Path, writes: list[list[Record]]) -> list[Any]:
    """Alternately a CompactionRun prefix and a raw directory, as the producers report them."""
    out = []
    for i, records in enumerate(writes):
        make = orig.compaction_run_delta if i % 2 == 0 else orig.directory_delta
        key = make(app.blobs, app.engine, DB, records, tmp)
        out.append(orig.delta_result(key, len(records), "receipt_words"))
    return out


def _published(app: bootstrap.App, tmp: Path) -> dict[str, Record]:
    store = SnapshotStore(app.blobs, DB)
    pointer = store.read_pointer()
    assert pointer is not None
    dest = tmp / "published"
    store.download_version(pointer.version, dest)
    return {r.id: r for page in app.engine.read_records(dest) for r in page}


@pytest.mark.parametrize("chunks_on_s3", [False, True], ids=["inline", "chunks.json"])
@pytest.mark.parametrize("groups_on_s3", [False, True], ids=["chunk_group", "groups.json"])
def test_the_original_state_machine_runs_end_to_end(
    app: bootstrap.App, tmp_path: Path, chunks_on_s3: bool, groups_on_s3: bool
) -> None:
    base = synth.records(1, 6, DIM, id_prefix="base")
    seed_snapshot(app.blobs, app.engine, DB, base, workdir=tmp_path)
    writes = _writes(10)
    chunks = orig.chunks_file("b-1", _original_deltas(app, tmp_path, writes), size=2)
    chunks_key = orig.store_json(app.blobs, "chunks/b-1/chunks.json", chunks)

    answers = []
    for chunk in chunks:  # the Map answers in item order
        if chunks_on_s3:
            event = orig.process_chunk_from_s3(
                "b-1", chunk["chunk_index"], chunks_key, app.blobs.bucket, DB
            )
        else:
            event = orig.process_chunk_inline(chunk, DB)
        answers.append(orig.as_original_result(lambda_handler(event)))

    groups = orig.groups_file(answers, size=2)  # 5 chunks > 4: the original groups them
    groups_key = orig.store_json(app.blobs, "chunk_groups/b-1/groups.json", groups)
    merged = []
    for g, members in enumerate(groups):
        if groups_on_s3:
            event = orig.merge_group_from_s3("b-1", g, groups_key, app.blobs.bucket, DB)
        else:
            event = orig.merge_group_inline("b-1", g, members, DB)
        answer = lambda_handler(event)
        assert answer["intermediate_key"] == f"intermediate/b-1-group-{g}/merged/"
        merged.append(orig.as_original_result(answer))

    final = lambda_handler(orig.final_merge("b-1", merged, DB, "poll/b-1.json", "mem"))

    assert final["poll_results_s3_key"] == "poll/b-1.json"
    expected = synth.expected_state([base, *writes])
    assert _published(app, tmp_path) == expected
    assert final["total_embeddings"] == len(expected)


def test_a_bare_key_in_a_chunk_group_is_an_intermediate(app: bootstrap.App, tmp_path: Path) -> None:
    deltas = _original_deltas(app, tmp_path, _writes(2))
    chunk = orig.chunks_file("b-2", deltas, size=2)[0]
    key = lambda_handler(orig.process_chunk_inline(chunk, DB))["intermediate_key"]
    answer = lambda_handler(orig.merge_group_inline("b-2", 0, [key], DB))
    assert answer["batch_id"] == "b-2" and answer["record_count"] > 0


def test_the_originals_empty_answers_are_skipped(app: bootstrap.App, tmp_path: Path) -> None:
    writes = _writes(2)
    chunk = orig.chunks_file("b-3", _original_deltas(app, tmp_path, writes), size=2)[0]
    answer = orig.as_original_result(lambda_handler(orig.process_chunk_inline(chunk, DB)))
    results = [orig.EMPTY_CHUNK, answer, orig.EMPTY_GROUP]
    final = lambda_handler(orig.final_merge("b-3", results, DB, "poll/b-3.json", "mem"))
    assert final["total_embeddings"] == len(synth.expected_state(writes))


@pytest.mark.parametrize(
    "results",
    [[orig.ERROR_BODY], [orig.EMPTY_GROUP], [{"intermediate_key": "x/"}, orig.ERROR_BODY]],
    ids=["error-body", "only-empty", "error-among-good"],
)
def test_an_error_body_is_refused_not_skipped(app: bootstrap.App, results: list[Any]) -> None:
    """The original filtered error bodies out and published the rest: a silent loss."""
    with pytest.raises(InvalidEventError, match=r"chunk_results"):
        lambda_handler(orig.final_merge("b-4", results, DB, "poll/b-4.json", "mem"))
    assert SnapshotStore(app.blobs, DB).read_pointer() is None


def test_a_chunk_list_of_another_bucket_is_refused(app: bootstrap.App) -> None:
    event = orig.process_chunk_from_s3("b-5", 0, "chunks/b-5/chunks.json", "elsewhere", DB)
    with pytest.raises(InvalidEventError, match="chunks_s3_bucket"):
        lambda_handler(event)


def test_a_chunk_list_entry_of_another_batch_is_refused(app: bootstrap.App) -> None:
    chunks = orig.chunks_file("other", [orig.delta_result("words/delta/x/", 1, "words")], 1)
    key = orig.store_json(app.blobs, "chunks/b-6/chunks.json", chunks)
    with pytest.raises(InvalidEventError, match="belongs to batch 'other'"):
        lambda_handler(orig.process_chunk_from_s3("b-6", 0, key, "mem", DB))
