"""Scripted interleavings: which worker waits for, signals, or does what at which step.

The random histories leave the order of events to the scheduler; the issue-10 scenarios need one
exact order (a retry only after six later publishes, a duplicate that passes its replay check
before the original publishes). A :class:`Script` names events and attaches, to a (worker, step)
pair, events to signal, actions to run, and events to wait for — in that order, the first time
the worker passes that step. Steps are the merge's hook steps (``after_fetch`` … ``after_receipt``)
plus the runner's own:

* ``start`` — before a worker's first attempt of its first batch;
* ``acquire`` — before the worker's first lease acquisition (after the replay check on both paths);
* ``retry`` — before a worker's second attempt;
* ``done`` — after the worker's last batch returned (or ran out of attempts).

A wait that times out is recorded in ``timed_out`` and the worker goes on, so a scenario whose
order the code under test prevents fails its "the interleaving happened" assertion instead of
hanging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from snapmerge.ports import BlobStore

Action = Callable[[BlobStore], None]
"""Something a scenario does to the bucket at a step (delete the pointer, say)."""


@dataclass
class _Cue:
    signal: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    wait: tuple[str, ...] = ()


@dataclass
class Script:
    timeout_s: float = 20.0
    cues: dict[tuple[int, str], _Cue] = field(default_factory=dict)
    passed: set[tuple[int, str]] = field(default_factory=set)
    timed_out: list[str] = field(default_factory=list)
    blobs: BlobStore | None = None  # the bucket, set by the runner before the workers start
    _events: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def at(
        self,
        worker: int,
        step: str,
        *,
        signal: tuple[str, ...] = (),
        do: tuple[Action, ...] = (),
        wait: tuple[str, ...] = (),
    ) -> Script:
        cue = self.cues.get((worker, step), _Cue())
        self.cues[(worker, step)] = _Cue(cue.signal + signal, cue.actions + do, cue.wait + wait)
        return self

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def step(self, worker: int, step: str) -> None:
        with self._lock:
            first = (worker, step) not in self.passed
            self.passed.add((worker, step))
        cue = self.cues.get((worker, step))
        if cue is None or not first:
            return
        for name in cue.signal:
            self.event(name).set()
        for action in cue.actions:
            assert self.blobs is not None, "the runner sets the bucket before any step"
            action(self.blobs)
        for name in cue.wait:
            if not self.event(name).wait(self.timeout_s):
                self.timed_out.append(f"worker {worker} at {step} waited for {name!r} in vain")

    def release_all(self) -> None:
        """Set every event (after a run) so no straggler thread waits out its timeout."""
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()
