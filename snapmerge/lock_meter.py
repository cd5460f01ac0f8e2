"""The lock figures of one final merge, kept the same way by both paths.

Every lease a run takes is released through :meth:`LockMeter.release` under a phase key, which
records the hold as ``<phase>`` and the wait before the grant as ``<phase>_wait`` in
``lock_phases_ms``; ``lock_hold_ms`` / ``lock_wait_ms`` are the totals over every phase. The keys
are the ones the metric map names (``rollout/metric_names.py``, ``phase_metric``):

* two-phase: ``phase1`` and ``phase3`` (each may repeat on a rebase; summed), ``fallback``
* legacy: ``merge`` (the one long hold)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snapmerge.lock import Lease

if TYPE_CHECKING:
    from snapmerge.domain import FinalMergeRequest
    from snapmerge.merging import MergeKit

WAIT_SUFFIX = "_wait"


def wait_key(phase: str) -> str:
    """The ``lock_phases_ms`` key of the wait before ``phase``'s grant."""
    return f"{phase}{WAIT_SUFFIX}"


@dataclass
class LockMeter:
    """Lock figures summed over every lease a run takes, per phase and in total."""

    wait_ms: float = 0.0
    hold_ms: float = 0.0
    contention: int = 0
    phases_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def held(self, kit: MergeKit, request: FinalMergeRequest, phase: str) -> Iterator[Lease]:
        """The collection lock for one two-phase phase, released and recorded on exit."""
        with kit.span(phase):
            # Phases 1 and 3 take a short lease, so a holder killed inside one blocks the
            # collection for seconds; the fallback holds the lock across a whole merge.
            short = None if phase == "fallback" else kit.settings.phase_lease
            lease = kit.acquire(request, duration=short)  # waits up to lock_wait_timeout if busy
            try:
                yield lease
            finally:
                self.release(lease, phase)

    def release(self, lease: Lease, phase: str) -> float:
        """Release ``lease`` (idempotent) and record its hold and wait under ``phase``; the hold."""
        hold = lease.release()
        self.wait_ms += lease.wait_ms
        self.hold_ms += hold
        self.contention += lease.contention
        self._add(phase, hold)
        self._add(wait_key(phase), lease.wait_ms)
        return hold

    def _add(self, key: str, ms: float) -> None:
        self.phases_ms[key] = self.phases_ms.get(key, 0.0) + ms

    def stats(self, cas_failures: int, fallback: bool) -> dict[str, Any]:
        """The lock fields of a :class:`~snapmerge.domain.FinalMergeResult`."""
        return {
            "lock_wait_ms": self.wait_ms,
            "lock_hold_ms": self.hold_ms,
            "lock_phases_ms": dict(self.phases_ms),
            "lock_contention": self.contention,
            "cas_failures": cas_failures,
            "cas_retries": cas_failures,  # every refusal is followed by one more attempt
            "fallback_to_legacy": fallback,
        }
