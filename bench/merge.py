"""``snapmerge bench merge``: the legacy final merge, step by step, and what it costs the lock.

One run, on the embedded (serialised) moto server with S3BlobStore, DynamoLeaseTable and
ChromaIndex, for each snapshot size x chunk count, ``repeats`` times:

1. **Breakdown.** A real ``LegacyFinalMerge`` runs on a ``TimedKit`` (``bench.merge_timing``) —
   a ``MergeKit`` subclass that only times the steps it inherits: ``download`` (the
   base from S3 into the local cache), ``fetch`` (the intermediates), ``read``/``fold``/
   ``classify``/``upsert`` (``MergeStats.timings_ms`` of the engine's merge; ``upsert`` is its
   write phase), ``copy+manifest`` and ``digest`` (the rest of the build; legacy computes the
   content digest only when it is shadowed, so it is 0 here), ``upload``,
   ``pointer_swap`` (lease verify + conditional PUT) and ``finish`` (receipt, cleanup, retention).
   All of them run under the lock; ``other`` is the lock hold the steps do not explain.
2. **Engine vs raw.** The same batch's records upserted with ChromaDB's own ``upsert`` into a copy
   of the same base (``bench.merge_engine``'s raw arm: read the same sources, ``raw_upsert``).
   The ratio is the engine's merge time over that; the target is <= 1.10.
3. **Hold vs size and chunks.** Legacy lock hold per (size, chunks), and its ratio to the
   smallest cell: the baseline the two-phase path is judged against (``bench.locks`` runs both).

Every run merges into the same seeded base (``bench.common``'s ``Collection``, seeded once per
size): between runs the pointer is swapped back to the seed version, which is pinned against
retention, and its cached copy is dropped, so each run downloads exactly ``size`` records, as a
Lambda with an empty ``/tmp`` does. Medians over repeats. ``--json`` prints only the figures;
otherwise ``bench.merge_report`` renders them.
"""

from __future__ import annotations

import argparse
import json as jsonlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import DB, Collection
from bench.merge_engine import _raw_arm
from bench.merge_report import render
from bench.merge_timing import DETAIL, STEPS, TimedEngine, TimedKit, timed_kit
from legacy.final_merge import LegacyFinalMerge
from snapmerge.domain import (
    Pointer,
)
from snapmerge.embedded import EmbeddedAWS

QUICK: dict[str, Any] = {
    "sizes": (1000, 10000),
    "chunks": (1, 5),
    "dimension": 128,
    "repeats": 2,
    "records_per_chunk": 50,
}
TARGET_RATIO = 1.10
_SEED_PIN = "bench-merge-seed"


def _reset(kit: TimedKit, seed: Pointer) -> None:
    """Point back at the seed version and forget its cached copy (an empty ``/tmp``)."""
    store = kit.store(DB)
    current = store.read_pointer()
    if current is not None and current.version != seed.version:
        store.write_pointer(seed.version, current)
    shutil.rmtree(kit.cache(DB).path(seed.version), ignore_errors=True)
    kit.steps.clear()


def _one_run(
    col: Collection, kit: TimedKit, engine: TimedEngine, chunks: int, per_chunk: int
) -> dict[str, Any]:
    seed = kit.store(DB).read_pointer()
    request, _ = col.batch(chunks, per_chunk)
    result = LegacyFinalMerge(kit).run(request)
    s, stats = dict(kit.steps), engine.stats
    assert stats is not None and seed is not None
    t = stats.timings_ms
    steps = {
        "download": s.get("download", 0.0),
        "fetch": s["fetch"],
        "read": t["read"],
        "fold": t["fold"],
        "classify": t["classify"],
        "upsert": t["write"],
        "merge_close": s["merge"] - t["total"],
        "copy+manifest": s["build"] - s["merge"] - s.get("digest", 0.0),
        "digest": s.get("digest", 0.0),
        "upload": s["upload"],
        "pointer_swap": s["pointer_swap"],
        "finish": s["finish"],
    }
    # LegacyFinalMerge reports its hold before ``finish``, which still runs under the lock.
    held = result.lock_hold_ms + steps["finish"]
    # Pointer read, lease checks, base pin, workspace: not a step above.
    steps["other"] = max(0.0, held - sum(steps.values()))
    raw_s, raw_read_s = _raw(col, kit, seed, request.batch_id, chunks)
    records = result.records_merged
    return {
        "steps_ms": steps,
        "merge_ms": s["merge"],
        "hold_ms": result.lock_hold_ms,
        "held_ms": held,
        "wait_ms": result.lock_wait_ms,
        "records": records,
        "raw_ms": raw_s * 1000,
        "raw_upsert_only_ms": (raw_s - raw_read_s) * 1000,
    }


def _raw(
    col: Collection, kit: TimedKit, seed: Pointer, batch_id: str, chunks: int
) -> tuple[float, float]:
    """ChromaDB's own upsert of the same records into a copy of the same base: (total, read) s.

    ``bench.merge_engine``'s raw arm: it reads the same sources first, so both arms pay the same
    source I/O (one client open and close per source: the engine defers the closing garbage
    collection to the end of the merge, the raw arm does not)."""
    inputs = col.work / "inputs" / batch_id
    target = col.work / "raw-target"
    shutil.copytree(kit.cache(DB).get(seed.version), target)
    try:
        total, read = _raw_arm(target, [inputs / str(i) for i in range(chunks)])
    finally:
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(inputs, ignore_errors=True)
    return total, read


def _cell(runs: list[dict[str, Any]], size: int, chunks: int) -> dict[str, Any]:
    med = statistics.median
    steps = {k: round(med(r["steps_ms"][k] for r in runs), 1) for k in (*STEPS, *DETAIL)}
    held = med(r["held_ms"] for r in runs)
    merge_ms, raw_ms = med(r["merge_ms"] for r in runs), med(r["raw_ms"] for r in runs)
    upsert_ms = med(r["raw_upsert_only_ms"] for r in runs)
    records = runs[0]["records"]
    return {
        "size": size,
        "chunks": chunks,
        "records": records,
        "steps_ms": steps,
        "share_of_held": {k: round(v / held, 3) for k, v in steps.items()},
        "hold_p50_ms": round(med(r["hold_ms"] for r in runs), 1),
        "held_p50_ms": round(held, 1),
        "held_max_ms": round(max(r["held_ms"] for r in runs), 1),
        "wait_p50_ms": round(med(r["wait_ms"] for r in runs), 1),
        "engine_merge_ms": round(merge_ms, 1),
        "raw_ms": round(raw_ms, 1),
        "engine_rps": round(records / (merge_ms / 1000), 1),
        "raw_rps": round(records / (raw_ms / 1000), 1),
        "raw_upsert_only_ms": round(upsert_ms, 1),
        "raw_upsert_only_rps": round(records / (upsert_ms / 1000), 1),
        "engine_vs_raw": round(merge_ms / raw_ms, 3),
        "engine_vs_raw_upsert_only": round(merge_ms / upsert_ms, 3),
        "write_phase_vs_raw_upsert_only": round(steps["upsert"] / upsert_ms, 3),
    }


def run(
    sizes: Sequence[int] = (1000, 10000, 50000),
    chunks: Sequence[int] = (1, 5, 20),
    dimension: int = 1536,
    repeats: int = 3,
    *,
    records_per_chunk: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Measure every (size, chunks) cell; return the figures (nothing is printed to stdout)."""
    out: dict[str, Any] = {
        "server": "embedded moto (serialised), S3BlobStore + DynamoLeaseTable + ChromaIndex",
        "path": "legacy",
        "dimension": dimension,
        "repeats": repeats,
        "records_per_chunk": records_per_chunk,
        "steps": [*STEPS, *DETAIL],
        "seed_seconds": {},
        "cells": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp,
        EmbeddedAWS() as cloud,
        cloud.environment(),
    ):
        for size in sizes:
            col = Collection(cloud, size, dimension, Path(tmp) / f"n{size}")
            out["seed_seconds"][str(size)] = round(col.seed_s, 1)
            kit, engine = timed_kit(col)
            seed = kit.store(DB).read_pointer()
            assert seed is not None
            kit.store(DB).mark_inflight(seed.version, _SEED_PIN, timedelta(days=1))
            for n_chunks in chunks:
                runs = []
                for rep in range(repeats):
                    _reset(kit, seed)
                    runs.append(_one_run(col, kit, engine, n_chunks, records_per_chunk))
                    if progress:
                        print(
                            f"  size {size} chunks {n_chunks} rep {rep + 1}/{repeats}: "
                            f"hold {runs[-1]['hold_ms']:.0f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
                out["cells"].append(_cell(runs, size, n_chunks))
    _summarise(out)
    return out


def _summarise(out: dict[str, Any]) -> None:
    cells = out["cells"]
    first = cells[0]["held_p50_ms"]
    for c in cells:
        c["held_vs_smallest"] = round(c["held_p50_ms"] / first, 2)
    ratios = [c["engine_vs_raw"] for c in cells]
    strict = [c["engine_vs_raw_upsert_only"] for c in cells]
    out["summary"] = {
        "engine_vs_raw_median": round(statistics.median(ratios), 3),
        "engine_vs_raw_max": round(max(ratios), 3),
        "engine_vs_raw_upsert_only_median": round(statistics.median(strict), 3),
        "engine_vs_raw_upsert_only_max": round(max(strict), 3),
        "target": TARGET_RATIO,
        "within_target": statistics.median(ratios) <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="snapmerge bench merge", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1k,10k; chunks 1,5; 128-d")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--chunks", type=int, nargs="+", default=None)
    parser.add_argument("--dimension", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--records-per-chunk", type=int, default=None)
    args = parser.parse_args(argv)
    options: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("sizes", "chunks", "dimension", "repeats", "records_per_chunk"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    out = run(**options)
    print(jsonlib.dumps(out, indent=2) if args.json else render(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
