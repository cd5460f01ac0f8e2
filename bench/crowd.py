"""Start a crowd of final merges together, one process each (as Lambdas are), and gather them.

Each execution builds its own adapters from plain names (so it can run in a spawned process),
wraps them with :mod:`bench.recording`, says it is ready, waits for the common start, runs its
path and returns an :class:`Outcome`: its result or error, when it finished, and what it saw.

Processes, not threads, by default: in one process the executions share one GIL, so a thread
holding the lock for a few milliseconds waits for the interpreter while the others merge, and
the lock holds measured are the GIL's, not the path's. ``threads=True`` keeps the old way
(``bench.locks`` measures with threads) for comparison and for quick checks.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queuelib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.common import bench_kit, merger
from bench.recording import RecordingBlobStore, RecordingLeaseTable, RunRecord
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import FinalMergeRequest, FinalMergeResult, MergePath

START_TIMEOUT_S = 600.0  # spawning 16 processes that import chromadb on a loaded machine


class _Event(Protocol):
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Queue(Protocol):
    def put(self, item: Any) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class Job:
    bucket: str
    table: str
    path: MergePath
    request: FinalMergeRequest
    root: Path


@dataclass
class Outcome:
    result: FinalMergeResult | None
    error: str | None
    finished: float  # time.time(): comparable across processes
    record: RunRecord = field(default_factory=RunRecord)


def execute(job: Job, ready: _Queue, go: _Event) -> Outcome:
    """One execution: build the adapters, report ready, wait for the start, run the path."""
    record = RunRecord()
    blobs = RecordingBlobStore(S3BlobStore(job.bucket), record)
    leases = RecordingLeaseTable(DynamoLeaseTable(job.table), record)
    kit = bench_kit(blobs, ChromaIndex(), leases, job.table, job.root)
    ready.put(job.request.batch_id)
    if not go.wait(START_TIMEOUT_S):
        return Outcome(None, "never started", time.time(), record)
    try:
        result, error = merger(job.path, kit).run(job.request), None
    except Exception as exc:  # a failed execution is a figure, not a crash of the bench
        result, error = None, f"{job.request.batch_id}: {type(exc).__name__}: {exc}"
    return Outcome(result, error, time.time(), record)


class Crowd:
    """Runs jobs together: a pool of spawned processes (kept across runs), or threads."""

    def __init__(self, size: int, *, threads: bool = False) -> None:
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        if not threads:
            context = multiprocessing.get_context("spawn")  # no fork of a threaded server
            self._manager = context.Manager()
            self._pool = ProcessPoolExecutor(max_workers=size, mp_context=context)
            self._warm(size)

    def _warm(self, size: int) -> None:
        """Start every process and open ChromaDB once in each before any run is timed.

        The pool starts a process only when no idle one is left, and a process's first ChromaDB
        client costs a second or more: unwarmed, whichever path ran first at a level paid that
        for every process it was the first to use (at level 1 with the order alternating by
        level, always the same path).
        """
        assert self._pool is not None
        ready: _Queue = self._manager.Queue()
        go: _Event = self._manager.Event()
        futures = [self._pool.submit(_warm_one, ready, go) for _ in range(size)]
        for _ in range(size):  # each task holds its process until all have started
            ready.get(timeout=START_TIMEOUT_S)
        go.set()
        for future in futures:
            future.result()

    def run(self, jobs: Sequence[Job]) -> tuple[float, list[Outcome]]:
        """Start every job at once; return (makespan in seconds, outcomes in job order)."""
        if self._pool is None:
            ready: _Queue = queuelib.Queue()
            go: _Event = threading.Event()
        else:
            ready, go = self._manager.Queue(), self._manager.Event()
        futures = self._submit(jobs, ready, go)
        for _ in jobs:
            ready.get(timeout=START_TIMEOUT_S)
        began = time.time()
        go.set()
        outcomes = [f.result() for f in futures]
        return max(o.finished for o in outcomes) - began, outcomes

    def _submit(self, jobs: Sequence[Job], ready: _Queue, go: _Event) -> list[Future[Outcome]]:
        if self._pool is not None:
            return [self._pool.submit(execute, job, ready, go) for job in jobs]
        futures: list[Future[Outcome]] = []
        for job in jobs:
            future: Future[Outcome] = Future()
            futures.append(future)
            threading.Thread(target=_into, args=(future, job, ready, go), daemon=True).start()
        return futures

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._manager.shutdown()

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _warm_one(ready: _Queue, go: _Event) -> None:
    synth.warm(ChromaIndex())
    ready.put(os.getpid())
    go.wait(START_TIMEOUT_S)


def _into(future: Future[Outcome], job: Job, ready: _Queue, go: _Event) -> None:
    try:
        future.set_result(execute(job, ready, go))
    except BaseException as exc:
        future.set_exception(exc)
