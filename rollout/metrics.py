"""Metrics of every final merge, as CloudWatch EMF through Powertools (DESIGN §5).

Why not one module-level ``Metrics()``: Powertools' ``Metrics`` instances share their metric,
dimension and metadata sets through class attributes, so two paths reported by one invocation (a
shadow run) would land in one blob under one ``MergePath`` — and two handler threads of the
embedded demo would mix their numbers. Here each invocation (each thread) keeps its own pending
sets, one per ``(MergePath, Collection)``, and :meth:`MergeMetrics.flush` serialises each through
a fresh ``EphemeralMetrics`` (Powertools' provider without shared state), so validation, units and
the EMF layout stay Powertools'.

Rules the judge and the dashboards rely on:

* dimensions are exactly ``MergePath`` and ``Collection`` (``POWERTOOLS_SERVICE_NAME`` is *not*
  added as a ``service`` dimension); ids (execution, batch, version, the flag decision) are
  metadata;
* every count a result can report is emitted, zeros included, so a per-execution rate has its
  denominator (``MergeErrors`` is 0 on success, 1 from :meth:`record_error`);
* a name recorded twice in one set is summed (two lock holds in one invocation add up);
* group commit: ``CoalescedBatches`` (1 when another execution's publish carried this batch) and
  ``WastedBuilds`` (versions built and uploaded, never published) are emitted for every merge
  that ran; ``BatchesPerPublish`` only by the execution that published, so its ``Average`` is
  the mean number of batches a publish consumed. A replayed result ran no merge: its group
  counts are 0 and it reports no publish. Until a path counts ``wasted_builds`` itself, each
  refused CAS counts as one wasted build (today every refusal discards a built, uploaded version).

Blobs go to stdout (CloudWatch Logs in Lambda; skipped when Powertools' metrics are disabled)
and, when ``emf_file`` or ``SNAPMERGE_EMF_FILE`` is set, are appended to that file one JSON line
each — the embedded mode's stand-in for the log group, read back by
:class:`rollout.sources.EmfFileSource`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from rollout.metric_names import (
    EMF_FILE_ENV,
    Dimension,
    MetricName,
    ShadowOutcome,
    default_namespace,
    phase_metric,
)
from snapmerge.domain import FinalMergeResult, MergePath

_SHADOW = {
    ShadowOutcome.MATCHED: MetricName.SHADOW_MATCHED,
    ShadowOutcome.MISMATCHED: MetricName.SHADOW_MISMATCHED,
    ShadowOutcome.SKIPPED: MetricName.SHADOW_SKIPPED,
}
UNKNOWN_COLLECTION = "unknown"
_MAX_ERROR_TEXT = 500


@dataclass
class _Pending:
    """The metrics and metadata one invocation gathered for one (path, collection)."""

    timestamp_ms: int
    values: dict[MetricName, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def add(self, name: MetricName, value: float) -> None:
        self.values[name] = self.values.get(name, 0.0) + float(value)

    def note(self, **metadata: Any) -> None:
        self.metadata.update({k: v for k, v in metadata.items() if v is not None})


class MergeMetrics:
    """Collects one invocation's merge metrics and writes them as EMF, one blob per path.

    Record from the thread that runs the invocation and :meth:`flush` at its end (the handler
    does): pending sets are per thread, so concurrent invocations never share a blob.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        emf_file: Path | None = None,
        stdout: bool = True,
    ) -> None:
        self.namespace = namespace or default_namespace()
        env_file = os.environ.get(EMF_FILE_ENV)
        self.emf_file = emf_file if emf_file is not None else (Path(env_file) if env_file else None)
        self.stdout = stdout
        self._local = threading.local()
        self._io_lock = threading.Lock()

    # -- recording ------------------------------------------------------------------------------
    def record_result(
        self,
        result: FinalMergeResult,
        *,
        execution_id: str | None = None,
        decision: Mapping[str, Any] | None = None,
        planned_chunk_count: int | None = None,
    ) -> None:
        """Every number of one final merge under ``result.path``; ``planned_chunk_count`` (what
        the split planned) goes to metadata, where the judge checks ``ChunkCount`` against it."""
        pending = self._set(result.path, result.database.value)
        for name, value in _result_values(result).items():
            pending.add(name, value)
        unnamed = {k: v for k, v in result.lock_phases_ms.items() if phase_metric(k) is None}
        pending.note(
            execution_id=execution_id,
            batch_id=result.batch_id,
            version=result.version,
            base_version=result.base_version,
            snapshot_key=result.snapshot_key,
            replayed=result.replayed or None,
            digest=result.digest or None,
            consumed_batches=list(result.consumed_batches) or None,
            published_by=result.published_by,
            decision=dict(decision) if decision else None,
            lock_phases_ms=dict(result.lock_phases_ms) or None,
            unnamed_phases=sorted(unnamed) or None,
            planned_chunk_count=None if result.replayed else planned_chunk_count,
        )

    def record_error(
        self,
        path: MergePath,
        collection: str,
        error: BaseException,
        *,
        execution_id: str | None = None,
        batch_id: str | None = None,
        decision: Mapping[str, Any] | None = None,
    ) -> None:
        """A merge that raised: ``MergeErrors`` 1, the exception's type and text as metadata.

        ``decision`` is the flag decision the merge ran under, as a success records it, so the
        judge puts a failed execution in its switchback unit (``decision.unit``). A failure
        before any decision was made records none, so it names no unit.
        """
        pending = self._set(path, collection)
        pending.add(MetricName.MERGE_ERRORS, 1)
        pending.note(
            execution_id=execution_id,
            batch_id=batch_id,
            error_type=type(error).__name__,
            error=str(error)[:_MAX_ERROR_TEXT],
            decision=dict(decision) if decision else None,
        )

    def record_shadow(
        self,
        collection: str,
        outcome: ShadowOutcome | str,
        *,
        path: MergePath = MergePath.TWO_PHASE,
        execution_id: str | None = None,
        batch_id: str | None = None,
        candidate: FinalMergeResult | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """A shadow comparison: one of ShadowMatched/Mismatched/Skipped is 1, the others 0.

        It goes under the candidate's path (two_phase), beside the legacy blob of the same
        invocation. ``candidate`` (the dry run's result) adds its counts — ``ChunkCount``,
        ``DeltaCount``, ``RecordsMerged`` — for the judge's same-input invariant; never its
        times, which a dry run does not measure like a publish.
        """
        if outcome not in _SHADOW:
            raise ValueError(f"unknown shadow outcome {outcome!r}: expected one of {list(_SHADOW)}")
        pending = self._set(path, collection)
        for name, metric in _SHADOW.items():
            pending.add(metric, 1 if name == outcome else 0)
        if candidate is not None:
            pending.add(MetricName.CHUNK_COUNT, candidate.chunk_count)
            pending.add(MetricName.DELTA_COUNT, candidate.delta_count)
            pending.add(MetricName.RECORDS_MERGED, candidate.records_merged)
        pending.note(
            execution_id=execution_id,
            batch_id=batch_id or (candidate.batch_id if candidate else None),
            shadow_outcome=str(outcome),
            dry_run=True if candidate is not None else None,
            digest=candidate.digest if candidate is not None and candidate.digest else None,
            shadow_detail=dict(detail) if detail else None,
        )

    def record_flag_error(
        self,
        flag_key: str,
        error: BaseException | str,
        *,
        collection: str | None = None,
        path: MergePath = MergePath.LEGACY,
        execution_id: str | None = None,
    ) -> None:
        """A flag that failed to resolve (the decision fell closed to ``path``, legacy)."""
        pending = self._set(path, collection or UNKNOWN_COLLECTION)
        pending.add(MetricName.FLAG_ERRORS, 1)
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        pending.note(execution_id=execution_id, flag_key=flag_key, flag_error=text[:500])

    # -- output ---------------------------------------------------------------------------------
    def flush(self) -> list[dict[str, Any]]:
        """Write this thread's pending sets as EMF blobs (one per path and collection) and reset."""
        pending: dict[tuple[str, str], _Pending] = self._pending()
        self._local.sets = {}
        blobs = [self._serialise(path, coll, p) for (path, coll), p in pending.items() if p.values]
        if blobs:
            self._write(blobs)
        return blobs

    def discard(self) -> None:
        """Drop this thread's pending sets without writing them (tests, aborted invocations)."""
        self._local.sets = {}

    def _serialise(self, path: str, collection: str, pending: _Pending) -> dict[str, Any]:
        provider = EphemeralMetrics(namespace=self.namespace)
        # No "service" dimension from POWERTOOLS_SERVICE_NAME: MergePath and Collection only.
        provider.service = None  # type: ignore[assignment]
        provider.add_dimension(name=Dimension.MERGE_PATH.value, value=path)
        provider.add_dimension(name=Dimension.COLLECTION.value, value=collection)
        for name, value in pending.values.items():
            provider.add_metric(name=name.value, unit=name.unit.value, value=value)
        for key, value in pending.metadata.items():
            provider.add_metadata(key=key, value=value)
        provider.set_timestamp(pending.timestamp_ms)
        blob: dict[str, Any] = json.loads(json.dumps(provider.serialize_metric_set(), default=str))
        provider.clear_metrics()
        return blob

    def _write(self, blobs: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(b, separators=(",", ":")) + "\n" for b in blobs)
        with self._io_lock:
            if self.stdout and not is_metrics_disabled():
                sys.stdout.write(lines)
                sys.stdout.flush()
            if self.emf_file is not None:
                self.emf_file.parent.mkdir(parents=True, exist_ok=True)
                _append(self.emf_file, lines.encode("utf-8"))

    def _pending(self) -> dict[tuple[str, str], _Pending]:
        sets: dict[tuple[str, str], _Pending] | None = getattr(self._local, "sets", None)
        if sets is None:
            sets = {}
            self._local.sets = sets
        return sets

    def _set(self, path: MergePath | str, collection: str) -> _Pending:
        key = (MergePath(path).value, collection or UNKNOWN_COLLECTION)
        sets = self._pending()
        if key not in sets:
            sets[key] = _Pending(timestamp_ms=int(time.time() * 1000))
        return sets[key]


def _result_values(result: FinalMergeResult) -> dict[MetricName, float]:
    values: dict[MetricName, float] = {
        MetricName.LOCK_HOLD_TIME: result.lock_hold_ms,
        MetricName.LOCK_WAIT_TIME: result.lock_wait_ms,
        MetricName.LOCK_CONTENTION: result.lock_contention,
        MetricName.CAS_FAILURES: result.cas_failures,
        MetricName.CAS_RETRIES: result.cas_retries,
        MetricName.FALLBACK_TO_LEGACY: 1 if result.fallback_to_legacy else 0,
        MetricName.CHUNK_COUNT: result.chunk_count,
        MetricName.DELTA_COUNT: result.delta_count,
        MetricName.RECORDS_MERGED: result.records_merged,
        MetricName.FINAL_MERGE_DURATION: result.processing_time_seconds * 1000.0,
        MetricName.MERGE_ERRORS: 0,
        MetricName.LOST_PUBLISHES: result.lost_publishes,
        MetricName.COMPACTION_LOCK_COLLISION: result.lock_contention,
        MetricName.COMPACTION_LOCK_WAIT_TIME: result.lock_wait_ms,
    }
    for key, ms in result.lock_phases_ms.items():
        name = phase_metric(key)
        if name is not None:
            values[name] = values.get(name, 0.0) + ms
    values.update(_group_values(result))
    return values


def _group_values(result: FinalMergeResult) -> dict[MetricName, float]:
    """``CoalescedBatches``, ``WastedBuilds`` and, from the publisher, ``BatchesPerPublish``."""
    if result.replayed:
        return {MetricName.COALESCED_BATCHES: 0, MetricName.WASTED_BUILDS: 0}
    coalesced = result.published_by is not None and result.published_by != result.batch_id
    wasted = result.cas_failures if result.wasted_builds is None else result.wasted_builds
    values: dict[MetricName, float] = {
        MetricName.COALESCED_BATCHES: 1 if coalesced else 0,
        MetricName.WASTED_BUILDS: wasted,
    }
    if not coalesced:
        values[MetricName.BATCHES_PER_PUBLISH] = max(1, len(result.consumed_batches))
    return values


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` with one ``write`` on an ``O_APPEND`` descriptor: processes appending to
    the same file (the demo's workers) never interleave inside a record. A buffered file object
    promises nothing about how many writes it makes of one call (CPython passes a large one
    through whole today); a record split in two could have another process's line between."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # a regular file takes the whole write; the loop only guards short writes
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
