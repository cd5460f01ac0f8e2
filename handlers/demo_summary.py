"""The demo's A/B table, computed from the raw EMF records both paths wrote."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rollout.judge import Verdict
from rollout.sources import MetricRecord
from snapmerge.domain import MergePath

PATHS = (MergePath.LEGACY, MergePath.TWO_PHASE)
LATENCIES = (
    ("lock hold (ms)", "LockHoldTime"),
    ("lock wait (ms)", "LockWaitTime"),
    ("merge duration (ms)", "FinalMergeDuration"),
)
COUNTS = (
    ("CAS failures", "CASFailures"),
    ("CAS retries", "CASRetries"),
    ("fallbacks to lock-held", "FallbackToLegacy"),
    ("merge errors", "MergeErrors"),
)
GROUP = (  # (label, metric, mean rather than sum)
    ("batches per publish (mean)", "BatchesPerPublish", True),
    ("wasted builds", "WastedBuilds", False),
    ("coalesced batches", "CoalescedBatches", False),
)


def _values(records: Sequence[MetricRecord], path: MergePath, metric: str) -> list[float]:
    return [r.values[metric] for r in records if r.path == path and metric in r.values]


def _executions(records: Sequence[MetricRecord], path: MergePath) -> list[MetricRecord]:
    """One record per final merge (shadow-only and flag-error records carry no hold time)."""
    return [r for r in records if r.path == path and "LockHoldTime" in r.values]


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.1f}"


def ab_table(records: Sequence[MetricRecord]) -> str:
    runs = {p: _executions(records, p) for p in PATHS}
    head = f"{'':<28}{'legacy':>30}{'two_phase':>30}{'legacy / two_phase':>22}"
    lines = [head, f"{'executions':<28}" + "".join(f"{len(runs[p]):>30}" for p in PATHS)]
    for label, metric in LATENCIES:
        cells, p50 = [], {}
        for p in PATHS:
            v = _values(runs[p], p, metric)
            if v:
                a = np.asarray(v)
                p50[p] = float(np.median(a))
                stats = (p50[p], float(np.percentile(a, 95)), float(a.max()))
                cells.append(" / ".join(_fmt(x) for x in stats))
            else:
                cells.append("-")
        ratio = "-"
        if len(p50) == 2 and p50[MergePath.TWO_PHASE] > 0:
            ratio = f"{p50[MergePath.LEGACY] / p50[MergePath.TWO_PHASE]:,.1f}x (p50)"
        lines.append(f"{label + ' p50/p95/max':<28}{cells[0]:>30}{cells[1]:>30}{ratio:>22}")
    for label, metric in COUNTS:
        sums = [sum(_values(runs[p], p, metric)) for p in PATHS]
        lines.append(f"{label:<28}" + "".join(f"{_fmt(s):>30}" for s in sums))
    chunks = [np.mean(_values(runs[p], p, "ChunkCount") or [0.0]) for p in PATHS]
    lines.append(f"{'chunk count (mean)':<28}" + "".join(f"{c:>30.1f}" for c in chunks))
    lines += _group_rows(runs)
    return "\n".join(lines)


def _group_rows(runs: dict[MergePath, list[MetricRecord]]) -> list[str]:
    """Group commit: batches per publish (mean over publishes) and wasted builds (a sum).

    ``-`` where no record carries the metric (EMF written before it existed).
    """
    rows = []
    for label, metric, mean in GROUP:
        cells = []
        for p in PATHS:
            v = _values(runs[p], p, metric)
            cells.append(_fmt((float(np.mean(v)) if mean else sum(v)) if v else None))
        rows.append(f"{label:<28}" + "".join(f"{c:>30}" for c in cells))
    return rows


DURATION = "FinalMergeDuration"
_NOT_PASSED = ("fail", "insufficient")


def healthy_act_outcome(ended: str, verdict: Verdict | None) -> tuple[bool, str]:
    """Whether act 1 (the healthy rollout) ended as its evidence says it should, and the line
    that tells the reader why.

    Complete at 100 % is the hoped-for end. Not promoting is also a correct end when the only
    guardrail that stopped it is FinalMergeDuration: two-phase's end-to-end duration against
    legacy's in the same window, which in this mixed workload is longer (issue 12). Any other
    guardrail stopping a healthy act is a defect the demo reports as one.
    """
    if ended == "complete":
        return True, "act 1: two_phase promoted to 100 % on the judge's verdicts"
    if verdict is None:
        return False, f"act 1 ended {ended} before any verdict"
    guardrails: dict[str, Any] = verdict.evidence.get("guardrails", {})
    stopped = sorted(
        k for k, ev in guardrails.items() if ev.get("status") in ("fail", "insufficient")
    )
    if stopped != [DURATION]:
        return False, f"act 1 ended {ended}, stopped by {', '.join(stopped) or 'no guardrail'}"
    sides = guardrails[DURATION].get("comparisons", {})
    side = sides.get("baseline", {})
    bound, allowed = side.get("upper_bound"), side.get("allowed_ratio")
    found = (
        f" (upper bound of the ratio {bound:.2f} > allowed {allowed:.2f})"
        if isinstance(bound, float) and isinstance(allowed, float)
        else ""
    )
    return True, (
        f"act 1: two_phase not promoted ({ended}): only FinalMergeDuration stopped it{found} — "
        "in this mixed workload two_phase's final merge takes longer end to end than legacy's "
        "(it waits behind legacy's holds twice; issue 12), and the judge needs evidence of no harm"
    )
