"""What the judge reads from a stage's records: per-metric arrays of each side (:class:`Samples`).

:func:`collect` splits one window's :class:`~rollout.sources.MetricRecord` s by path (the
candidate, the baseline) and keeps the previous stage's apart as the reference. Replayed results
are left out everywhere. Shadow dry runs carry the shadow outcome and counts, never times
(``rollout.metrics``), so they count only for the shadow and invariant guardrails; they are
not candidate executions, nor among the clean ones (no CAS failure, no fallback, not carried by
another's publish) that a latency budget is judged on.

Under a switchback flag (docs/flags.md) every execution's decision names its **unit** (a
collection and time window that all took one path). Executions of one unit are not independent
(they share the unit's lock, its builds and its load), so the latency comparisons with the
baseline are made over units: :func:`by_unit` gives each unit one value, the geometric mean of
its executions' ``1 + ms`` less 1. That happens for a metric only when every execution of the
window that records it, on both sides, names its unit. A unit named on both sides (a stage
promoted mid-window) is left out of both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollout.metric_names import MetricName
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath

Floats = np.ndarray[Any, np.dtype[np.float64]]
PLANNED_CHUNKS_KEY = "planned_chunk_count"  # metadata: the chunk count the split planned


@dataclass(frozen=True)
class Samples:
    """Per-metric arrays of each side; ``checks`` pairs (expected, got) per invariant metric."""

    candidate: Mapping[str, Floats]
    baseline: Mapping[str, Floats]
    reference: Mapping[str, Floats] | None = None
    pairs: Mapping[str, Sequence[tuple[float, float]] | Floats] = field(default_factory=dict)
    n_candidate: int = 0  # candidate executions in the window (dry runs excluded)
    clean: Mapping[str, Floats] = field(default_factory=dict)  # no CAS failure, no fallback
    reference_clean: Mapping[str, Floats] = field(default_factory=dict)
    n_baseline: int = 0  # legacy executions in the window
    reference_baseline: Mapping[str, Floats] | None = None  # the previous stage's legacy
    # invariant metrics some record of the window carries an expected value for (planned counts)
    planned_metrics: frozenset[str] = frozenset()
    # the two-phase percentage the flag routed in this window (the controller knows it from the
    # plan); None: inferred from the window's shares
    routed_percent: float | None = None
    # one value per unit and metric (:func:`by_unit`) when every execution of the window on both
    # sides names its switchback unit; empty otherwise
    unit_candidate: Mapping[str, Floats] = field(default_factory=dict)
    unit_baseline: Mapping[str, Floats] = field(default_factory=dict)
    # units named on both sides (a stage promoted mid-window): left out of both unit arrays
    mixed_units: frozenset[str] = frozenset()


def _by_metric(records: Sequence[MetricRecord]) -> dict[str, Floats]:
    out: dict[str, list[float]] = {}
    for rec in records:
        for name, value in rec.values.items():
            out.setdefault(name, []).append(value)
    return {name: np.asarray(vals, dtype=np.float64) for name, vals in out.items()}


def unit_of(rec: MetricRecord) -> str | None:
    """The switchback unit the execution's decision names (``metadata.decision.unit``), if any."""
    decision = rec.metadata.get("decision")
    unit = decision.get("unit") if isinstance(decision, Mapping) else None
    return unit if isinstance(unit, str) and unit else None


def by_unit(records: Sequence[MetricRecord]) -> dict[str, Floats]:
    """Per metric, one value per unit: ``expm1(mean(log1p(values)))``, so that a latency test on
    ``log1p`` sees each unit's mean. A unit holding a negative or non-finite value gets that
    value, so the test still sees the broken record and refuses to pass."""
    groups: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        unit = unit_of(rec)
        assert unit is not None, "by_unit needs every record to name its unit"
        for name, value in rec.values.items():
            groups.setdefault(name, {}).setdefault(unit, []).append(value)
    out: dict[str, Floats] = {}
    for name, units in groups.items():
        values = []
        for _, vals in sorted(units.items()):
            arr = np.asarray(vals, dtype=np.float64)
            broken = arr[~np.isfinite(arr) | (arr < 0)]
            mean = float(np.expm1(np.log1p(arr).mean())) if not broken.size else float(broken[0])
            values.append(mean)
        out[name] = np.asarray(values, dtype=np.float64)
    return out


def _is_clean(rec: MetricRecord) -> bool:
    """An execution whose lock holds are its own publish's: no CAS failure and no fallback (a
    rebase adds grants), and not carried by another's publish (it took no lock to publish)."""
    values = rec.values
    cas = values.get(MetricName.CAS_FAILURES, 0.0)
    carried = values.get(MetricName.COALESCED_BATCHES, 0.0) > 0
    return cas <= 0 and values.get(MetricName.FALLBACK_TO_LEGACY, 0.0) <= 0 and not carried


def _last_by_batch(recs: Sequence[MetricRecord]) -> dict[str, MetricRecord]:
    latest: dict[str, MetricRecord] = {}
    for rec in sorted(recs, key=lambda r: r.timestamp_ms):
        batch = rec.metadata.get("batch_id")
        if batch is not None:
            latest[str(batch)] = rec
    return latest


def _checks(base: Sequence[MetricRecord], cand: Sequence[MetricRecord]) -> dict[str, list[Any]]:
    """(expected, got) per invariant: the planned chunk count of every candidate execution, and
    the legacy value beside the dry run's for every batch a shadow run saw on both paths."""
    out: dict[str, list[Any]] = {}
    for rec in cand:
        planned, got = rec.metadata.get(PLANNED_CHUNKS_KEY), rec.values.get(MetricName.CHUNK_COUNT)
        if planned is not None and got is not None and not rec.metadata.get("dry_run"):
            out.setdefault(MetricName.CHUNK_COUNT.value, []).append((float(planned), got))
    b = _last_by_batch(base)
    c = _last_by_batch([r for r in cand if r.metadata.get("dry_run")])
    for batch in sorted(b.keys() & c.keys()):
        for name in b[batch].values.keys() & c[batch].values.keys():
            out.setdefault(name, []).append((b[batch].values[name], c[batch].values[name]))
    return out


def _flag_only(rec: MetricRecord) -> bool:
    """A step's record of a flag error alone (the split's): not an execution of either path."""
    return set(rec.values) == {MetricName.FLAG_ERRORS.value}


def collect(
    records: Sequence[MetricRecord],
    *,
    reference: Sequence[MetricRecord] | None = None,
    candidate: MergePath = MergePath.TWO_PHASE,
    baseline: MergePath = MergePath.LEGACY,
) -> Samples:
    live = [r for r in records if not r.metadata.get("replayed") and not _flag_only(r)]
    cand = [r for r in live if r.path == candidate]
    base = [r for r in live if r.path == baseline]
    runs = [r for r in cand if not r.metadata.get("dry_run")]
    ref = ref_clean = ref_base = None
    if reference is not None:
        ref_base = _by_metric(
            [r for r in reference if r.path == baseline and not r.metadata.get("replayed")]
        )
        kept = [r for r in reference if r.path == candidate and not r.metadata.get("replayed")]
        ref = _by_metric(kept)
        ref_clean = _by_metric([r for r in kept if _is_clean(r) and not r.metadata.get("dry_run")])
    return Samples(
        candidate=_by_metric(cand),
        baseline=_by_metric(base),
        reference=ref,
        pairs=_checks(base, cand),
        n_candidate=len(runs),
        clean=_by_metric([r for r in runs if _is_clean(r)]),
        reference_clean=ref_clean or {},
        n_baseline=len(base),
        reference_baseline=ref_base,
        planned_metrics=frozenset(
            MetricName.CHUNK_COUNT.value for r in live if PLANNED_CHUNKS_KEY in r.metadata
        ),
        **_unit_sides(runs, base),
    )


def _unit_sides(runs: Sequence[MetricRecord], base: Sequence[MetricRecord]) -> dict[str, Any]:
    """Per side, :func:`by_unit` of each metric that every execution carrying it, on both sides,
    records with its unit (a failed merge records only ``MergeErrors``, under the decision it
    ran under, so it names its unit too when a decision was made)."""
    both = [*runs, *base]
    metrics = {name for r in both for name in r.values}
    kept = {m for m in metrics if all(unit_of(r) is not None for r in both if m in r.values)}
    # a unit on both sides took both paths at once (its executions pinned before a mid-window
    # promote beside those decided after it): not a clean unit of either arm, so of neither
    mixed = frozenset({unit_of(r) for r in runs} & {unit_of(r) for r in base} - {None})

    def side(records: Sequence[MetricRecord]) -> dict[str, Floats]:
        found = by_unit([r for r in records if unit_of(r) not in mixed | {None}])
        return {m: found.get(m, np.zeros(0)) for m in kept}  # a metric all mixed: no units

    return {"unit_candidate": side(runs), "unit_baseline": side(base), "mixed_units": mixed}
