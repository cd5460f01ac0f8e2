"""Routing through the handler: pinned decisions, the kill switch, shadow mode, EMF per path."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flags.client import bootstrap as flags_bootstrap
from flags.client import reset as flags_reset
from flags.stores import MemoryStore
from handlers import bootstrap
from handlers.compaction import lambda_handler
from handlers.local import run_execution
from rollout.metrics import MergeMetrics
from rollout.samples import collect, unit_of
from rollout.sources import EmfFileSource
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, FinalMergeResult, MergePath, VersionId
from snapmerge.seeding import seed_snapshot, upload_delta
from tests.unit.flags.helpers import DEFAULT_DOC

DIM = 8


def _doc(path: str = "legacy", kill: bool = False) -> dict[str, Any]:
    doc = json.loads(json.dumps(DEFAULT_DOC))
    doc["final-merge-path"]["default"] = path
    doc["final-merge-kill-switch"]["default"] = kill
    return doc


@pytest.fixture
def flags_store() -> MemoryStore:
    return MemoryStore(_doc())


@pytest.fixture
def app(tmp_path: Path, flags_store: MemoryStore) -> Iterator[bootstrap.App]:
    flags_reset()
    settings = Settings(bucket="mem", table="mem", chroma_root=tmp_path / "c", chunk_size_words=2)
    instance = bootstrap.build(
        settings,
        blobs=MemoryBlobStore(),
        engine=MemoryIndex(),
        leases=MemoryLeaseTable(),
        flags=flags_bootstrap(flags_store),
        metrics=MergeMetrics(emf_file=tmp_path / "emf.jsonl", stdout=False),
    )
    bootstrap.install(instance)
    seed_snapshot(
        instance.blobs, instance.engine, Database.WORDS, synth.records(1, 10, DIM, "base-"),
        workdir=tmp_path,
    )  # fmt: skip
    yield instance
    bootstrap.install(None)
    flags_reset()


def _event(app: bootstrap.App, tmp_path: Path, batch: str) -> dict[str, Any]:
    keys = [
        upload_delta(app.blobs, app.engine, Database.WORDS, f"{batch}-{i}",
                     synth.records(hash(batch) % 1000 + i, 4, DIM, f"{batch}-"), workdir=tmp_path)
        for i in range(3)
    ]  # fmt: skip
    return {"batch_id": batch, "database": "words", "delta_results": keys}


def _emf(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "emf.jsonl").read_text().splitlines()]


def _set(store: MemoryStore, doc: dict[str, Any]) -> None:
    store.save(doc, store.load()[1])


def test_the_decision_is_pinned_at_split_and_the_kill_switch_still_overrides_it(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("two_phase"))
    event = _event(app, tmp_path, "pin")
    split = lambda_handler({**event, "operation": "split_into_chunks"})
    assert split["routing"]["path"] == "two_phase"

    # the percentage drops to legacy mid-execution: the pinned decision still holds ...
    _set(flags_store, _doc("legacy"))
    chunks = [lambda_handler({**c, "operation": "process_chunk"}) for c in split["chunks"]]
    final_event = {**split, "operation": "final_merge", "chunk_results": chunks}
    assert lambda_handler(final_event)["merge_path"] == "two_phase"

    # ... but the kill switch overrides it at the next step
    _set(flags_store, _doc("two_phase", kill=True))
    again = _event(app, tmp_path, "pin2")
    split2 = lambda_handler({**again, "operation": "split_into_chunks"})
    _set(flags_store, _doc("two_phase", kill=False))
    pinned_two_phase = {**split2["routing"], "path": "two_phase"}
    _set(flags_store, _doc("two_phase", kill=True))
    chunks2 = [lambda_handler({**c, "operation": "process_chunk"}) for c in split2["chunks"]]
    out = lambda_handler(
        {**split2, "routing": pinned_two_phase, "operation": "final_merge",
         "chunk_results": chunks2}
    )  # fmt: skip
    assert out["merge_path"] == "legacy" and out["decided_path"] == "legacy"


def test_an_event_without_a_pinned_decision_evaluates_the_flags(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("two_phase"))
    split = lambda_handler({**_event(app, tmp_path, "old"), "operation": "split_into_chunks"})
    chunks = [lambda_handler({**c, "operation": "process_chunk"}) for c in split["chunks"]]
    started_before_upgrade = {k: v for k, v in split.items() if k != "routing"}
    out = lambda_handler(
        {**started_before_upgrade, "operation": "final_merge", "chunk_results": chunks}
    )
    assert out["merge_path"] == "two_phase"


def test_shadow_publishes_legacy_and_reports_a_match_under_each_path(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("shadow"))
    out = run_execution(_event(app, tmp_path, "sh"))["final"]
    assert (out["merge_path"], out["shadow"]) == ("legacy", "matched")
    blobs = _emf(tmp_path)
    by_path = {b["MergePath"]: b for b in blobs}
    assert by_path["legacy"]["LockHoldTime"] and by_path["two_phase"]["ShadowMatched"] == [1.0]
    for blob in blobs:
        (dims,) = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
        assert dims == ["MergePath", "Collection"]
    assert app.blobs.list("intermediate/sh") == []  # cleaned after the comparison


class Divergent:
    """A candidate that drops a record: the shadow comparison must see it."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def dry_run(self, request: FinalMergeRequest, base: VersionId | None) -> FinalMergeResult:
        result = self.real.dry_run(request, base)
        return replace(result, digest="0" * 64, total_embeddings=result.total_embeddings - 1)


def test_shadow_catches_a_divergent_candidate(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("shadow"))
    app.router.candidate = Divergent(app.two_phase)
    out = run_execution(_event(app, tmp_path, "div"))["final"]
    assert out["shadow"] == "mismatched" and out["merge_path"] == "legacy"
    two_phase = [b for b in _emf(tmp_path) if b["MergePath"] == "two_phase"]
    assert two_phase[-1]["ShadowMismatched"] == [1.0]


def test_shadow_without_lambda_time_is_skipped_and_counted(app: bootstrap.App) -> None:
    request = FinalMergeRequest("late", Database.WORDS, ("x",))
    published = replace(_fake_result(), batch_id="late")
    routed = app.router._shadow(request, published, remaining_ms=lambda: 1_000)
    assert routed.shadow is not None and routed.shadow.value == "skipped"
    assert "Lambda time" in (routed.shadow_reason or "")


def _fake_result() -> FinalMergeResult:
    return FinalMergeResult(
        MergePath.LEGACY, "b", Database.WORDS, VersionId("v"), None, "k", 1, 0.1, 1, 1, 1, 0, 0
    )


def test_a_failing_merge_raises_and_is_counted_under_its_path(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("two_phase"))
    event = {
        "operation": "final_merge", "batch_id": "gone", "database": "words",
        "chunk_results": [{"chunk_index": 0, "intermediate_key": "intermediate/gone/chunk-0/"}],
    }  # fmt: skip
    with pytest.raises(Exception, match="gone"):
        lambda_handler(event)
    (blob,) = [b for b in _emf(tmp_path) if b.get("MergeErrors") == [1.0]]
    assert blob["MergePath"] == "two_phase" and blob["batch_id"] == "gone"


def test_a_broken_flag_store_fails_closed_to_legacy(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    _set(flags_store, _doc("two_phase"))
    assert app.flags.decide_path(
        targeting_key="k", collection="words", batch_id="k"
    ).path.value == ("two_phase")  # the good document is loaded
    flags_store.raw = {"final-merge-path": {"default": "warp-speed", "boolean_type": False}}
    out = run_execution(_event(app, tmp_path, "bad"))["final"]
    # the last good document named two_phase and keeps serving; with none, legacy
    assert out["merge_path"] == "two_phase"
    assert sum(v for k, v in app.flags.counters().items() if k.startswith("errors.")) >= 1
    flags_reset()
    flags_store.raw = {"final-merge-path": {"default": "warp-speed", "boolean_type": False}}
    cold = flags_bootstrap(flags_store)
    decision = cold.decide_path(targeting_key="k", collection="words", batch_id="k")
    assert decision.path.value == "legacy" and decision.error


def _switchback_doc() -> dict[str, Any]:
    """Two-phase for every (collection, day) unit."""
    doc = _doc()
    doc["final-merge-path"]["switchback"] = {"window_seconds": 86400}
    doc["final-merge-path"]["rules"] = {
        "rollout": {
            "when_match": "two_phase",
            "conditions": [{"action": "KEY_LESS_THAN_VALUE", "key": "bucket", "value": 10000}],
        }
    }
    return doc


def test_a_switchback_unit_reaches_the_emf_record(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    """The split pins the unit it bucketed on; the final merge's EMF record carries it in its
    ``decision`` metadata (what the judge groups by)."""
    _set(flags_store, _switchback_doc())
    split = lambda_handler({**_event(app, tmp_path, "sb"), "operation": "split_into_chunks"})
    unit = split["routing"]["unit"]
    assert split["routing"]["path"] == "two_phase" and re.fullmatch(r"words@\d+", unit)
    chunks = [lambda_handler({**c, "operation": "process_chunk"}) for c in split["chunks"]]
    lambda_handler({**split, "operation": "final_merge", "chunk_results": chunks})
    (blob,) = [b for b in _emf(tmp_path) if b.get("batch_id") == "sb" and "decision" in b]
    assert blob["MergePath"] == "two_phase"
    assert blob["decision"]["unit"] == unit and blob["decision"]["pinned"] is True


def test_a_failed_merge_is_counted_in_its_switchback_unit(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    """A failed merge's record carries the decision it ran under, as a success's does, so the
    judge reads the failure into its unit's ``MergeErrors``."""
    _set(flags_store, _switchback_doc())
    run_execution(_event(app, tmp_path, "sb-ok"))  # words: publishes
    delta = upload_delta(app.blobs, app.engine, Database.LINES, "sb-bad-0",
                         synth.records(7, 4, DIM, "sb-bad-"), workdir=tmp_path)  # fmt: skip
    event = {"batch_id": "sb-bad", "database": "lines", "delta_results": [delta]}
    split = lambda_handler({**event, "operation": "split_into_chunks"})
    unit = split["routing"]["unit"]
    assert split["routing"]["path"] == "two_phase" and re.fullmatch(r"lines@\d+", unit)
    missing = [{"chunk_index": 0, "intermediate_key": "intermediate/sb-bad/chunk-9/"}]
    with pytest.raises(Exception, match="sb-bad"):  # its chunk never ran: the merge raises
        lambda_handler({**split, "operation": "final_merge", "chunk_results": missing})

    records = EmfFileSource(tmp_path / "emf.jsonl", namespace=app.metrics.namespace).records()
    (failed,) = [r for r in records if r.values.get("MergeErrors") == 1.0]
    assert (failed.path, failed.metadata["batch_id"]) == (MergePath.TWO_PHASE, "sb-bad")
    assert failed.metadata["decision"] == {**split["routing"], "pinned": True}
    assert unit_of(failed) == unit
    samples = collect(records)
    words = next(unit_of(r) for r in records if r.metadata.get("batch_id") == "sb-ok")
    assert words is not None and words.startswith("words@")
    # by unit (sorted): lines@… failed its one merge, words@… did not
    assert samples.unit_candidate["MergeErrors"].tolist() == [1.0, 0.0]
    assert samples.n_candidate == 2 and not samples.mixed_units


def test_a_flag_error_at_split_is_one_record_of_its_own_and_no_execution(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    """The split counts its flag error in a record written at the split, counted once for the
    execution (the final merge reuses the pinned decision and does not count it again), and the
    judge does not read that record as an execution of the fail-closed path."""
    flags_reset()
    flags_store.raw = {"final-merge-path": {"default": "warp-speed", "boolean_type": False}}
    app.flags = flags_bootstrap(flags_store)  # a cold container: no good document ever loaded
    split = lambda_handler({**_event(app, tmp_path, "fe"), "operation": "split_into_chunks"})
    assert split["routing"]["path"] == "legacy" and split["routing"]["error"]
    (at_split,) = [b for b in _emf(tmp_path) if "FlagErrors" in b]  # written by the split
    assert at_split["FlagErrors"] == [1.0] and "FinalMergeDuration" not in at_split

    chunks = [lambda_handler({**c, "operation": "process_chunk"}) for c in split["chunks"]]
    final = {**split, "operation": "final_merge", "chunk_results": chunks}
    assert lambda_handler(final)["merge_path"] == "legacy"
    blobs = _emf(tmp_path)
    assert sum(b.get("FlagErrors", [0.0])[0] for b in blobs) == 1.0  # not again at the merge
    (merged,) = [b for b in blobs if "FinalMergeDuration" in b]
    assert merged["batch_id"] == "fe" and "FlagErrors" not in merged

    records = EmfFileSource(tmp_path / "emf.jsonl", namespace=app.metrics.namespace).records()
    assert len(records) == 2
    assert collect(records).n_baseline == 1  # the merge, not the split's flag record


def test_a_new_flag_error_at_the_final_merge_is_counted(
    app: bootstrap.App, tmp_path: Path, flags_store: MemoryStore
) -> None:
    """A pinned decision that cannot be used fails closed at the final merge: that error is the
    merge step's own, and counted in its record."""
    split = lambda_handler({**_event(app, tmp_path, "np"), "operation": "split_into_chunks"})
    chunks = [lambda_handler({**c, "operation": "process_chunk"}) for c in split["chunks"]]
    broken = {**split["routing"], "unit": ""}  # malformed pinned state
    out = lambda_handler(
        {**split, "routing": broken, "operation": "final_merge", "chunk_results": chunks}
    )
    assert out["merge_path"] == "legacy"
    (merged,) = [b for b in _emf(tmp_path) if "FinalMergeDuration" in b]
    assert merged["FlagErrors"] == [1.0] and "empty unit" in merged["flag_error"]
