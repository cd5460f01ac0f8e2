"""What a shadow run does and what it compares, as pure decisions (no I/O).

In shadow mode legacy publishes and the two-phase path dry-runs the same inputs on the base
legacy published on (:meth:`rollout.router.Router.route`). Two decisions are made there:

- **run the candidate at all?** Not when legacy replayed an earlier publish (the inputs are gone)
  nor when less Lambda time is left than the shadow budget.
- **same result?** The candidate's content digest and record count against legacy's.
"""

from __future__ import annotations

from rollout.metric_names import ShadowOutcome
from snapmerge.domain import FinalMergeResult


def skip_reason(
    published: FinalMergeResult, remaining_ms: int | None, budget_ms: int
) -> str | None:
    """Why the candidate is not run on ``published``'s inputs, or None to run it."""
    if published.replayed:
        return "legacy replayed an earlier publish; its inputs are gone"
    if remaining_ms is not None and remaining_ms < budget_ms:
        return f"less than {budget_ms} ms of Lambda time left"
    return None


def compare(
    published: FinalMergeResult, candidate: FinalMergeResult
) -> tuple[ShadowOutcome, str | None]:
    """Matched when the candidate holds the same content (digest) and as many records."""
    if candidate.digest != published.digest:
        reason = f"digest {candidate.digest[:12]} != {published.digest[:12]}"
        return ShadowOutcome.MISMATCHED, reason
    if candidate.total_embeddings != published.total_embeddings:
        return (
            ShadowOutcome.MISMATCHED,
            f"records {candidate.total_embeddings} != {published.total_embeddings}",
        )
    return ShadowOutcome.MATCHED, None
