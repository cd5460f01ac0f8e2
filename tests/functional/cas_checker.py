"""A small linearizability checker for a compare-and-swap counter, and the workload that feeds it.

Workload: each worker reads the counter object (value + ETag) and writes value + 1 with
``If-Match`` on that ETag, retrying on a refused precondition. Every write the store accepted is
recorded as a :class:`Swap`.

Checker: with no lost update, the accepted swaps form one chain — the k-th swap read the value
k - 1 and the ETag the (k-1)-th swap produced, every value is written exactly once, and the
final value equals the initial value plus the number of accepted swaps.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

from snapmerge.errors import PointerConflictError
from snapmerge.ports import BlobStore


@dataclass(frozen=True)
class Swap:
    worker: int
    read_value: int
    read_etag: str
    written_value: int
    new_etag: str
    refused_before: int = 0  # refused attempts of this worker since its previous accepted swap


def increment(
    blobs: BlobStore, key: str, worker: int, times: int, *, conditional: bool = True
) -> list[Swap]:
    """``times`` accepted read-then-swap increments of the counter at ``key``."""
    swaps: list[Swap] = []
    refused = 0
    while len(swaps) < times:
        blob = blobs.get(key)
        assert blob is not None, "the counter must be created first"
        value = int(blob.body)
        try:
            etag = blobs.put(
                key, str(value + 1).encode(), if_match=blob.etag if conditional else None
            )
        except PointerConflictError:
            refused += 1
            continue  # somebody swapped first: re-read and retry
        swaps.append(Swap(worker, value, blob.etag, value + 1, etag, refused))
        refused = 0
    return swaps


def run_workers(blobs: BlobStore, key: str, workers: int, times: int, **kwargs: bool) -> list[Swap]:
    """Run ``workers`` threads of :func:`increment`; return every accepted swap."""
    results: list[list[Swap]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = increment(blobs, key, i, times, **kwargs)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [swap for result in results for swap in result]


def check(history: list[Swap], initial: int, initial_etag: str, final: int) -> list[str]:
    """Every violation of a linear, lossless history (empty when the history is correct)."""
    problems: list[str] = []
    if final != initial + len(history):
        lost = initial + len(history) - final
        problems.append(
            f"lost update: {len(history)} accepted swaps but the counter moved by "
            f"{final - initial} ({lost} lost)"
        )
    written = Counter(swap.written_value for swap in history)
    for value, times in sorted(written.items()):
        if times > 1:
            problems.append(f"value {value} was written by {times} accepted swaps")
    previous_etag = initial_etag
    for k, swap in enumerate(sorted(history, key=lambda s: s.written_value), start=1):
        if swap.written_value != initial + k or swap.read_value != swap.written_value - 1:
            problems.append(f"swap {swap} is not step {k} of one chain")
            break
        if swap.read_etag != previous_etag:
            problems.append(f"swap {swap} read ETag {swap.read_etag}, not its predecessor's")
            break
        previous_etag = swap.new_etag
    return problems
