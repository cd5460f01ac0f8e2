"""The final merge on the embedded server, both paths, onto a base the original pipeline wrote.

* on chromadb 1.5, a base in 1.0.21's format is refused before anything is uploaded (pointer,
  bucket and intermediates untouched), unless the operator allows the upgrade;
* on chromadb 1.0.21 (``make test-chroma-1021``), snapmerge publishes onto it twice and a
  separate chromadb 1.0.21 process opens the result as the original reader does and checks every
  record; the negative control shows that reader failing on a snapshot 1.5 upgraded;
* a chunk of another collection (``lines`` in a ``words`` merge) is refused on both paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import chromadb
import numpy as np
import pytest

from handlers import bootstrap
from snapmerge import synth
from snapmerge.adapters import chroma_format as fmt
from snapmerge.adapters.chroma_index import running_format
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    Keys,
    MergePath,
    Record,
    VersionId,
)
from snapmerge.errors import MergeInputError, SnapshotFormatError
from snapmerge.ports import FinalMerger
from snapmerge.seeding import seed_snapshot
from snapmerge.snapshots import SnapshotStore
from snapmerge.transfer import upload_directory
from tests.compat.helpers import FIXTURES, extract
from tests.compat.make_fixture import DIMENSION, fixture_records
from tests.conftest import AwsEnv

DB = Database.WORDS
ORIGINAL_VERSION = VersionId("20261201_120000")  # the original writer's id format
RUNNING_IS_1_0 = running_format() == fmt.CHROMADB_1_0
READER_ENV = "SNAPMERGE_READER_PYTHON"
PATHS = [MergePath.LEGACY, MergePath.TWO_PHASE]


@pytest.fixture
def app(aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bootstrap.App]:
    monkeypatch.setenv("CHROMA_ROOT", str(tmp_path / "chroma"))
    monkeypatch.delenv(fmt.UPGRADE_ENV, raising=False)
    bootstrap.install(None)
    yield bootstrap.app()
    bootstrap.install(None)


def merger(app: bootstrap.App, path: MergePath) -> FinalMerger:
    return app.legacy if path is MergePath.LEGACY else app.two_phase


def seed_original_base(app: bootstrap.App, tmp_path: Path, line: fmt.ChromaFormat) -> None:
    """An original-format version (no manifest) holding the fixture that ``line`` wrote."""
    directory = extract(FIXTURES[line], tmp_path / "fixture")
    upload_directory(app.blobs, directory, Keys.version_prefix(DB, ORIGINAL_VERSION))
    SnapshotStore(app.blobs, DB).write_pointer(ORIGINAL_VERSION, None)


def stage(
    app: bootstrap.App, tmp_path: Path, batch_id: str, seed: int, collections: tuple[str, ...]
) -> tuple[FinalMergeRequest, list[Record]]:
    """One intermediate per collection name; returns the request and every record staged."""
    keys, staged = [], []
    for i, name in enumerate(collections):
        rows = synth.records(seed + i, 4, DIMENSION, id_prefix=f"{batch_id}-{i}-")
        synth.write_index(app.engine, tmp_path / f"{batch_id}-{i}", rows, name)
        keys.append(Keys.intermediate_prefix(batch_id, i))
        upload_directory(app.blobs, tmp_path / f"{batch_id}-{i}", keys[-1])
        staged += rows
    return FinalMergeRequest(batch_id, DB, tuple(keys)), staged


def bucket_state(app: bootstrap.App) -> tuple[list[str], str | None]:
    """Every key and the pointer's ETag, leaving out group commit's queue (a refused batch
    leaves its pending entry withdrawn and the builder marker idle: :func:`queue_settled`)."""
    pointer = app.blobs.get(Keys.pointer(DB))
    queue = (f"{DB.value}/snapshot/pending/", f"{DB.value}/snapshot/pending-builder.json")
    keys = [k for k in app.blobs.list("") if not k.startswith(queue)]
    return keys, pointer.etag if pointer else None


def queue_settled(app: bootstrap.App) -> None:
    """No batch of a refused merge is left for a builder to take, and nobody is building."""
    for key in app.blobs.list(f"{DB.value}/snapshot/pending/"):
        blob = app.blobs.get(key)
        assert blob is not None and json.loads(blob.body)["state"] == "withdrawn", key
    marker = app.blobs.get(f"{DB.value}/snapshot/pending-builder.json")
    assert marker is None or json.loads(marker.body)["state"] != "building"


@pytest.mark.skipif(RUNNING_IS_1_0, reason="on 1.0.21 this base is in the running format")
@pytest.mark.parametrize("path", PATHS)
def test_older_format_base_is_refused_and_nothing_changes(
    app: bootstrap.App, tmp_path: Path, path: MergePath
) -> None:
    seed_original_base(app, tmp_path, fmt.CHROMADB_1_0)
    request, _ = stage(app, tmp_path, "fmt-1", 40, ("receipt_words",))
    before = bucket_state(app)
    with pytest.raises(SnapshotFormatError) as info:
        merger(app, path).run(request)
    for part in (fmt.CHROMADB_1_0.id, running_format().id, fmt.UPGRADE_ENV):
        assert part in str(info.value)
    assert bucket_state(app) == before  # no upload, no receipt, pointer and intermediates kept
    queue_settled(app)
    assert app.blobs.list(request.intermediate_keys[0])


@pytest.mark.skipif(RUNNING_IS_1_0, reason="nothing is older than 1.0.21's format")
@pytest.mark.parametrize("path", PATHS)
def test_allowed_upgrade_publishes_in_the_running_format(
    app: bootstrap.App, tmp_path: Path, path: MergePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_original_base(app, tmp_path, fmt.CHROMADB_1_0)
    request, staged = stage(app, tmp_path, "fmt-2", 50, ("receipt_words",))
    monkeypatch.setenv(fmt.UPGRADE_ENV, "true")
    result = merger(app, path).run(request)
    published = tmp_path / "published"
    SnapshotStore(app.blobs, DB).download_version(result.version, published)
    assert fmt.read_format(published) == running_format()
    assert result.total_embeddings == len(fixture_records()) + len(staged)


def reader_python() -> str | None:
    """A chromadb 1.0.21 interpreter: this one on that line, or ``SNAPMERGE_READER_PYTHON``."""
    if chromadb.__version__ == "1.0.21":
        return sys.executable
    return os.environ.get(READER_ENV) or None


def run_reader(python: str, bucket: str, out: Path) -> subprocess.CompletedProcess[str]:
    script = Path(__file__).with_name("reader_1021.py")
    return subprocess.run(
        [python, str(script), bucket, DB.value, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
        check=False,
    )


def assert_reader_sees(seen: dict[str, object], expected: dict[str, Record]) -> None:
    ids = seen["ids"]
    assert isinstance(ids, list) and sorted(ids) == sorted(expected)
    rows = zip(ids, seen["embeddings"], seen["documents"], seen["metadatas"], strict=True)  # type: ignore[call-overload]
    for rid, vector, document, metadata in rows:
        want = expected[rid]
        assert np.array_equal(np.float32(vector), np.float32(want.embedding)), rid
        assert document == want.document, rid
        assert metadata == want.metadata, rid


@pytest.mark.skipif(not RUNNING_IS_1_0, reason="publishes onto its base only on chromadb 1.0.21")
@pytest.mark.parametrize("path", PATHS)
def test_chromadb_1021_reader_opens_every_publish(
    app: bootstrap.App, aws: AwsEnv, tmp_path: Path, path: MergePath
) -> None:
    python = reader_python()
    assert python is not None
    seed_original_base(app, tmp_path, fmt.CHROMADB_1_0)
    first, staged_1 = stage(app, tmp_path, "rd-1", 60, ("receipt_words",))
    second, staged_2 = stage(app, tmp_path, "rd-2", 70, ("words", "receipt_words"))
    changed = synth.overwrite(fixture_records(), seed=5, fraction=0.5, vector_fraction=0.5)
    synth.write_index(app.engine, tmp_path / "rd-2-x", changed, "words")  # rewrites base ids
    last = Keys.intermediate_prefix("rd-2", 9)
    upload_directory(app.blobs, tmp_path / "rd-2-x", last)
    second = FinalMergeRequest("rd-2", DB, (*second.intermediate_keys, last))
    for request in (first, second):  # the second publish is on snapmerge's own version
        merger(app, path).run(request)
    done = run_reader(python, aws.bucket, tmp_path / "seen.json")
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["chromadb"] == "1.0.21"
    expected = synth.expected_state([fixture_records(), staged_1, staged_2, changed])
    assert_reader_sees(seen, expected)


@pytest.mark.skipif(
    RUNNING_IS_1_0 or not os.environ.get(READER_ENV),
    reason=f"needs chromadb 1.5 here and a 1.0.21 interpreter in {READER_ENV}",
)
def test_negative_control_reader_fails_on_an_upgraded_publish(
    app: bootstrap.App, aws: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the refusal prevents: a 1.5 publish on a 1.0.21 base breaks the 1.0.21 reader."""
    python = reader_python()
    assert python is not None
    seed_original_base(app, tmp_path, fmt.CHROMADB_1_0)
    request, _ = stage(app, tmp_path, "nc-1", 80, ("receipt_words",))
    monkeypatch.setenv(fmt.UPGRADE_ENV, "1")
    app.two_phase.run(request)
    done = run_reader(python, aws.bucket, tmp_path / "seen.json")
    assert done.returncode == 3
    assert "READER FAILED: PanicException" in done.stderr


@pytest.mark.parametrize("path", PATHS)
def test_chunk_of_another_collection_is_refused(
    app: bootstrap.App, tmp_path: Path, path: MergePath
) -> None:
    """Issue 10 case 5 end to end: nothing published, nothing deleted."""
    seed_snapshot(app.blobs, app.engine, DB, synth.records(1, 10, DIMENSION), workdir=tmp_path)
    request, _ = stage(app, tmp_path, "mix-1", 90, ("receipt_words", "receipt_lines"))
    before = bucket_state(app)
    with pytest.raises(MergeInputError, match="'receipt_lines', but this merge is for 'words'"):
        merger(app, path).run(request)
    assert bucket_state(app) == before
    queue_settled(app)
