"""A crowd of final merges on one collection, legacy and two-phase side by side in one run.

For each level N (1, 2, 4, 8, 16 by default) N executions of one path start together on one
collection, each merging its own batch (``records`` records in ``chunks`` intermediates). Both
paths merge the same N batches into the same base, alternating which path goes first, in a fresh
bucket and lock table per run (so every run starts from the same base and a cold local cache, like
a crowd of fresh Lambdas). Per run:

* **makespan** — from the common start to the last execution's return;
* **lock hold p50/p99** — over every lock grant of the run (the lock table is wrapped and each grant
  timed from its grant to its release; a two-phase execution takes two or more grants);
* **CAS failures** and fallbacks, from the results;
* **wasted builds** — versions built and uploaded (their manifest was written) that the pointer
  never named, counted from the bucket's writes; beside it, the results' own ``wasted_builds``
  when every result carries one;
* **batches per publish** — per landed pointer write, how many batches that version consumed (a
  result's ``consumed_batches`` when the path reports one, else 1);
* **conservation** — the snapshot the pointer names at the end holds exactly the base plus every
  batch's records, each with the content of its last write in publish order. ``overlap`` of each
  batch's records rewrite the SAME base ids, so a batch applied twice, or applied after a later
  one, shows up as wrong content.

Run: ``python -m bench.contention [--quick] [--json] [--levels N ...] [--repeats N]``, or
``snapmerge bench contention ...``; ``run(...)`` returns the figures. Figures are medians over
the repeats; the machine's noise is in them, so read the ratios measured side by side.

This module is the run; the sizes, base and batches are ``bench.contention_workload``, the
figures, conservation check and table ``bench.contention_figures``, and ``--requests`` (S3
requests per execution) ``bench.contention_requests``.
"""

from __future__ import annotations

import argparse
import json as jsonlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import PATHS, upload_batch
from bench.contention_figures import conservation, level_row, progress, render, run_figures
from bench.contention_requests import request_counts
from bench.contention_workload import FULL, QUICK, Base, Batch, crowd_batches
from bench.crowd import Crowd, Job
from bench.recording import RunRecord
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.domain import MergePath
from snapmerge.embedded import EmbeddedAWS


def run(
    levels: Sequence[int] = FULL["levels"],
    dimension: int = FULL["dimension"],
    base: int = FULL["base"],
    records: int = FULL["records"],
    chunks: int = FULL["chunks"],
    overlap: int = FULL["overlap"],
    repeats: int = FULL["repeats"],
    json: bool = False,
    threads: bool = False,
    rtt_ms: float = 0.0,
) -> dict[str, Any]:
    """Every level, both paths, ``repeats`` times; print a table (or JSON); return the figures."""
    out: dict[str, Any] = {
        "engine": "ChromaIndex",
        "server": "embedded moto (serialised)",
        "rtt_ms": rtt_ms,
        "dimension": dimension,
        "base": base,
        "records": records,
        "chunks": chunks,
        "overlap": overlap,
        "repeats": repeats,
        "executions_as": "threads in one process" if threads else "one spawned process each",
        "runs": [],
        "levels": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp,
        EmbeddedAWS(rtt_ms=rtt_ms) as cloud,
        cloud.environment(),
        Crowd(max(levels), threads=threads) as crowd,
    ):
        work = Path(tmp)
        started = time.perf_counter()
        seed = Base(ChromaIndex(), base, dimension, work)
        out["seed_seconds"] = round(time.perf_counter() - started, 1)
        for level in levels:
            batches = crowd_batches(level, seed, records, chunks, overlap)
            by_path: dict[MergePath, list[dict[str, Any]]] = {p: [] for p in PATHS}
            for rep in range(repeats):
                for path in PATHS if (rep + level) % 2 == 0 else PATHS[::-1]:
                    figures = _run_once(cloud, crowd, seed, batches, path, work)
                    figures["repeat"] = rep
                    progress(figures)
                    out["runs"].append(figures)
                    by_path[path].append(figures)
            out["levels"].append(level_row(level, by_path))
    print(jsonlib.dumps(out, indent=2) if json else render(out), flush=True)
    return out


def _run_once(
    cloud: EmbeddedAWS,
    crowd: Crowd,
    base: Base,
    batches: list[Batch],
    path: MergePath,
    work: Path,
) -> dict[str, Any]:
    """One crowd of ``len(batches)`` executions of ``path`` in a fresh bucket; its figures."""
    name = f"crowd-{path.value.replace('_', '')}-{len(batches)}-{time.time_ns() % 10**9}"
    raw, engine = base.fresh_bucket(cloud, name), ChromaIndex()
    jobs = [
        Job(
            name,
            name,
            path,
            upload_batch(engine, raw, work, b.batch_id, b.chunks),
            work / name / b.batch_id,
        )
        for b in batches
    ]
    makespan, outcomes = crowd.run(jobs)
    record = RunRecord.merged(o.record for o in outcomes)
    done = [o.result for o in outcomes if o.result is not None]
    errors = [o.error for o in outcomes if o.error is not None]
    figures = run_figures(path, batches, done, record, errors, makespan)
    figures["conservation"] = conservation(raw, engine, base, batches, done, record, work / name)
    raw.delete(raw.list(""))  # moto keeps objects in memory: free them before the next run
    shutil.rmtree(work / name, ignore_errors=True)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.contention", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="levels 1,2,4; 128-d; 1k base")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--levels", type=int, nargs="+", default=None)
    parser.add_argument("--dimension", type=int, default=None)
    parser.add_argument("--base", type=int, default=None, help="records in the base snapshot")
    parser.add_argument("--records", type=int, default=None, help="records per batch")
    parser.add_argument("--chunks", type=int, default=None, help="intermediates per batch")
    parser.add_argument("--overlap", type=int, default=None, help="records rewriting base ids")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--threads",
        action="store_true",
        help="run the executions as threads of this process (the GIL then inflates lock holds)",
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="a network round trip added to every request, outside the server's lock (real S3 "
        "and DynamoDB overlap concurrent requests; the embedded server alone serialises them)",
    )
    parser.add_argument(
        "--requests",
        action="store_true",
        help="instead: S3 requests per execution of each path, one execution at a time",
    )
    args = parser.parse_args(argv)
    if args.requests:
        sizes = {k: getattr(args, k) for k in ("dimension", "base", "records", "chunks")}
        request_counts(**{k: v for k, v in sizes.items() if v is not None})
        return 0
    options: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for name in ("levels", "dimension", "base", "records", "chunks", "overlap", "repeats"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if min(options["levels"]) < 1 or options["repeats"] < 1 or options["records"] < 1:
        parser.error("levels, repeats and records must be >= 1")
    if args.rtt_ms < 0:
        parser.error("--rtt-ms must be >= 0")
    run(json=args.json, threads=args.threads, rtt_ms=args.rtt_ms, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
