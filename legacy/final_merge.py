"""The legacy single-phase final merge: everything under the collection lock, as today.

    replay? ─► acquire ─► fetch chunks ─► merge_under_lease (read pointer ─► already published
    here? ─► download base ─► merge chunks ─► upload ─► CAS pointer) ─► release
    (the lock is held for all of it) ─► receipt, cleanup, retention

The algorithm under the lock is :func:`legacy.merge_under_lease.merge_under_lease`; this module
schedules it (replay, the lock, the receipt).

Kept faithful to the original's shape (lock hold time grows with snapshot size and chunk count)
and made safe beside a second writer: the lock is the collection's shared one by default, the
pointer write is conditional, an expired holder cannot publish, and a lost CAS rebases instead of
skipping (which would lose the batch).
"""

from __future__ import annotations

import time
from dataclasses import replace

from legacy.merge_under_lease import merge_under_lease
from snapmerge.built import BuiltVersion, make_result
from snapmerge.domain import FinalMergeRequest, FinalMergeResult, MergePath
from snapmerge.exactly_once import Replay, receipt_payload
from snapmerge.lock import Lease
from snapmerge.lock_meter import LockMeter
from snapmerge.merging import MergeKit

DEFAULT_MAX_REBASES = 3


class LegacyFinalMerge:
    """``run(request)`` publishes; it has no dry run (in shadow mode legacy is the publisher)."""

    path = MergePath.LEGACY

    def __init__(self, kit: MergeKit, *, max_rebases: int = DEFAULT_MAX_REBASES) -> None:
        self.kit = kit
        self.max_rebases = max_rebases

    def run(self, request: FinalMergeRequest, *, defer_cleanup: bool = False) -> FinalMergeResult:
        early = self.kit.replay(request)
        if early is not None:
            return self.kit.finish_replay(request, early, cleanup=not defer_cleanup)
        started = time.monotonic()
        meter = LockMeter()
        lease = self.kit.acquire(request)
        try:
            # a shadowed run (defer_cleanup) needs the content digest the candidate is held to
            outcome, cas_failures = self._merge_and_publish(request, lease, digest=defer_cleanup)
            # The original released right after the swap; the receipt, the clean-up and
            # retention follow outside the lock, so the hold reported is the hold there was.
            meter.release(lease, "merge")
            if isinstance(outcome, Replay):
                return self.kit.finish_replay(request, outcome, cleanup=not defer_cleanup)
            stats = meter.stats(cas_failures, fallback=False)
            result = make_result(request, outcome, self.path, started=started, lease_stats=stats)
            receipt = receipt_payload(outcome.manifest, request)
            lost = self.kit.finish(request, result, cleanup=not defer_cleanup, receipt=receipt)
            return replace(result, lost_publishes=lost)
        finally:
            lease.release()

    def _merge_and_publish(
        self, request: FinalMergeRequest, lease: Lease, *, digest: bool
    ) -> tuple[BuiltVersion | Replay, int]:
        with self.kit.span("single_phase"), self.kit.workspace() as work:
            got = self.kit.fetch_inputs(request, work / "sources")
            if isinstance(got, Replay):  # a duplicate run finished while we waited
                return got, 0
            sources, inputs = got
            return merge_under_lease(
                self.kit,
                request,
                lease,
                sources,
                self.path,
                work,
                inputs=inputs,
                max_rebases=self.max_rebases,
                digest=digest,
            )
