"""split → chunks → groups → final merge on the embedded server with real ChromaDB (DESIGN §3.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers import bootstrap
from handlers.local import run_execution
from snapmerge import synth
from snapmerge.domain import Database, Record
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore
from tests.conftest import AwsEnv

DIM = 16


@pytest.fixture
def app(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bootstrap.App]:
    monkeypatch.setenv("CHROMA_ROOT", str(tmp_path / "chroma"))
    monkeypatch.setenv("CHUNK_SIZE_LINES", "2")
    bootstrap.install(None)
    yield bootstrap.app()  # built from the environment, as in a Lambda
    bootstrap.install(None)


def test_whole_workflow_with_groups_on_embedded_aws(app: bootstrap.App, tmp_path: Path) -> None:
    db = Database.LINES
    base = synth.records(7, 40, DIM, id_prefix="base")
    seed_snapshot(app.blobs, app.engine, db, base, workdir=tmp_path)
    writes: list[list[Record]] = []
    for i in range(10):  # 10 deltas / chunk size 2 = 5 chunks: more than 4, so groups run
        fresh = synth.records(100 + i, 6, DIM, id_prefix="n", start=i * 6)
        if i % 2:
            fresh += synth.overwrite(writes[-1], 200 + i, 0.5, 0.5)
        if i == 9:
            fresh += synth.overwrite(base, 300, 0.25, 0.5)
        writes.append(fresh)
    deltas = []
    for i, records in enumerate(writes):
        fmt = DeltaFormat.TARBALL if i % 3 == 0 else DeltaFormat.DIRECTORY
        key = upload_delta(app.blobs, app.engine, db, f"run{i}", records, workdir=tmp_path, fmt=fmt)
        deltas.append({"delta_key": key, "collection": "receipt_lines"})

    out = run_execution({"batch_id": "fn-1", "database": "lines", "delta_results": deltas})

    assert out["split"]["use_groups"] and len(out["chunk_results"]) == 1
    store = SnapshotStore(app.blobs, db)
    pointer = store.read_pointer()
    assert pointer is not None and pointer.version == out["final"]["version"]
    dest = tmp_path / "published"
    store.download_version(pointer.version, dest)
    published = {r.id: r for page in app.engine.read_records(dest) for r in page}
    expected = synth.expected_state([base, *writes])
    assert set(published) == set(expected)
    for rid, record in expected.items():
        assert published[rid] == record, rid
    assert out["final"]["total_embeddings"] == len(expected)
    assert app.blobs.list("intermediate/fn-1") == []
