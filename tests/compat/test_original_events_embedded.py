"""The original state machine's events, end to end on the embedded server with real ChromaDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import bootstrap
from handlers.compaction import lambda_handler
from snapmerge import synth
from snapmerge.domain import Database, Record
from snapmerge.seeding import seed_snapshot
from snapmerge.snapshots import SnapshotStore
from tests.compat import original_events as orig
from tests.conftest import AwsEnv

DIM = 16
DB = Database.LINES


@pytest.fixture
def app(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bootstrap.App]:
    monkeypatch.setenv("CHROMA_ROOT", str(tmp_path / "chroma"))
    bootstrap.install(None)
    yield bootstrap.app()  # built from the environment, as in a Lambda
    bootstrap.install(None)


def test_original_shapes_on_s3_and_chroma(app: bootstrap.App, aws: AwsEnv, tmp_path: Path) -> None:
    base = synth.records(3, 12, DIM, id_prefix="base")
    seed_snapshot(app.blobs, app.engine, DB, base, workdir=tmp_path)
    writes: list[list[Record]] = []
    deltas = []
    for i in range(10):
        fresh = synth.records(40 + i, 3, DIM, id_prefix="n", start=i * 3)
        if i % 3 == 2:
            fresh += synth.overwrite(writes[-1], 70 + i, 1.0, 0.5)
        writes.append(fresh)
        make = orig.compaction_run_delta if i % 2 == 0 else orig.directory_delta
        key = make(app.blobs, app.engine, DB, fresh, tmp_path)
        deltas.append(orig.delta_result(key, len(fresh), "receipt_lines"))
    chunks = orig.chunks_file("exec-7", deltas, size=2)
    chunks_key = orig.store_json(app.blobs, "chunks/exec-7/chunks.json", chunks)
    answers = [
        orig.as_original_result(
            lambda_handler(
                orig.process_chunk_from_s3("exec-7", c["chunk_index"], chunks_key, aws.bucket, DB)
            )
        )
        for c in chunks
    ]
    groups_key = orig.store_json(
        app.blobs, "chunk_groups/exec-7/groups.json", orig.groups_file(answers, size=2)
    )
    merged = [
        orig.as_original_result(
            lambda_handler(orig.merge_group_from_s3("exec-7", g, groups_key, aws.bucket, DB))
        )
        for g in range(3)
    ]
    final = lambda_handler(orig.final_merge("exec-7", merged, DB, "poll/exec-7.json", aws.bucket))

    store = SnapshotStore(app.blobs, DB)
    pointer = store.read_pointer()
    assert pointer is not None and pointer.version == final["version"]
    dest = tmp_path / "published"
    store.download_version(pointer.version, dest)
    published = {r.id: r for page in app.engine.read_records(dest) for r in page}
    expected = synth.expected_state([base, *writes])
    assert set(published) == set(expected)
    for rid, record in expected.items():
        assert published[rid] == record, rid
