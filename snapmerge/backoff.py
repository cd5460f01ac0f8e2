"""How long a waiter sleeps between tries of a busy lock (:class:`Backoff`).

:meth:`~snapmerge.lock.LeaseLock.acquire` retries a busy lock with these delays until its
deadline, and a failing table only ``error_attempts`` times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """Delays between acquire attempts: exponential from ``base`` to ``cap``, "equal jitter".

    Half of each delay is fixed and half random, so waiters spread out but never hammer the
    table with near-zero sleeps. ``error_attempts`` bounds the tries on a failing table.

    The cap is short on purpose. A busy try is one consistent read of the row, and what a waiter
    waits for is often short (a two-phase phase lock) or ends at an unknown moment (a legacy
    merge). With a cap of seconds, a waiter that had backed off slept up to that long past the
    release while fresh arrivals, still at their first short delays, took the lock before it
    (measured in the demo: two-phase phase-1 waits of several seconds behind 1.5 s legacy holds).
    """

    base: timedelta = timedelta(milliseconds=50)
    cap: timedelta = timedelta(milliseconds=400)
    error_attempts: int = 2

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to sleep before attempt ``attempt + 1``."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** min(attempt, 32))
        return rng.uniform(ceiling / 2, ceiling)


# A two-phase phase lock waits for the same holders as legacy (often a legacy merge, seconds)
# but holds for milliseconds once granted: polling past a release by up to the default 400 ms
# cost it more than its whole hold, twice per execution. It polls at most every 100 ms.
PHASE_BACKOFF = Backoff(base=timedelta(milliseconds=25), cap=timedelta(milliseconds=100))


def phase_backoff(lock: Backoff) -> Backoff:
    """The delays of a phase lock taken with a lock whose own backoff is ``lock``: those of
    :data:`PHASE_BACKOFF`, never slower than the lock's, and the lock's ``error_attempts`` (a
    failing table fails a phase lock as often as any other)."""
    return Backoff(
        base=min(PHASE_BACKOFF.base, lock.base),
        cap=min(PHASE_BACKOFF.cap, lock.cap),
        error_attempts=lock.error_attempts,
    )
