"""Where the demo's executions run: each in a warm worker process of its own, as Lambdas run.

A Lambda execution environment is a process with its own ``/tmp`` and its own CPU share; it does
not share an interpreter with the other executions. Run as threads of the demo's one process, the
executions shared one GIL with each other and with the embedded server, so every download one
path repeats and every poll it makes was paid for by the other path's executions too, and the
merge durations the judge compared were the interpreter's. The pool here is spawned once and kept
for the whole demo (warm Lambdas). Each worker builds its app from the environment the demo set,
with ``CHROMA_ROOT`` its own directory, appends its EMF records to the demo's file, reads the
flags from the demo's flag file, and sees act 2's injected regression through a file whose
presence switches it on.

``Executions(threads=True)`` keeps the former way (every execution a thread of the demo's
process) for side-by-side comparison.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flags.client import bootstrap as flags_bootstrap
from flags.client import reset as flags_reset
from flags.stores import FileStore
from handlers import bootstrap
from handlers.local import run_execution
from rollout.metrics import MergeMetrics
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.config import Settings

START_TIMEOUT_S = 600.0  # spawning workers that import chromadb on a loaded machine
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class WorkerFiles:
    """What a worker needs to know of the demo: plain paths, so it crosses a process boundary."""

    chroma: Path  # each worker works under chroma/worker-<pid>
    flags: Path
    emf: Path
    regression: Path  # present while act 2's regression is switched on
    regression_ms: int


class Regression:
    """The injected bug: two-phase holds its phase-3 lock far longer than it should, while the
    switch file exists (one ``stat`` per publish)."""

    def __init__(self, switch: Path, delay_ms: int) -> None:
        self.switch, self.delay_ms = switch, delay_ms

    def on(self) -> None:
        self.switch.touch()

    def off(self) -> None:
        self.switch.unlink(missing_ok=True)

    def is_on(self) -> bool:
        return self.switch.exists()

    def __call__(self, step: str) -> None:
        if step == "before_swap" and self.switch.exists():
            time.sleep(self.delay_ms / 1000)


def build_app(files: WorkerFiles, chroma_root: Path) -> bootstrap.App:
    """The app an execution uses: the real adapters, the demo's flags, EMF file and regression."""
    os.environ["CHROMA_ROOT"] = str(chroma_root)
    chroma_root.mkdir(parents=True, exist_ok=True)
    flags_reset()
    return bootstrap.build(
        Settings.from_env(),
        flags=flags_bootstrap(FileStore(files.flags)),
        metrics=MergeMetrics(emf_file=files.emf, stdout=False),
        two_phase_hooks=Regression(files.regression, files.regression_ms),
    )


def execute(event: dict[str, Any]) -> str | None:
    """One workflow execution, redriven once if it fails (as an operator would). Returns None when
    it succeeded, else the last error."""
    for attempt in range(2):
        try:
            run_execution(dict(event), parallel=2)
            return None
        except Exception as exc:
            if attempt == 1:
                return f"{type(exc).__name__}: {exc}"
    raise AssertionError("unreachable")


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


def _exit_with(parent: int) -> None:
    """A worker outlives nothing: when the demo's process is gone (killed, even with SIGKILL),
    the worker exits instead of waiting on its task queue for ever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def _start_worker(files: WorkerFiles, parent: int) -> None:
    """A worker process's cold start: its app, and one ChromaDB client opened and closed so the
    first execution it runs does not pay for loading ChromaDB."""
    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="parent").start()
    logging.getLogger("snapmerge").setLevel(logging.WARNING)
    app = build_app(files, files.chroma / f"worker-{os.getpid()}")
    bootstrap.install(app)
    synth.warm(ChromaIndex(), app.settings.chroma_root)
    bootstrap.freeze_startup_heap()


def _all_started(barrier: _Barrier) -> int:
    barrier.wait(START_TIMEOUT_S)
    return os.getpid()


class Executions:
    """Runs the demo's executions ``concurrency`` at a time: in warm workers, or as threads."""

    def __init__(self, files: WorkerFiles, concurrency: int, *, threads: bool = False) -> None:
        self.concurrency, self.threads = concurrency, threads
        self.files = files
        self.pids: list[int] = []  # the worker processes (none for threads)
        self.restarts = 0  # pools replaced after a worker died
        self._pool: ProcessPoolExecutor | ThreadPoolExecutor
        if threads:
            self._pool = ThreadPoolExecutor(concurrency)
            return
        self._start()

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of the threaded embedded server
        self._pool = ProcessPoolExecutor(
            self.concurrency,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.files, os.getpid()),
        )
        try:
            with context.Manager() as manager:  # start every worker before a wave is timed
                barrier = manager.Barrier(self.concurrency)
                pids = [self._pool.submit(_all_started, barrier) for _ in range(self.concurrency)]
                self.pids = sorted({f.result(timeout=START_TIMEOUT_S) for f in pids})
            if len(self.pids) != self.concurrency:
                raise RuntimeError(
                    f"{self.concurrency} workers asked for, {len(self.pids)} started"
                )
        except BaseException:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise

    def _restart(self) -> None:
        """A worker died (killed, out of memory, a crash in native code): a process pool with a
        dead worker runs nothing more, so the demo gets fresh warm workers, as Lambda starts a
        new execution environment after one crashed."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.restarts += 1
        self._start()

    def submit(self, event: dict[str, Any]) -> Future[str | None]:
        return self._pool.submit(execute, event)

    def map_done(
        self, events: list[dict[str, Any]], done: Callable[[int, str | None], None]
    ) -> None:
        """Run every event, calling ``done(index, error)`` once for each as it finishes.

        A worker that dies takes the pool with it: every execution not finished by then (the
        dead worker's, and those running or queued in the others) is redriven once in fresh
        workers, as an operator redrives a failed execution; a second death is its failure.
        """
        pending = dict(enumerate(events))
        for attempt in range(2):
            futures = self._submit_all(pending)
            crashed = False
            for future in as_completed(futures):
                index = futures[future]
                try:
                    error = future.result()
                except BrokenProcessPool as exc:
                    crashed = True
                    if attempt == 0:
                        continue  # redriven below, in fresh workers
                    error = f"{type(exc).__name__}: {exc}"
                del pending[index]
                done(index, error)
            if not crashed:
                return
            self._restart()

    def _submit_all(self, pending: dict[int, dict[str, Any]]) -> dict[Future[str | None], int]:
        try:
            return {self.submit(pending[i]): i for i in sorted(pending)}
        except BrokenProcessPool:  # a worker died between waves
            self._restart()
            return {self.submit(pending[i]): i for i in sorted(pending)}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Executions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
