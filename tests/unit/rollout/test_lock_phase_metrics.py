"""Per-phase lock metrics from real runs of both paths, through EMF and back (issue 14).

Each run is a real final merge on the in-memory fakes (lease table, blob store, index); its result
goes through ``MergeMetrics`` to an EMF file, and ``EmfFileSource`` reads it back. Every phase a
path held the lock in must come back as a hold metric and a wait metric, and the phases must add
up to the totals. Before one meter served both paths, legacy's phase key (``single``) had no
metric name and no path recorded the ``<phase>_wait`` keys.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from legacy.final_merge import LegacyFinalMerge
from legacy.merge_under_lease import merge_under_lease
from rollout.metric_names import MetricName, phase_metric
from rollout.metrics import MergeMetrics
from rollout.sources import EmfFileSource, MetricRecord
from snapmerge import synth
from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.memory_index import MemoryIndex
from snapmerge.adapters.memory_lock import MemoryLeaseTable
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, FinalMergeResult, Keys, MergePath
from snapmerge.lock_meter import wait_key
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
DIM = 8
TOTALS = {MetricName.LOCK_HOLD_TIME.value, MetricName.LOCK_WAIT_TIME.value}


class Collection:
    """One collection on the fakes; ``overtake`` publishes outside the lock after our first
    upload, so that upload's CAS is refused (as the original's stream compactor could)."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.blobs, self.engine = MemoryBlobStore(), MemoryIndex()
        settings = Settings(bucket="m", table="m", chroma_root=tmp_path / "root")
        self.kit = MergeKit(self.blobs, self.engine, MemoryLeaseTable(), settings)
        self.kit.hooks = self._hook
        self.overtake = False
        seed_snapshot(self.blobs, self.engine, DB, synth.records(1, 10, DIM), workdir=tmp_path)

    def _hook(self, step: str) -> None:
        if step == "after_upload" and self.overtake:
            self.overtake = False
            rows = synth.records(99, 3, DIM, id_prefix="outside-")
            seed_snapshot(self.blobs, self.engine, DB, rows, workdir=self.root)

    def batch(self, batch_id: str) -> FinalMergeRequest:
        local = self.root / batch_id
        rows = synth.records(2, 4, DIM, id_prefix=batch_id)
        synth.write_index(self.engine, local, rows, f"receipt_{DB.value}")
        upload_directory(self.blobs, local, Keys.intermediate_prefix(batch_id, 0))
        return FinalMergeRequest(batch_id, DB, (Keys.intermediate_prefix(batch_id, 0),))


def emitted(tmp_path: Path, result: FinalMergeResult) -> MetricRecord:
    """``result`` written as EMF to a file by MergeMetrics and parsed back."""
    emf = tmp_path / "emf.jsonl"
    metrics = MergeMetrics(emf_file=emf, stdout=False)
    metrics.record_result(result)
    metrics.flush()
    [record] = EmfFileSource(emf, must_exist=True).records()
    return record


CASES = [
    # (path, outside publish after our first upload, two-phase max_rebases, phases held)
    pytest.param(MergePath.LEGACY, False, 0, ["merge"], id="legacy"),
    pytest.param(MergePath.LEGACY, True, 0, ["merge"], id="legacy-rebased-under-lock"),
    pytest.param(MergePath.TWO_PHASE, False, 3, ["phase1", "phase3"], id="two-phase"),
    pytest.param(
        MergePath.TWO_PHASE, True, 0, ["phase1", "phase3", "fallback"], id="two-phase-fallback"
    ),
]


@pytest.mark.parametrize(("path", "overtake", "max_rebases", "phases"), CASES)
def test_every_phase_a_real_run_held_comes_back_from_emf_as_hold_and_wait(
    tmp_path: Path, path: MergePath, overtake: bool, max_rebases: int, phases: list[str]
) -> None:
    collection = Collection(tmp_path)
    collection.overtake = overtake
    merge: LegacyFinalMerge | TwoPhaseFinalMerge
    if path is MergePath.LEGACY:
        merge = LegacyFinalMerge(collection.kit)
    else:
        merge = TwoPhaseFinalMerge(
            collection.kit,
            fallback=merge_under_lease,
            max_rebases=max_rebases,
            rng=random.Random(1),
            sleep=lambda _s: None,
        )

    result = merge.run(collection.batch("b1"))
    record = emitted(tmp_path, result)

    assert result.cas_failures == int(overtake)  # the outside publish did refuse our CAS
    assert result.fallback_to_legacy is (path is MergePath.TWO_PHASE and overtake)
    assert record.path is path
    holds = {phase_metric(p) for p in phases}
    waits = {phase_metric(wait_key(p)) for p in phases}
    assert None not in holds | waits
    per_phase = {
        name
        for name in record.values
        if name.startswith(("LockHoldTime", "LockWaitTime")) and name not in TOTALS
    }
    # exactly the phases this run held, each as a hold and a wait; no key went unnamed
    assert per_phase == {str(name) for name in holds | waits}
    assert "unnamed_phases" not in record.metadata
    values = record.values
    assert values[MetricName.LOCK_HOLD_TIME] > 0.0
    assert sum(values[str(n)] for n in holds) == pytest.approx(values[MetricName.LOCK_HOLD_TIME])
    assert sum(values[str(n)] for n in waits) == pytest.approx(values[MetricName.LOCK_WAIT_TIME])
    # and the EMF numbers are the run's own
    assert values[MetricName.LOCK_HOLD_TIME] == pytest.approx(result.lock_hold_ms)
    assert values[MetricName.LOCK_WAIT_TIME] == pytest.approx(result.lock_wait_ms)
