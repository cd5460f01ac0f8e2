"""Scripted interleavings: which worker waits for, signals, or does what at which step.

The random histories leave the order of events to the scheduler; the issue-10 scenarios need one
exact order (a retry only after six later publishes, a duplicate that passes its replay check
before the original publishes). A :class:`Script` names events and attaches, to a (worker, step)
pair, a list of operations — signal an event, wait for one, do something to the bucket — run in
the order given, the first time the worker passes that step. Steps are the merge's hook steps
(``after_fetch`` … ``after_receipt``) plus the runner's own:

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


@dataclass(frozen=True)
class Op:
    kind: str  # "signal" | "wait" | "do"
    name: str = ""
    action: Action | None = None


def signal(name: str) -> Op:
    return Op("signal", name)


def wait(name: str) -> Op:
    return Op("wait", name)


def do(action: Action) -> Op:
    return Op("do", getattr(action, "__name__", "action"), action)


@dataclass
class Script:
    timeout_s: float = 20.0
    cues: dict[tuple[int, str], tuple[Op, ...]] = field(default_factory=dict)
    passed: set[tuple[int, str]] = field(default_factory=set)
    timed_out: list[str] = field(default_factory=list)
    blobs: BlobStore | None = None  # the bucket, set by the runner before the workers start
    _events: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, worker: int, step: str, *ops: Op) -> Script:
        self.cues[(worker, step)] = self.cues.get((worker, step), ()) + ops
        return self

    def event(self, name: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(name, threading.Event())

    def step(self, worker: int, step: str) -> None:
        with self._lock:
            first = (worker, step) not in self.passed
            self.passed.add((worker, step))
        if not first:
            return
        for op in self.cues.get((worker, step), ()):
            if op.kind == "signal":
                self.event(op.name).set()
            elif op.kind == "wait" and not self.event(op.name).wait(self.timeout_s):
                self.timed_out.append(f"worker {worker} at {step} waited for {op.name!r} in vain")
            elif op.action is not None:
                assert self.blobs is not None, "the runner sets the bucket before any step"
                op.action(self.blobs)

    def release_all(self) -> None:
        """Set every event (after a run) so no straggler thread waits out its timeout."""
        with self._lock:
            events = list(self._events.values())
        for event in events:
            event.set()
