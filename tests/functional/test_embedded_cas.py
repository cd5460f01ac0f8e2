"""The conditional PUT is a real compare-and-swap on the serialised embedded server.

8 threads race read-then-If-Match increments; the checker finds no lost update and a linear
history. The negative control runs the same workload with the condition dropped, lined up so
every round all workers read the same value, and the checker must report the lost updates.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from snapmerge.adapters.memory import MemoryBlobStore
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.ports import BlobStore
from tests.functional.cas_checker import check, run_workers

WORKERS = 8
TIMES = 8
KEY = "words/snapshot/latest-pointer.txt"


class FirstWriteTogether:
    """A BlobStore whose first put from each thread waits for all threads: the first round is
    guaranteed to race (every worker holds the same ETag), so the test cannot pass uncontended."""

    def __init__(self, blobs: BlobStore, parties: int) -> None:
        self._blobs = blobs
        self._barrier = threading.Barrier(parties)
        self._seen = threading.local()
        self.bucket = blobs.bucket
        self.get = blobs.get

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        if not getattr(self._seen, "done", False):
            self._seen.done = True
            self._barrier.wait(timeout=30)
        return self._blobs.put(
            key, body, if_match=if_match, if_none_match=if_none_match, metadata=metadata
        )


def test_concurrent_if_match_increments_lose_nothing(aws: Any) -> None:
    blobs = S3BlobStore(aws.bucket)
    initial_etag = blobs.put(KEY, b"0", if_none_match=True)
    history = run_workers(FirstWriteTogether(blobs, WORKERS), KEY, WORKERS, TIMES)  # type: ignore[arg-type]
    final = blobs.get(KEY)
    assert final is not None
    assert len(history) == WORKERS * TIMES
    assert sum(swap.refused_before for swap in history) >= WORKERS - 1  # the race happened
    assert check(history, 0, initial_etag, int(final.body)) == []
    assert int(final.body) == WORKERS * TIMES


def test_negative_control_unconditional_writes_are_caught() -> None:
    blobs = MemoryBlobStore()
    initial_etag = blobs.put(KEY, b"0")
    all_have_read = threading.Barrier(WORKERS)

    def line_up(key: str) -> None:
        all_have_read.wait(timeout=30)  # every worker has read the same value before any writes

    blobs.before_put = line_up
    history = run_workers(blobs, KEY, WORKERS, TIMES, conditional=False)
    final = blobs.get(KEY)
    assert final is not None and int(final.body) == TIMES  # 7 of 8 updates lost each round
    problems = check(history, 0, initial_etag, int(final.body))
    assert any(p.startswith("lost update") for p in problems)
    assert any("written by 8 accepted swaps" in p for p in problems)


def test_checker_accepts_a_sequential_conditional_history() -> None:
    """Control for the checker itself: one worker, no races, no complaints."""
    blobs = MemoryBlobStore()
    initial_etag = blobs.put(KEY, b"5")
    history = run_workers(blobs, KEY, 1, 10)
    final = blobs.get(KEY)
    assert final is not None
    assert check(history, 5, initial_etag, int(final.body)) == []
    assert check(history[:-1], 5, initial_etag, int(final.body)) != []  # a hidden swap is seen


def test_a_round_trip_is_slept_outside_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rtt`` (a benchmark's model of the network) never serialises: while one request sleeps
    its round trip, another is handled. Were the sleep under the lock, B would block behind A."""
    from snapmerge import embedded

    handled: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        handled.append(environ["PATH_INFO"])
        return [b"ok"]

    handle = embedded.serialised(app, rtt=0.01)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # A's round trip: B arrives meanwhile and must not wait for A
            other = threading.Thread(target=handle, args=({"PATH_INFO": "/b"}, print))
            other.start()
            other.join(5)
            assert not other.is_alive()

    monkeypatch.setattr("snapmerge.embedded.time.sleep", sleep)
    handle({"PATH_INFO": "/a"}, print)

    assert handled == ["/b", "/a"]
    assert slept == [0.01, 0.01]
    with pytest.raises(ValueError, match="rtt_ms"):
        embedded.EmbeddedAWS(rtt_ms=-1)
