"""The legacy single-phase final merge: everything under the collection lock, as today.

    acquire ─► read pointer ─► download base ─► merge chunks ─► upload ─► CAS pointer ─► receipt,
    cleanup, retention ─► release                       (the lock is held for all of it)

Kept faithful to the original's shape (lock hold time grows with snapshot size and chunk count)
and made safe beside a second writer: the lock is the collection's shared one by default, the
pointer write is conditional, an expired holder cannot publish, and a lost CAS rebases instead of
skipping (which would lose the batch).
"""

from __future__ import annotations

import time

from snapmerge.domain import FinalMergeRequest, FinalMergeResult, Keys, MergePath
from snapmerge.errors import PointerConflictError
from snapmerge.lock import Lease
from snapmerge.merging import BuiltVersion, MergeKit, make_result

DEFAULT_MAX_REBASES = 3


class LegacyFinalMerge:
    """``run(request)`` publishes; it has no dry run (in shadow mode legacy is the publisher)."""

    path = MergePath.LEGACY

    def __init__(self, kit: MergeKit, *, max_rebases: int = DEFAULT_MAX_REBASES) -> None:
        self.kit = kit
        self.max_rebases = max_rebases

    def run(self, request: FinalMergeRequest, *, defer_cleanup: bool = False) -> FinalMergeResult:
        replayed = self.kit.replay(request)
        if replayed is not None:
            return replayed
        started = time.monotonic()
        lease = self.kit.acquire(request)
        try:
            built, cas_failures = self._merge_and_publish(request, lease)
            hold_ms = lease.hold_ms
            result = make_result(
                request,
                built,
                self.path,
                started=started,
                lease_stats={
                    "lock_wait_ms": lease.wait_ms,
                    "lock_hold_ms": hold_ms,
                    "lock_phases_ms": {"single": hold_ms},
                    "lock_contention": lease.contention,
                    "cas_failures": cas_failures,
                    "cas_retries": cas_failures,
                },
            )
            self.kit.finish(request, result, cleanup=not defer_cleanup)
            return result
        finally:
            lease.release()

    def _merge_and_publish(
        self, request: FinalMergeRequest, lease: Lease
    ) -> tuple[BuiltVersion, int]:
        db = request.database
        store = self.kit.store(db)
        with self.kit.workspace() as work:
            sources = self.kit.fetch_sources(request, work / "sources")
            failures = 0
            for attempt in range(self.max_rebases + 1):
                lease.check()
                base = store.read_pointer()
                with self.kit.pin_base(db, base):
                    built = self.kit.build(request, base, sources, self.path, work / f"v{attempt}")
                    lease.check()
                    self.kit.upload(db, built)
                    try:
                        self.kit.publish(db, built, lease)
                    except PointerConflictError:
                        # Somebody published without our lock (a per-batch lock id, or a stale
                        # holder racing its expiry). Never skip: rebase onto the new pointer.
                        self.kit.discard(db, built.version)
                        failures += 1
                        continue
                    except BaseException:
                        self.kit.discard(db, built.version)
                        raise
                return built, failures
        raise PointerConflictError(
            Keys.pointer(db), expected=None, current=f"moved on each of {failures} rebases"
        )
