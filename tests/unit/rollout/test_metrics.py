"""EMF output of MergeMetrics: names, units, exactly two dimensions, ids in metadata, one blob
per path, per-thread isolation."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.metrics import Metrics

from rollout.metric_names import DEFAULT_NAMESPACE, MetricName, Unit, phase_metric
from rollout.metrics import MergeMetrics
from rollout.sources import EmfFileSource
from snapmerge.domain import Database, FinalMergeResult, MergePath, VersionId

IDS = {"execution_id", "batch_id", "version", "base_version", "decision"}


def result(path: MergePath = MergePath.TWO_PHASE, **changes: Any) -> FinalMergeResult:
    base = FinalMergeResult(
        path=path,
        batch_id="batch-1",
        database=Database.WORDS,
        version=VersionId("20250101_000000_000001_abcd1234"),
        base_version=VersionId("20250101_000000_000000_00000000"),
        snapshot_key="words/snapshot/timestamped/x/",
        total_embeddings=120,
        processing_time_seconds=2.5,
        chunk_count=3,
        delta_count=40,
        records_merged=20,
        lock_wait_ms=4.0,
        lock_hold_ms=35.0,
        lock_phases_ms={"phase1": 10.0, "phase3": 25.0, "phase1_wait": 4.0},
        lock_contention=1,
        cas_failures=2,
        cas_retries=2,
        fallback_to_legacy=False,
        digest="d1",
    )
    return replace(base, **changes)


def dimensions(blob: dict[str, Any]) -> list[list[str]]:
    dims: list[list[str]] = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    return dims


def units(blob: dict[str, Any]) -> dict[str, str]:
    return {m["Name"]: m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> MergeMetrics:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    monkeypatch.delenv("SNAPMERGE_EMF_FILE", raising=False)
    return MergeMetrics(stdout=False)


def test_result_blob_has_names_units_two_dimensions_and_ids_in_metadata(
    metrics: MergeMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "compaction")  # must not become a dimension
    metrics.record_result(result(), execution_id="exec-9", decision={"variant": "two_phase"})
    [blob] = metrics.flush()

    assert blob["_aws"]["CloudWatchMetrics"][0]["Namespace"] == DEFAULT_NAMESPACE
    assert dimensions(blob) == [["MergePath", "Collection"]]
    assert "service" not in blob
    assert (blob["MergePath"], blob["Collection"]) == ("two_phase", "words")
    for name, unit in units(blob).items():
        assert MetricName(name).unit.value == unit
    assert units(blob)["LockHoldTime"] == Unit.MILLISECONDS
    assert units(blob)["CASFailures"] == Unit.COUNT
    assert blob["LockHoldTimePhase1"] == [10.0]
    assert blob["LockHoldTimePhase3"] == [25.0]
    assert blob["LockWaitTimePhase1"] == [4.0]
    assert blob["FinalMergeDuration"] == [2500.0]
    assert blob["MergeErrors"] == [0.0]
    assert blob["CompactionLockCollision"] == [1.0]
    assert blob["execution_id"] == "exec-9"
    assert blob["decision"] == {"variant": "two_phase"}
    assert blob.keys() >= IDS
    assert not IDS & {d for dims in dimensions(blob) for d in dims}


def test_a_shadow_invocation_yields_one_blob_per_path(metrics: MergeMetrics) -> None:
    metrics.record_result(result(MergePath.LEGACY, lock_phases_ms={"merge": 900.0}))
    metrics.record_shadow("words", "mismatched", batch_id="batch-1", candidate=result())
    blobs = metrics.flush()

    by_path = {b["MergePath"]: b for b in blobs}
    assert sorted(by_path) == ["legacy", "two_phase"]
    legacy, candidate = by_path["legacy"], by_path["two_phase"]
    assert legacy["LockHoldTimeMerge"] == [900.0]
    assert "ShadowMismatched" not in legacy
    assert candidate["ShadowMismatched"] == [1.0]
    assert candidate["ShadowMatched"] == [0.0] and candidate["ShadowSkipped"] == [0.0]
    assert candidate["ChunkCount"] == [3.0]
    assert "LockHoldTime" not in candidate  # a dry run's times are not reported as a publish's
    assert all(dimensions(b) == [["MergePath", "Collection"]] for b in blobs)
    assert metrics.flush() == []


def test_errors_flag_errors_and_replays(metrics: MergeMetrics) -> None:
    metrics.record_error(
        MergePath.TWO_PHASE, "lines", RuntimeError("boom"), execution_id="e", batch_id="b"
    )
    metrics.record_flag_error("final-merge-path", ValueError("bad doc"))
    metrics.record_result(result(MergePath.LEGACY, replayed=True))
    blobs = {(b["MergePath"], b["Collection"]): b for b in metrics.flush()}

    error = blobs[("two_phase", "lines")]
    assert error["MergeErrors"] == [1.0]
    assert (error["error_type"], error["batch_id"]) == ("RuntimeError", "b")
    flag = blobs[("legacy", "unknown")]
    assert flag["FlagErrors"] == [1.0] and flag["flag_key"] == "final-merge-path"
    assert blobs[("legacy", "words")]["replayed"] is True


def test_unknown_shadow_outcome_is_refused(metrics: MergeMetrics) -> None:
    with pytest.raises(ValueError, match="shadow outcome"):
        metrics.record_shadow("words", "maybe")


def test_stdout_file_and_env_settings_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emf = tmp_path / "logs" / "emf.jsonl"
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "TestSpace")
    monkeypatch.setenv("SNAPMERGE_EMF_FILE", str(emf))
    metrics = MergeMetrics()
    metrics.record_result(result(), execution_id="x1")
    blobs = metrics.flush()
    metrics.record_result(result(MergePath.LEGACY), execution_id="x2")
    blobs += metrics.flush()

    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == blobs
    assert [json.loads(line) for line in emf.read_text().splitlines()] == blobs
    assert blobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TestSpace"
    records = EmfFileSource(emf, namespace="TestSpace").records()
    assert [(r.path, r.metadata["execution_id"]) for r in records] == [
        (MergePath.TWO_PHASE, "x1"),
        (MergePath.LEGACY, "x2"),
    ]
    assert records[0].values["LockHoldTime"] == 35.0


def own_blobs_only(outcomes: dict[str, list[dict[str, Any]]]) -> bool:
    """The checker: each invocation's flush holds exactly its own path and execution."""
    return all(
        len(blobs) == 1 and blobs[0]["MergePath"] == path and blobs[0]["execution_id"] == path
        for path, blobs in outcomes.items()
    )


def test_concurrent_invocations_never_share_a_blob(tmp_path: Path) -> None:
    metrics = MergeMetrics(emf_file=tmp_path / "emf.jsonl", stdout=False)
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[dict[str, Any]]] = {}

    def invocation(path: MergePath) -> None:
        metrics.record_result(result(path), execution_id=path.value)
        barrier.wait()  # both have recorded before either flushes
        outcomes[path.value] = metrics.flush()

    threads = [
        threading.Thread(target=invocation, args=(p,))
        for p in (MergePath.LEGACY, MergePath.TWO_PHASE)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert own_blobs_only(outcomes)
    assert len((tmp_path / "emf.jsonl").read_text().splitlines()) == 2


def test_negative_control_shared_powertools_metrics_mix_paths() -> None:
    """Two plain ``Metrics`` instances share state: the checker above catches the mix-up."""
    legacy, candidate = Metrics(namespace="Control"), Metrics(namespace="Control")
    try:
        with pytest.warns(UserWarning):
            legacy.add_dimension(name="MergePath", value="legacy")
            legacy.add_metadata(key="execution_id", value="legacy")
            candidate.add_dimension(name="MergePath", value="two_phase")
            candidate.add_metadata(key="execution_id", value="two_phase")
        legacy.add_metric(name="LockHoldTime", unit="Milliseconds", value=1.0)
        blob = dict(legacy.serialize_metric_set())
        assert not own_blobs_only({"legacy": [blob]})
    finally:
        legacy.clear_metrics()


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("phase1", MetricName.LOCK_HOLD_TIME_PHASE1),
        ("Phase_3", MetricName.LOCK_HOLD_TIME_PHASE3),
        ("fallback", MetricName.LOCK_HOLD_TIME_FALLBACK),
        ("phase3_wait", MetricName.LOCK_WAIT_TIME_PHASE3),
        ("merge-wait", MetricName.LOCK_WAIT_TIME_MERGE),
        ("phase2", None),
    ],
)
def test_phase_keys_map_to_names(key: str, name: MetricName | None) -> None:
    assert phase_metric(key) == name
