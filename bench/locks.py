"""Lock hold and wait, legacy vs two-phase, on the embedded server with ChromaIndex.

Two parts, one run:

* **sweep** — for each snapshot size and chunk count, the same kind of batch (``records_per_chunk``
  new records per chunk) goes through legacy and two-phase alternately, ``repeats`` times each.
  Each size's base is seeded ONCE (seeding 50k x 1536-d takes minutes); every publish grows it by
  one batch, which is noise next to the base. Reported per path: lock hold p50/p95/max and wait
  p50, and the ratio legacy/two-phase of the hold p50.
* **contention** — 4 and 8 concurrent executions of one path on one collection: makespan, CAS
  failures, retries, fallbacks, and conservation (the final snapshot holds the base plus every
  batch's new ids, each with its own content).

Run: ``python -m bench.locks [--quick] [--json] [--dimension N]``; ``run(...)`` returns the dict.
"""

from __future__ import annotations

import argparse
import json as jsonlib
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import DB, PATHS, Collection, merger, percentile
from snapmerge.domain import MergePath
from snapmerge.embedded import EmbeddedAWS
from snapmerge.snapshots import SnapshotStore

QUICK: dict[str, Any] = {
    "sizes": (1000, 10000),
    "chunks": (1, 5),
    "dimension": 128,
    "repeats": 2,
    "contention": (4, 8),
    "records_per_chunk": 10,
}


def _summary(holds: list[float], waits: list[float]) -> dict[str, float]:
    return {
        "hold_p50_ms": round(statistics.median(holds), 2),
        "hold_p95_ms": round(percentile(holds, 0.95), 2),
        "hold_max_ms": round(max(holds), 2),
        "wait_p50_ms": round(statistics.median(waits), 2),
    }


def _sweep(
    col: Collection, size: int, chunk_counts: Sequence[int], repeats: int, per_chunk: int
) -> list[dict[str, Any]]:
    rows = []
    kits = {p: col.kit(p.value) for p in PATHS}
    for chunks in chunk_counts:
        holds: dict[MergePath, list[float]] = {p: [] for p in PATHS}
        waits: dict[MergePath, list[float]] = {p: [] for p in PATHS}
        for rep in range(repeats):
            for path in PATHS if rep % 2 == 0 else PATHS[::-1]:
                request, _ = col.batch(chunks, per_chunk)
                result = merger(path, kits[path]).run(request)
                holds[path].append(result.lock_hold_ms)
                waits[path].append(result.lock_wait_ms)
        row: dict[str, Any] = {"size": size, "chunks": chunks}
        for path in PATHS:
            row[path.value] = _summary(holds[path], waits[path])
        row["ratio_hold_p50"] = round(
            row["legacy"]["hold_p50_ms"] / max(row["two_phase"]["hold_p50_ms"], 1e-6), 1
        )
        rows.append(row)
    return rows


def _contention(col: Collection, path: MergePath, workers: int, per_chunk: int) -> dict[str, Any]:
    store = SnapshotStore(col.blobs, DB)
    before = col.engine.count(col.kit("count").cache(DB).get(store.read_pointer().version))  # type: ignore[union-attr]
    batches = [col.batch(2, per_chunk) for _ in range(workers)]
    results: list[Any] = [None] * workers

    def one(i: int) -> None:
        results[i] = merger(path, col.kit(f"{path.value}-{i}")).run(batches[i][0])

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    makespan = time.perf_counter() - started
    final = col.kit("check").cache(DB).get(store.read_pointer().version)  # type: ignore[union-attr]
    ids = {r.id for page in col.engine.read_records(final) for r in page}
    new_ids = {i for _, batch_ids in batches for i in batch_ids}
    conserved = new_ids <= ids and len(ids) == before + len(new_ids)
    return {
        "path": path.value,
        "executions": workers,
        "makespan_s": round(makespan, 2),
        "cas_failures": sum(r.cas_failures for r in results),
        "cas_retries": sum(r.cas_retries for r in results),
        "fallbacks": sum(bool(r.fallback_to_legacy) for r in results),
        "hold_sum_ms": round(sum(r.lock_hold_ms for r in results), 1),
        "wait_max_ms": round(max(r.lock_wait_ms for r in results), 1),
        "conserved": conserved,
    }


def run(
    sizes: Sequence[int] = (1000, 10000, 50000),
    chunks: Sequence[int] = (1, 5, 20),
    dimension: int = 1536,
    repeats: int = 3,
    json: bool = False,
    *,
    contention: Sequence[int] = (4, 8),
    records_per_chunk: int = 10,
) -> dict[str, Any]:
    """Run the sweep and the contention runs; print tables (or JSON); return the figures."""
    out: dict[str, Any] = {
        "engine": "ChromaIndex",
        "server": "embedded moto (serialised)",
        "dimension": dimension,
        "repeats": repeats,
        "records_per_chunk": records_per_chunk,
        "sweep": [],
        "contention": [],
        "seed_seconds": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-locks-") as tmp,
        EmbeddedAWS() as cloud,
        cloud.environment(),
    ):
        for size in sizes:
            col = Collection(cloud, size, dimension, Path(tmp) / f"n{size}")
            out["seed_seconds"][size] = round(col.seed_s, 1)
            out["sweep"] += _sweep(col, size, chunks, repeats, records_per_chunk)
            if size == min(sizes):
                for workers in contention:
                    for path in PATHS:
                        out["contention"].append(_contention(col, path, workers, records_per_chunk))
    print(jsonlib.dumps(out, indent=2) if json else render(out))
    return out


def render(out: dict[str, Any]) -> str:
    lines = [
        f"lock hold/wait (ms), ChromaIndex, dimension {out['dimension']}, "
        f"{out['repeats']} repeats, {out['records_per_chunk']} new records per chunk",
        f"{'size':>7} {'chunks':>6} | {'legacy p50/p95/max':>26} {'wait':>7} | "
        f"{'two-phase p50/p95/max':>24} {'wait':>7} | {'ratio':>7}",
    ]
    for r in out["sweep"]:
        leg, two = r["legacy"], r["two_phase"]
        lines.append(
            f"{r['size']:>7} {r['chunks']:>6} | "
            f"{leg['hold_p50_ms']:>8.1f}/{leg['hold_p95_ms']:>8.1f}"
            f"/{leg['hold_max_ms']:>8.1f} {leg['wait_p50_ms']:>7.1f} | {two['hold_p50_ms']:>7.1f}/"
            f"{two['hold_p95_ms']:>7.1f}/{two['hold_max_ms']:>7.1f} {two['wait_p50_ms']:>7.1f} | "
            f"{r['ratio_hold_p50']:>6.1f}x"
        )
    lines.append("")
    lines.append("contention (one collection, concurrent executions of one path)")
    lines.append(
        f"{'path':>10} {'execs':>5} {'makespan s':>10} {'CAS fail':>8} {'retries':>7} "
        f"{'fallbacks':>9} {'hold sum ms':>11} {'conserved':>9}"
    )
    for c in out["contention"]:
        lines.append(
            f"{c['path']:>10} {c['executions']:>5} {c['makespan_s']:>10.2f} "
            f"{c['cas_failures']:>8} {c['cas_retries']:>7} {c['fallbacks']:>9} "
            f"{c['hold_sum_ms']:>11.1f} {c['conserved']!s:>9}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.locks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1k,10k; chunks 1,5; 128-d")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dimension", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--chunks", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--contention",
        type=int,
        nargs="*",
        default=None,
        help="concurrent executions per contention run (none: skip them)",
    )
    args = parser.parse_args(argv)
    options: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("dimension", "sizes", "chunks", "repeats", "contention"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    run(json=args.json, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
