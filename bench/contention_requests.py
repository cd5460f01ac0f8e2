"""S3 requests per execution of each path, one execution at a time (``--requests``)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PATHS, bench_kit, merger, mkdir, upload_batch
from bench.contention_workload import FULL, QUICK, Base, crowd_batches
from bench.recording import CountingBlobStore
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.embedded import EmbeddedAWS


def request_counts(
    executions: int = 3,
    dimension: int = QUICK["dimension"],
    base: int = QUICK["base"],
    records: int = FULL["records"],
    chunks: int = FULL["chunks"],
) -> dict[str, Any]:
    """S3 requests per execution of each path, one execution at a time on one collection.

    No contention, so the counts are each path's own: the fixed cost of a publish, which in
    mixed mode every execution pays. Each path gets its own bucket with the same base and the
    same ``executions`` batches, run one after another; medians per operation.
    """
    out: dict[str, Any] = {"executions": executions, "dimension": dimension, "base": base}
    with (
        tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp,
        EmbeddedAWS() as cloud,
        cloud.environment(),
    ):
        work = Path(tmp)
        seed = Base(ChromaIndex(), base, dimension, work)
        batches = crowd_batches(executions, seed, records, chunks, overlap=0)
        for path in PATHS:
            name = f"requests-{path.value.replace('_', '')}-{time.time_ns() % 10**9}"
            raw, engine = seed.fresh_bucket(cloud, name), ChromaIndex()
            counting = CountingBlobStore(raw)
            kit = bench_kit(counting, engine, DynamoLeaseTable(name), name, mkdir(work / name))
            per: list[dict[str, int]] = []
            for b in batches:
                request = upload_batch(engine, raw, work, b.batch_id, b.chunks)
                before = counting.snapshot()
                merger(path, kit).run(request)
                after = counting.snapshot()
                per.append({op: after.get(op, 0) - before.get(op, 0) for op in after})
            ops = sorted({op for p in per for op in p})
            medians = {op: statistics.median(p.get(op, 0) for p in per) for op in ops}
            out[path.value] = {"per_execution": per, "median": medians}
            print(
                f"{path.value:<9} requests per execution (median of {executions}): "
                + ", ".join(f"{op} {medians[op]:g}" for op in ops)
                + f"; total {sum(medians.values()):g}",
                flush=True,
            )
    return out
