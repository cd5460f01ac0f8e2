"""EMF output of MergeMetrics: names, units, exactly two dimensions, ids in metadata, one blob
per path, per-thread isolation."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.metrics import Metrics

from handlers.demo_summary import ab_table
from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from rollout.metric_names import DEFAULT_NAMESPACE, MetricName, Unit, phase_metric
from rollout.metrics import MergeMetrics
from rollout.samples import unit_of
from rollout.sources import EmfFileSource, parse_emf
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import (
    Database,
    FinalMergeRequest,
    FinalMergeResult,
    Keys,
    MergePath,
    VersionId,
)
from snapmerge.errors import InvalidEventError
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

IDS = {"execution_id", "batch_id", "version", "base_version", "decision"}
GROUP_FIELDS = {"consumed_batches", "published_by", "wasted_builds"}


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


def test_a_failed_merge_records_its_decision_and_one_before_any_decision_names_no_unit(
    metrics: MergeMetrics,
) -> None:
    decision = {"path": "two_phase", "variant": "two_phase", "unit": "lines@20454"}
    metrics.record_error(
        MergePath.TWO_PHASE, "lines", RuntimeError("boom"), batch_id="b", decision=decision
    )
    metrics.record_error(MergePath.LEGACY, "words", InvalidEventError("bad event"), batch_id="c")
    blobs = {b["batch_id"]: b for b in metrics.flush()}
    assert blobs["b"]["decision"] == decision  # as a success records it (IDS: metadata)
    assert not IDS & {d for dims in dimensions(blobs["b"]) for d in dims}
    records = {r.metadata["batch_id"]: r for r in map(parse_emf, blobs.values())}
    assert unit_of(records["b"]) == "lines@20454"
    # no decision was made: still a valid record, of an error, in no unit
    assert records["c"].values == {"MergeErrors": 1.0} and "decision" not in records["c"].metadata
    assert unit_of(records["c"]) is None and records["c"].metadata["error_type"] == (
        "InvalidEventError"
    )


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


# -- group commit: BatchesPerPublish, CoalescedBatches, WastedBuilds ---------------------------


@dataclass
class Rig:
    """A collection on the in-memory fakes; ``kit`` counts its uploads at the ``after_upload``
    hook and runs a test's action there once (another writer publishing meanwhile)."""

    blobs: MemoryBlobStore
    engine: MemoryIndex
    kit: MergeKit
    root: Path
    uploads: int = 0
    meanwhile: Callable[[], None] | None = None

    def hook(self, step: str) -> None:
        if step == "after_upload":
            self.uploads += 1
            action, self.meanwhile = self.meanwhile, None
            if action is not None:
                action()

    def batch(self, batch_id: str, n: int, seed: int) -> FinalMergeRequest:
        local = self.root / batch_id
        synth.write_index(
            self.engine, local, synth.records(seed, n, 8, id_prefix=batch_id), "words"
        )
        upload_directory(self.blobs, local, Keys.intermediate_prefix(batch_id, 0))
        return FinalMergeRequest(batch_id, Database.WORDS, (Keys.intermediate_prefix(batch_id, 0),))

    def publish_outside_the_lock(self) -> None:
        """A writer that takes no lock (the original's stream compactor): a conditional swap."""
        rows = synth.records(99, 3, 8, id_prefix="outside-")
        seed_snapshot(self.blobs, self.engine, Database.WORDS, rows, workdir=self.root)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    blobs, engine = MemoryBlobStore(), MemoryIndex()
    settings = Settings(bucket="m", table="m", chroma_root=tmp_path / "root")
    rig = Rig(blobs, engine, MergeKit(blobs, engine, MemoryLeaseTable(), settings), tmp_path)
    rig.kit.hooks = rig.hook
    seed_snapshot(blobs, engine, Database.WORDS, synth.records(1, 10, 8), workdir=tmp_path)
    return rig


def merger(path: MergePath, kit: MergeKit) -> LegacyFinalMerge | TwoPhaseFinalMerge:
    if path is MergePath.LEGACY:
        return LegacyFinalMerge(kit)
    return TwoPhaseFinalMerge(
        kit, fallback=merge_under_lease, rng=random.Random(1), sleep=lambda _s: None
    )


@pytest.mark.parametrize("path", [MergePath.LEGACY, MergePath.TWO_PHASE])
def test_a_real_run_that_lost_a_cas_reports_its_wasted_build(
    rig: Rig, metrics: MergeMetrics, path: MergePath
) -> None:
    rig.meanwhile = rig.publish_outside_the_lock  # our first upload is overtaken: one rebase
    result = merger(path, rig.kit).run(rig.batch("b1", 4, seed=2))
    [blob] = metrics_of(metrics, result)

    assert result.cas_failures == 1 and rig.uploads == 2  # two builds uploaded, one published
    assert blob["WastedBuilds"] == [float(rig.uploads - 1)]
    assert blob["BatchesPerPublish"] == [1.0]  # today's paths publish one batch per version
    assert blob["CoalescedBatches"] == [0.0]
    assert units(blob)["WastedBuilds"] == Unit.COUNT
    assert dimensions(blob) == [["MergePath", "Collection"]]
    assert blob["MergePath"] == path.value


@pytest.mark.parametrize("path", [MergePath.LEGACY, MergePath.TWO_PHASE])
def test_a_clean_run_wastes_nothing_and_its_replay_reports_no_publish(
    rig: Rig, metrics: MergeMetrics, path: MergePath
) -> None:
    request = rig.batch("b1", 4, seed=2)
    [first] = metrics_of(metrics, merger(path, rig.kit).run(request))
    [again] = metrics_of(metrics, merger(path, rig.kit).run(request))  # a Step Functions retry

    assert rig.uploads == 1
    assert (first["WastedBuilds"], first["BatchesPerPublish"]) == ([0.0], [1.0])
    assert again["replayed"] is True
    assert (again["WastedBuilds"], again["CoalescedBatches"]) == ([0.0], [0.0])
    assert "BatchesPerPublish" not in again  # a replay published nothing


def test_group_commit_fields_when_a_path_reports_them(metrics: MergeMetrics) -> None:
    metrics.record_result(result(consumed_batches=("b0", "batch-1", "b2"), wasted_builds=0))
    [publisher] = metrics.flush()
    metrics.record_result(result(published_by="b0", cas_failures=0))
    [rider] = metrics.flush()

    assert publisher["BatchesPerPublish"] == [3.0]
    assert publisher["WastedBuilds"] == [0.0]  # the path's own count wins over cas_failures (2)
    assert publisher["CoalescedBatches"] == [0.0]
    assert publisher["consumed_batches"] == ["b0", "batch-1", "b2"]
    assert rider["CoalescedBatches"] == [1.0]
    assert "BatchesPerPublish" not in rider  # b0's execution reported that publish
    assert rider["published_by"] == "b0"


def test_group_commit_fields_survive_a_receipt_round_trip() -> None:
    original = result(consumed_batches=("b0", "batch-1"), published_by="b0", wasted_builds=2)
    back = FinalMergeResult(
        **{
            **json.loads(json.dumps(original.to_json())),
            "path": original.path,
            "database": original.database,
        }
    )
    assert back == original and back.consumed_batches == ("b0", "batch-1")
    old_receipt = {k: v for k, v in original.to_json().items() if k not in GROUP_FIELDS}
    old = FinalMergeResult(**old_receipt)
    assert (old.consumed_batches, old.published_by, old.wasted_builds) == ((), None, None)


def test_the_demo_table_shows_batches_per_publish_and_wasted_builds(tmp_path: Path) -> None:
    metrics = MergeMetrics(emf_file=tmp_path / "emf.jsonl", stdout=False)
    for changes in (
        {"consumed_batches": ("a", "b", "c"), "wasted_builds": 1},
        {"published_by": "a", "wasted_builds": 0},
        {"consumed_batches": ("d",), "wasted_builds": 2},
    ):
        metrics.record_result(result(**changes))
        metrics.flush()
    metrics.record_result(result(MergePath.LEGACY, cas_failures=0, cas_retries=0))
    metrics.flush()

    table = ab_table(EmfFileSource(tmp_path / "emf.jsonl").records())
    rows = {line[:28].strip(): line[28:].split() for line in table.splitlines()}
    assert rows["batches per publish (mean)"] == ["1.0", "2.0"]  # (3 + 1) / 2 publishes
    assert rows["wasted builds"] == ["0.0", "3.0"]
    assert rows["coalesced batches"] == ["0.0", "1.0"]


def metrics_of(metrics: MergeMetrics, merged: FinalMergeResult) -> list[dict[str, Any]]:
    metrics.record_result(merged)
    return metrics.flush()
