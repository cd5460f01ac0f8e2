"""The router: runs the path a decision names, and in shadow mode compares the two.

``legacy`` and ``two_phase`` run their path. ``shadow`` runs legacy, which publishes, then the
two-phase merge as a dry run on exactly the same base and intermediates (it never publishes:
only a candidate that writes nothing may be run beside the real one), compares the two results by
content digest, and reports matched / mismatched / skipped. A shadow that would not finish within
the Lambda's remaining time is skipped and counted, never failed.

The paths are injected (the router may not import ``legacy``): any objects with the
``FinalMerger`` / ``DryRunner`` shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rollout import shadow
from rollout.metric_names import ShadowOutcome
from snapmerge.domain import FinalMergeRequest, FinalMergeResult, MergePath
from snapmerge.errors import InvalidEventError
from snapmerge.ports import DryRunner, FinalMerger


@dataclass(frozen=True)
class Routed:
    result: FinalMergeResult
    shadow: ShadowOutcome | None = None
    shadow_result: FinalMergeResult | None = None
    shadow_reason: str | None = None


class MetricsSink(Protocol):
    """What the router reports to (``rollout.metrics.MergeMetrics`` in production)."""

    def record_result(
        self,
        result: FinalMergeResult,
        *,
        execution_id: str | None,
        decision: Mapping[str, Any],
        planned_chunk_count: int | None = None,
    ) -> None: ...

    def record_error(
        self,
        path: MergePath,
        collection: str,
        error: BaseException,
        *,
        execution_id: str | None,
        batch_id: str | None,
        decision: Mapping[str, Any] | None = None,
    ) -> None: ...

    def record_shadow(
        self,
        collection: str,
        outcome: str,
        *,
        execution_id: str | None,
        batch_id: str | None,
        candidate: FinalMergeResult | None,
        detail: Mapping[str, Any] | None,
    ) -> None: ...


class Router:
    def __init__(
        self,
        paths: Mapping[MergePath, FinalMerger],
        candidate: DryRunner,
        metrics: MetricsSink,
        *,
        cleanup: Callable[[FinalMergeRequest], None],
        shadow_budget_ms: int = 60_000,
    ) -> None:
        self.paths = paths
        self.candidate = candidate
        self.metrics = metrics
        self.cleanup = cleanup
        self.shadow_budget_ms = shadow_budget_ms

    def run(
        self,
        request: FinalMergeRequest,
        path: MergePath,
        *,
        decision: Mapping[str, Any],
        remaining_ms: Callable[[], int] | None = None,
    ) -> Routed:
        runner = MergePath.LEGACY if path is MergePath.SHADOW else path
        merger = self.paths.get(runner)
        if merger is None:
            raise InvalidEventError(f"no implementation registered for path {runner}")
        try:
            result = merger.run(request, defer_cleanup=path is MergePath.SHADOW)
        except BaseException as exc:
            self.metrics.record_error(
                runner,
                request.collection,
                exc,
                execution_id=request.execution_id,
                batch_id=request.batch_id,
                decision=decision,  # as a success records it: the judge finds its unit
            )
            raise
        self.metrics.record_result(
            result,
            execution_id=request.execution_id,
            decision=decision,
            planned_chunk_count=request.planned_chunk_count,
        )
        if path is not MergePath.SHADOW:
            return Routed(result)
        try:
            return self._shadow(request, result, remaining_ms)
        finally:
            self.cleanup(request)

    def _shadow(
        self,
        request: FinalMergeRequest,
        published: FinalMergeResult,
        remaining_ms: Callable[[], int] | None,
    ) -> Routed:
        def skipped(reason: str) -> Routed:
            self._report(request, ShadowOutcome.SKIPPED, None, reason)
            return Routed(published, ShadowOutcome.SKIPPED, None, reason)

        remaining = remaining_ms() if remaining_ms is not None else None
        reason = shadow.skip_reason(published, remaining, self.shadow_budget_ms)
        if reason is not None:
            return skipped(reason)
        try:
            candidate = self.candidate.dry_run(request, published.base_version)
        except Exception as exc:  # the candidate failing is a finding, not a failed merge
            failure = f"candidate raised: {exc!r}"
            self._report(request, ShadowOutcome.MISMATCHED, None, failure)
            return Routed(published, ShadowOutcome.MISMATCHED, None, failure)
        outcome, reason = shadow.compare(published, candidate)
        self._report(request, outcome, candidate, reason)
        return Routed(published, outcome, candidate, reason)

    def _report(
        self,
        request: FinalMergeRequest,
        outcome: ShadowOutcome,
        candidate: FinalMergeResult | None,
        reason: str | None,
    ) -> None:
        self.metrics.record_shadow(
            request.collection,
            outcome.value,
            execution_id=request.execution_id,
            batch_id=request.batch_id,
            candidate=candidate,
            detail={"reason": reason} if reason else None,
        )
