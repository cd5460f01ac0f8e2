"""The real state machine definition driving the real handler, end to end (DESIGN §1, §3).

:mod:`tests.functional.asl` runs ``infra/statemachine/compaction.asl.json`` on moto's ASL engine
with every Lambda Task served by ``handlers.compaction.lambda_handler`` in this process; the
handler works against the embedded AWS server with real ChromaDB. So a mismatch between the
definition's paths, Choices, Retry/Catch and the handler's event shapes and error types fails
here, and every success is checked against invariant 1 (the published snapshot holds every delta).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flags.client
from handlers import bootstrap, local
from snapmerge import synth
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.domain import Database, Record, lock_id_for
from snapmerge.lock import LeaseLock
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore
from tests.conftest import AwsEnv
from tests.functional.asl import (
    FUNCTION_ARN,
    ROOT,
    InProcessLambda,
    Outcome,
    StepFunctions,
    definition,
)

DEFAULT_FLAGS = ROOT / "flags" / "default_flags.json"
DB = Database.LINES
DIM = 16


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture
def flag_overrides() -> dict[str, Any]:
    """Flag defaults to change in the copied flag document (tests parametrize this)."""
    return {}


@pytest.fixture
def app(
    aws: AwsEnv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag_overrides: dict[str, Any],
) -> Iterator[bootstrap.App]:
    document = json.loads(DEFAULT_FLAGS.read_text())
    for key, value in flag_overrides.items():
        document[key]["default"] = value
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps(document))
    for var in ("SNAPMERGE_FLAGS_S3", "SNAPMERGE_FLAGS_SSM", "SNAPMERGE_FLAGS_APPCONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SNAPMERGE_FLAGS_FILE", str(flag_file))
    monkeypatch.setenv("CHROMA_ROOT", str(tmp_path / "chroma"))
    monkeypatch.setenv("CHUNK_SIZE_LINES", "2")
    monkeypatch.setenv("SNAPMERGE_LOCK_WAIT_SECONDS", "0.2")  # held lock: LockBusyError soon
    flags.client.reset()  # bootstrap() caches the first client of the process
    bootstrap.install(None)
    yield bootstrap.app()  # built from the environment, as in a Lambda
    bootstrap.install(None)
    flags.client.reset()


@pytest.fixture
def lam() -> InProcessLambda:
    return InProcessLambda()


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch, lam: InProcessLambda) -> StepFunctions:
    return StepFunctions(monkeypatch, lam)


# ---------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class Batch:
    start: dict[str, Any]  # the execution input (DESIGN §1: poll results name the deltas)
    expected: dict[str, Record]
    base_version: str


def stage(
    app: bootstrap.App, tmp_path: Path, batch_id: str, n_deltas: int, *, inline: bool = False
) -> Batch:
    """Seed a snapshot, upload ``n_deltas`` deltas (both formats, overwrites) and poll results.

    The execution input names the deltas through the poll results (the original pipeline's
    input) or, with ``inline``, as ``delta_results`` (the demo's and the local runner's input).
    """
    base = synth.records(7, 30, DIM, id_prefix="base")
    seed_snapshot(app.blobs, app.engine, DB, base, workdir=tmp_path)
    writes: list[list[Record]] = []
    deltas = []
    for i in range(n_deltas):
        fresh = synth.records(100 + i, 5, DIM, id_prefix=f"{batch_id}-n", start=i * 5)
        if i % 2:
            fresh += synth.overwrite(writes[-1], 200 + i, 0.5, 0.5)
        if i == n_deltas - 1:
            fresh += synth.overwrite(base, 300, 0.25, 0.5)
        writes.append(fresh)
        fmt = DeltaFormat.TARBALL if i % 3 == 0 else DeltaFormat.DIRECTORY
        key = upload_delta(
            app.blobs, app.engine, DB, f"{batch_id}-{i}", fresh, workdir=tmp_path, fmt=fmt
        )
        deltas.append({"delta_key": key, "collection": "receipt_lines"})
    poll_key = f"poll/{batch_id}.json"
    app.blobs.put(poll_key, json.dumps(deltas).encode())
    pointer = SnapshotStore(app.blobs, DB).read_pointer()
    assert pointer is not None
    start: dict[str, Any] = {"batch_id": batch_id, "database": DB.value}
    if inline:
        start["delta_results"] = deltas
    else:
        start["poll_results_s3_key"] = poll_key
        start["poll_results_s3_bucket"] = app.settings.bucket
    return Batch(start, synth.expected_state([base, *writes]), pointer.version)


def assert_published(app: bootstrap.App, out: Outcome, batch: Batch, tmp_path: Path) -> None:
    """Invariant 1: the snapshot the pointer names holds every delta's last write."""
    assert out.status == "SUCCEEDED", (out.error, out.task_errors())
    assert out.output is not None
    store = SnapshotStore(app.blobs, DB)
    pointer = store.read_pointer()
    assert pointer is not None and pointer.version != batch.base_version
    assert out.output["snapshot_key"].rstrip("/").endswith(pointer.version)
    dest = tmp_path / f"published-{pointer.version}"
    store.download_version(pointer.version, dest)
    published = {r.id: r for page in app.engine.read_records(dest) for r in page}
    assert set(published) == set(batch.expected)
    for rid, record in batch.expected.items():
        assert published[rid] == record, rid
    assert out.output["total_embeddings"] == len(batch.expected)
    batch_id = batch.start["batch_id"]
    assert app.blobs.list(f"intermediate/{batch_id}") == []


def assert_local_runner_agrees(lam: InProcessLambda, start: dict[str, Any]) -> None:
    """handlers/local.py claims to mirror the ASL: replayed on the same answers, it must send the
    handler the same events (it also passes ``routing`` to chunk and group steps, which ignore it).
    """
    answers = {_step_key(c.event): c.response for c in lam.calls if c.response is not None}

    sent: list[dict[str, Any]] = []

    def replay(event: dict[str, Any]) -> dict[str, Any]:
        sent.append(event)
        answer = answers[_step_key(event)]
        assert answer is not None
        return answer

    name = lam.calls[0].event["execution_id"]
    local.run_execution(start, invoke=replay, parallel=1, execution_id=name)
    assert sorted(map(_normalised, sent)) == sorted(_normalised(c.event) for c in lam.calls)


def _step_key(event: dict[str, Any]) -> tuple[str, int]:
    index = event.get("chunk_index", event.get("group_index", -1))
    return str(event["operation"]), int(index)


def _normalised(event: dict[str, Any]) -> str:
    if event["operation"] in ("process_chunk", "merge_chunk_group"):
        event = {k: v for k, v in event.items() if k != "routing"}
    return json.dumps(event, sort_keys=True)


def _without_busy_retry(machine: dict[str, Any]) -> None:
    final = machine["States"]["FinalMerge"]
    final["Retry"] = [r for r in final["Retry"] if "LockBusyError" not in r["ErrorEquals"]]


# ---------------------------------------------------------------------------- tests
def test_more_than_four_chunks_run_the_groups_path_and_land_completely(
    app: bootstrap.App, sfn: StepFunctions, lam: InProcessLambda, tmp_path: Path
) -> None:
    batch = stage(app, tmp_path, "sfn-groups", 9)  # chunk size 2: 5 chunks, the last ragged

    out = sfn.run(definition(), batch.start, "exec-groups")

    assert_published(app, out, batch, tmp_path)
    assert lam.functions == {FUNCTION_ARN}
    assert "MergeChunkGroups" in out.entered() and out.entered()[-1] == "MarkBatchesComplete"
    assert len(lam.ops("process_chunk")) == 5 and len(lam.ops("merge_chunk_group")) == 1
    (final,) = lam.ops("final_merge")
    assert all("group_index" in r for r in final.event["chunk_results"])
    split = lam.ops("split_into_chunks")[0].response
    assert split is not None and final.event["routing"] == split["routing"]  # pinned once
    assert out.output is not None and out.output["routing"]["path"] == "legacy"
    assert_local_runner_agrees(lam, batch.start)


@pytest.mark.parametrize("flag_overrides", [{"single-chunk-fast-path": True}])
def test_single_chunk_fast_path_skips_the_chunk_map(
    app: bootstrap.App, sfn: StepFunctions, lam: InProcessLambda, tmp_path: Path
) -> None:
    batch = stage(app, tmp_path, "sfn-fast", 2, inline=True)  # one chunk of 2 deltas

    out = sfn.run(definition(), batch.start, "exec-fast")

    assert_published(app, out, batch, tmp_path)
    assert out.output is not None and out.output["poll_results_s3_key"] is None
    assert [c.event["operation"] for c in lam.calls] == ["split_into_chunks", "final_merge"]
    assert "ProcessChunks" not in out.entered() and "FinalMerge" in out.entered()
    assert_local_runner_agrees(lam, batch.start)


@pytest.mark.parametrize(
    ("spoil", "error", "failed_op"),
    [
        (
            lambda start, app: {**start, "database": "pictures"},
            "InvalidEventError",
            "split_into_chunks",
        ),
        (lambda start, app: _without(start, "batch_id"), "InvalidEventError", "split_into_chunks"),
        (lambda start, app: _missing_delta(start, app), "MergeInputError", "process_chunk"),
    ],
    ids=["unknown-database", "missing-batch-id", "missing-delta-in-map"],
)
def test_bad_input_ends_in_input_rejected_without_publishing(
    app: bootstrap.App,
    sfn: StepFunctions,
    lam: InProcessLambda,
    tmp_path: Path,
    spoil: Callable[[dict[str, Any], bootstrap.App], dict[str, Any]],
    error: str,
    failed_op: str,
) -> None:
    batch = stage(app, tmp_path, "sfn-bad", 3)
    start = spoil(batch.start, app)
    before = sorted(app.blobs.list(""))

    out = sfn.run(definition(), start, "exec-bad")

    assert out.status == "FAILED" and out.error == error
    assert "InputRejected" in out.entered() and "CompactionFailed" not in out.entered()
    assert error in out.task_errors()
    assert not lam.ops("final_merge")
    assert [c.event["operation"] for c in lam.calls if c.error] == [failed_op]
    assert sfn.backoffs == []  # bad input is never retried
    leftovers = [k for k in app.blobs.list("") if k not in before]
    assert all(k.startswith("intermediate/sfn-bad/") for k in leftovers)  # chunks that did run
    pointer = SnapshotStore(app.blobs, DB).read_pointer()
    assert pointer is not None and pointer.version == batch.base_version


def _without(start: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in start.items() if k != key}


def _missing_delta(start: dict[str, Any], app: bootstrap.App) -> dict[str, Any]:
    blob = app.blobs.get(start["poll_results_s3_key"])
    assert blob is not None
    deltas = json.loads(blob.body)
    deltas[1]["delta_key"] = "lines/delta/never-uploaded/"
    app.blobs.put(start["poll_results_s3_key"], json.dumps(deltas).encode())
    return start


@pytest.mark.parametrize("flag_overrides", [{"final-merge-path": "two_phase"}])
def test_a_busy_lock_is_retried_by_the_definition_and_then_publishes(
    app: bootstrap.App,
    aws: AwsEnv,
    sfn: StepFunctions,
    lam: InProcessLambda,
    tmp_path: Path,
) -> None:
    batch = stage(app, tmp_path, "sfn-busy", 2)
    holder = LeaseLock(
        DynamoLeaseTable(aws.table),
        duration=timedelta(minutes=2),
        heartbeat_interval=timedelta(minutes=1),
    )
    lock_id = lock_id_for(DB.value, "sfn-busy", app.settings.lock_scope)

    # Negative control: without the definition's LockBusyError retrier the same contention
    # fails the execution — so the success below is the Retry's doing.
    lease = holder.acquire(lock_id, DB.value)
    try:
        failed = sfn.run(definition(_without_busy_retry), batch.start, "exec-busy-control")
    finally:
        lease.release()
    assert failed.status == "FAILED" and failed.error == "LockBusyError"
    assert "CompactionFailed" in failed.entered() and sfn.backoffs == []
    pointer = SnapshotStore(app.blobs, DB).read_pointer()
    assert pointer is not None and pointer.version == batch.base_version

    lam.calls.clear()
    lease = holder.acquire(lock_id, DB.value)

    def holder_finishes() -> None:  # during the definition's backoff, the other writer is done
        if not lease.released:
            lease.release()

    sfn.on_backoff = holder_finishes
    try:
        out = sfn.run(definition(), batch.start, "exec-busy")
    finally:
        if not lease.released:
            lease.release()

    assert_published(app, out, batch, tmp_path)
    assert out.task_errors() == ["LockBusyError"]
    assert [c.error for c in lam.ops("final_merge")] == ["LockBusyError", None]
    assert len(sfn.backoffs) == 1 and 0 <= sfn.backoffs[0] <= 10  # IntervalSeconds, full jitter
    (_, published) = lam.ops("final_merge")
    assert published.response is not None and published.response["merge_path"] == "two_phase"
