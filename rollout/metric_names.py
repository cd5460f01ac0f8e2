"""Every metric name, unit and dimension snapmerge emits (DESIGN §5), in one place.

The dashboards, alarms, the judge's guardrails and the report all refer to these names; a bare
string anywhere else is a name that can drift. Per-phase lock times are named
``LockHoldTime<Phase>`` / ``LockWaitTime<Phase>`` after the keys of
:attr:`snapmerge.domain.FinalMergeResult.lock_phases_ms` (see :func:`phase_metric`):

====================  ==========================================================================
key in lock_phases_ms  metric
====================  ==========================================================================
``phase1``             ``LockHoldTimePhase1`` — two-phase: read the pointer under a short lock
``phase3``             ``LockHoldTimePhase3`` — two-phase: the conditional pointer swap
``fallback``           ``LockHoldTimeFallback`` — two-phase after its CAS bound: lock across merge
``merge``              ``LockHoldTimeMerge`` — legacy: the one long hold
``<key>_wait``         ``LockWaitTime<Key>`` — the wait before that phase's grant
====================  ==========================================================================

``LockHoldTime`` and ``LockWaitTime`` are always the totals over every phase.
"""

from __future__ import annotations

import os
from enum import StrEnum

DEFAULT_NAMESPACE = "ChromaCompaction"
NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
EMF_FILE_ENV = "SNAPMERGE_EMF_FILE"


class ShadowOutcome(StrEnum):
    """What a shadow comparison found; each outcome is counted as its own metric
    (``ShadowMatched`` / ``ShadowMismatched`` / ``ShadowSkipped``)."""

    MATCHED = "matched"
    MISMATCHED = "mismatched"
    SKIPPED = "skipped"


class Dimension(StrEnum):
    """The only two dimensions: anything with higher cardinality goes to metadata."""

    MERGE_PATH = "MergePath"
    COLLECTION = "Collection"


class Unit(StrEnum):
    """The CloudWatch units we use (spelled as EMF and Powertools' ``MetricUnit`` spell them)."""

    MILLISECONDS = "Milliseconds"
    COUNT = "Count"


class MetricName(StrEnum):
    """Every metric snapmerge emits; units in ``UNITS``, per-phase lock names by
    :func:`phase_metric`."""

    LOCK_HOLD_TIME = "LockHoldTime"
    LOCK_HOLD_TIME_PHASE1 = "LockHoldTimePhase1"
    LOCK_HOLD_TIME_PHASE3 = "LockHoldTimePhase3"
    LOCK_HOLD_TIME_FALLBACK = "LockHoldTimeFallback"
    LOCK_HOLD_TIME_MERGE = "LockHoldTimeMerge"
    LOCK_WAIT_TIME = "LockWaitTime"
    LOCK_WAIT_TIME_PHASE1 = "LockWaitTimePhase1"
    LOCK_WAIT_TIME_PHASE3 = "LockWaitTimePhase3"
    LOCK_WAIT_TIME_FALLBACK = "LockWaitTimeFallback"
    LOCK_WAIT_TIME_MERGE = "LockWaitTimeMerge"
    LOCK_CONTENTION = "LockContention"
    CAS_FAILURES = "CASFailures"
    CAS_RETRIES = "CASRetries"
    FALLBACK_TO_LEGACY = "FallbackToLegacy"
    CHUNK_COUNT = "ChunkCount"
    DELTA_COUNT = "DeltaCount"
    RECORDS_MERGED = "RecordsMerged"
    FINAL_MERGE_DURATION = "FinalMergeDuration"
    MERGE_ERRORS = "MergeErrors"
    SHADOW_MATCHED = "ShadowMatched"
    SHADOW_MISMATCHED = "ShadowMismatched"
    SHADOW_SKIPPED = "ShadowSkipped"
    FLAG_ERRORS = "FlagErrors"
    # Group commit (issue 12); see rollout/metrics.py for when each is emitted.
    BATCHES_PER_PUBLISH = "BatchesPerPublish"
    COALESCED_BATCHES = "CoalescedBatches"
    WASTED_BUILDS = "WastedBuilds"
    # Earlier publishes that the lineage check after this merge found overwritten by a writer
    # outside the CAS (docs/compatibility.md, "Lineage check and repair"); alarmed in infra.
    LOST_PUBLISHES = "LostPublishes"
    # Kept from the original pipeline so its dashboards keep working. Its CompactionLockDuration
    # measured acquisition latency, not hold time, and is not kept: LockWaitTime says it plainly.
    COMPACTION_LOCK_COLLISION = "CompactionLockCollision"
    COMPACTION_LOCK_WAIT_TIME = "CompactionLockWaitTime"

    @property
    def unit(self) -> Unit:
        return UNITS[self]


_TIMES = {
    MetricName.LOCK_HOLD_TIME,
    MetricName.LOCK_HOLD_TIME_PHASE1,
    MetricName.LOCK_HOLD_TIME_PHASE3,
    MetricName.LOCK_HOLD_TIME_FALLBACK,
    MetricName.LOCK_HOLD_TIME_MERGE,
    MetricName.LOCK_WAIT_TIME,
    MetricName.LOCK_WAIT_TIME_PHASE1,
    MetricName.LOCK_WAIT_TIME_PHASE3,
    MetricName.LOCK_WAIT_TIME_FALLBACK,
    MetricName.LOCK_WAIT_TIME_MERGE,
    MetricName.FINAL_MERGE_DURATION,
    MetricName.COMPACTION_LOCK_WAIT_TIME,
}

UNITS: dict[MetricName, Unit] = {
    name: Unit.MILLISECONDS if name in _TIMES else Unit.COUNT for name in MetricName
}

_PHASES = {"phase1": "Phase1", "phase3": "Phase3", "fallback": "Fallback", "merge": "Merge"}


def phase_metric(key: str) -> MetricName | None:
    """The metric for one ``lock_phases_ms`` key, or None for a key we have no name for.

    ``"phase1"`` → ``LockHoldTimePhase1``; ``"phase1_wait"`` → ``LockWaitTimePhase1``. Case and
    ``-``/``_`` separators are ignored (``"Phase_1"`` works too).
    """
    norm = key.strip().lower().replace("-", "").replace("_", "")
    stem, kind = (norm[: -len("wait")], "LockWaitTime") if norm.endswith("wait") else (norm, "")
    suffix = _PHASES.get(stem)
    if suffix is None:
        return None
    return MetricName(f"{kind or 'LockHoldTime'}{suffix}")


def default_namespace() -> str:
    """``POWERTOOLS_METRICS_NAMESPACE`` when set (Powertools' variable), else ChromaCompaction."""
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
