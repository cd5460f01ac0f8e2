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
"""

from __future__ import annotations

import argparse
import json as jsonlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import DB, PATHS, bench_kit, merger, mkdir, percentile, upload_batch
from bench.crowd import Crowd, Job
from bench.recording import CountingBlobStore, Fingerprints, RunRecord
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import FinalMergeResult, MergePath, Record, new_version_id
from snapmerge.embedded import EmbeddedAWS
from snapmerge.snapshots import SnapshotStore, VersionManifest, scan_files

FULL: dict[str, Any] = {
    "levels": (1, 2, 4, 8, 16),
    "dimension": 1536,
    "base": 10_000,
    "records": 200,
    "chunks": 2,
    "overlap": 20,
    "repeats": 1,
}
QUICK: dict[str, Any] = {**FULL, "levels": (1, 2, 4), "dimension": 128, "base": 1000, "repeats": 3}
TARGET_RATIO_AT_8 = 0.5  # issue 12: two-phase makespan <= 0.5x legacy's at 8, <= 1x everywhere


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    chunks: tuple[tuple[Record, ...], ...]


class _Base:
    """The base snapshot, written locally once and published into each run's fresh bucket."""

    def __init__(self, engine: ChromaIndex, size: int, dimension: int, work: Path) -> None:
        rows = synth.records(1, size, dimension, id_prefix="base-")
        self.directory = work / "base"
        synth.write_index(engine, self.directory, rows, DB.value)
        self.fingerprints = Fingerprints.of(rows)
        self.ids = [r.id for r in rows]
        self.dimension = dimension
        self.digest = engine.digest(self.directory)

    def publish(self, blobs: S3BlobStore) -> None:
        store = SnapshotStore(blobs, DB)
        version = new_version_id()
        manifest = VersionManifest(
            version=version,
            base_version=None,
            batch_id="seed",
            record_count=len(self.ids),
            dimension=self.dimension,
            path="seed",
            files=scan_files(self.directory),
            created_at="",
            digest=self.digest,
        )
        store.upload_version(version, self.directory, manifest)
        store.write_pointer(version, None)


def _batches(level: int, base: _Base, records: int, chunks: int, overlap: int) -> list[_Batch]:
    """``level`` batches; in each, the first ``overlap`` records rewrite the same base ids."""
    out = []
    per_chunk = max(1, records // chunks)
    contested = base.ids[: min(overlap, len(base.ids), records)]
    for n in range(level):
        rows = synth.records(
            5000 + 100 * level + n, records, base.dimension, id_prefix=f"l{level}b{n}-"
        )
        rows[: len(contested)] = [
            Record(id_, r.embedding, r.document, r.metadata)
            for id_, r in zip(contested, rows, strict=False)
        ]
        split = tuple(tuple(rows[i : i + per_chunk]) for i in range(0, len(rows), per_chunk))
        out.append(_Batch(f"crowd-{level}-{n}", split))
    return out


def _run_once(
    cloud: EmbeddedAWS,
    crowd: Crowd,
    base: _Base,
    batches: list[_Batch],
    path: MergePath,
    work: Path,
) -> dict[str, Any]:
    """One crowd of ``len(batches)`` executions of ``path`` in a fresh bucket; its figures."""
    name = f"crowd-{path.value.replace('_', '')}-{len(batches)}-{time.time_ns() % 10**9}"
    cloud.create_bucket(name)
    cloud.create_table(name)
    raw, engine = S3BlobStore(name), ChromaIndex()
    base.publish(raw)
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
    figures = _figures(path, batches, done, record, errors, makespan)
    figures["conservation"] = _conservation(raw, engine, base, batches, done, record, work / name)
    raw.delete(raw.list(""))  # moto keeps objects in memory: free them before the next run
    shutil.rmtree(work / name, ignore_errors=True)
    return figures


def _figures(
    path: MergePath,
    batches: list[_Batch],
    done: list[FinalMergeResult],
    record: RunRecord,
    errors: list[str],
    makespan: float,
) -> dict[str, Any]:
    holds = record.holds_ms or [0.0]
    order = record.publish_order
    reported = [r.wasted_builds for r in done]
    per_publish = [len(_consumed(v, done)) or 1 for v in order]
    wasted = len(record.uploaded - set(order))
    return {
        "path": path.value,
        "executions": len(batches),
        "makespan_s": round(makespan, 3),
        "merge_p50_s": round(statistics.median([r.processing_time_seconds for r in done]), 3)
        if done
        else None,
        "grants": len(record.holds_ms),
        "hold_p50_ms": round(statistics.median(holds), 1),
        "hold_p99_ms": round(percentile(holds, 0.99), 1),
        "hold_sum_ms": round(sum(holds), 1),
        "cas_failures": sum(r.cas_failures for r in done),
        "fallbacks": sum(bool(r.fallback_to_legacy) for r in done),
        "publishes": len(record.published),
        "builds_uploaded": len(record.uploaded),
        "wasted_builds": wasted,
        "wasted_per_publish": round(wasted / len(order), 2) if order else None,
        "wasted_builds_reported": sum(reported) if all(w is not None for w in reported) else None,
        "batches_per_publish": round(statistics.mean(per_publish), 2) if per_publish else 0.0,
        "coalesced": sum(1 for r in done if _coalesced(r)),
        "errors": errors,
    }


def _consumed(version: str, done: list[FinalMergeResult]) -> list[str]:
    """The batches a landed version consumed, in apply order.

    A result that names them (``consumed_batches``, group commit) says; otherwise each result
    naming the version is one batch (today's paths publish one batch per version).
    """
    mine = [r for r in done if r.version == version]
    for r in mine:
        named = list(r.consumed_batches)
        if named:
            return named
    return [r.batch_id for r in mine]


def _coalesced(result: FinalMergeResult) -> bool:
    return result.published_by is not None and result.published_by != result.batch_id


def _conservation(
    blobs: S3BlobStore,
    engine: ChromaIndex,
    base: _Base,
    batches: list[_Batch],
    done: list[FinalMergeResult],
    record: RunRecord,
    work: Path,
) -> dict[str, Any]:
    """Base + every batch, each id with its last write in publish order, and nothing else."""
    expected = Fingerprints(dict(base.fingerprints.by_id))
    by_id = {b.batch_id: b for b in batches}
    applied: list[str] = []
    for version in record.publish_order:
        for batch_id in _consumed(version, done):
            applied.append(batch_id)
            expected.apply(r for chunk in by_id[batch_id].chunks for r in chunk)
    pointer = SnapshotStore(blobs, DB).read_pointer()
    assert pointer is not None
    kit = bench_kit(blobs, engine, DynamoLeaseTable(blobs.bucket), blobs.bucket, mkdir(work))
    actual = Fingerprints.of(
        r for page in engine.read_records(kit.cache(DB).get(pointer.version)) for r in page
    )
    diff = expected.compare(actual)
    missing_batches = sorted(set(by_id) - set(applied))
    twice = sorted({b for b in applied if applied.count(b) > 1})
    return {
        "ok": not any(diff.values()) and not missing_batches and not twice,
        "records": len(actual.by_id),
        "missing_batches": missing_batches,
        "applied_twice": twice,
        **diff,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of one (level, path); sums where a single failure matters."""

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "repeats": len(runs),
        **{
            k: med(k)
            for k in (
                "makespan_s",
                "merge_p50_s",
                "hold_p50_ms",
                "hold_p99_ms",
                "cas_failures",
                "fallbacks",
                "publishes",
                "wasted_builds",
                "wasted_per_publish",
                "wasted_builds_reported",
                "batches_per_publish",
                "coalesced",
            )
        },
        "conserved": all(r["conservation"]["ok"] for r in runs),
        "errors": sum(len(r["errors"]) for r in runs),
    }


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
) -> dict[str, Any]:
    """Every level, both paths, ``repeats`` times; print a table (or JSON); return the figures."""
    out: dict[str, Any] = {
        "engine": "ChromaIndex",
        "server": "embedded moto (serialised)",
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
        EmbeddedAWS() as cloud,
        cloud.environment(),
        Crowd(max(levels), threads=threads) as crowd,
    ):
        work = Path(tmp)
        started = time.perf_counter()
        seed = _Base(ChromaIndex(), base, dimension, work)
        out["seed_seconds"] = round(time.perf_counter() - started, 1)
        for level in levels:
            batches = _batches(level, seed, records, chunks, overlap)
            by_path: dict[MergePath, list[dict[str, Any]]] = {p: [] for p in PATHS}
            for rep in range(repeats):
                for path in PATHS if (rep + level) % 2 == 0 else PATHS[::-1]:
                    figures = _run_once(cloud, crowd, seed, batches, path, work)
                    figures["repeat"] = rep
                    _progress(figures)
                    out["runs"].append(figures)
                    by_path[path].append(figures)
            out["levels"].append(_level(level, by_path))
    print(jsonlib.dumps(out, indent=2) if json else render(out), flush=True)
    return out


def _progress(f: dict[str, Any]) -> None:
    """One line per run on stderr, so a long run that is stopped still leaves its figures."""
    print(
        f"[contention] {f['executions']:>2} x {f['path']:<9} rep {f['repeat']}: "
        f"makespan {f['makespan_s']:.2f} s, hold p50/p99 {f['hold_p50_ms']}/{f['hold_p99_ms']} "
        f"ms, CAS failures {f['cas_failures']}, wasted {f['wasted_builds']}, "
        f"conserved {f['conservation']['ok']}, errors {len(f['errors'])}",
        file=sys.stderr,
        flush=True,
    )


def _level(level: int, by_path: dict[MergePath, list[dict[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {"executions": level}
    for path in PATHS:
        row[path.value] = _summary(by_path[path])
    legacy, two = row["legacy"]["makespan_s"], row["two_phase"]["makespan_s"]
    row["makespan_ratio"] = round(two / legacy, 2) if legacy and two else None
    return row


def render(out: dict[str, Any]) -> str:
    lines = [
        f"contention: {out['base']}-record base, {out['dimension']}-d, {out['records']} records "
        f"per batch in {out['chunks']} chunks ({out['overlap']} rewrite shared base ids), "
        f"medians of {out['repeats']} repeat(s), executions as {out['executions_as']}; "
        "L = legacy, 2P = two-phase",
        f"{'execs':>5} | {'makespan s L':>12} {'2P':>7} {'2P/L':>5} | "
        f"{'hold p50/p99 ms L':>17} {'2P':>13} | {'CAS fail L/2P':>13} | "
        f"{'wasted L/2P':>11} | {'batches/pub L/2P':>16} | conserved",
    ]
    for row in out["levels"]:
        leg, two = row["legacy"], row["two_phase"]
        lines.append(
            f"{row['executions']:>5} | {_num(leg['makespan_s'], 12)} {_num(two['makespan_s'], 7)} "
            f"{_num(row['makespan_ratio'], 5)} | "
            f"{_pair(leg['hold_p50_ms'], leg['hold_p99_ms'], 17)} "
            f"{_pair(two['hold_p50_ms'], two['hold_p99_ms'], 13)} | "
            f"{_pair(leg['cas_failures'], two['cas_failures'], 13)} | "
            f"{_pair(leg['wasted_builds'], two['wasted_builds'], 11)} | "
            f"{_pair(leg['batches_per_publish'], two['batches_per_publish'], 16)} | "
            f"{'yes' if leg['conserved'] and two['conserved'] else 'NO'}"
        )
    at8 = [r["makespan_ratio"] for r in out["levels"] if r["executions"] == 8]
    worst = max((r["makespan_ratio"] or 0.0 for r in out["levels"]), default=0.0)
    lines.append(
        f"targets (issue 12): 2P/L <= {TARGET_RATIO_AT_8} at 8 executions "
        f"({'measured ' + str(at8[0]) if at8 else 'not run'}), <= 1.0 at every level "
        f"(worst {worst})"
    )
    return "\n".join(lines)


def _num(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:g}':>{width}}"


def _pair(a: float | None, b: float | None, width: int) -> str:
    text = f"{'-' if a is None else f'{a:g}'}/{'-' if b is None else f'{b:g}'}"
    return f"{text:>{width}}"


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
        seed = _Base(ChromaIndex(), base, dimension, work)
        batches = _batches(executions, seed, records, chunks, overlap=0)
        for path in PATHS:
            name = f"requests-{path.value.replace('_', '')}-{time.time_ns() % 10**9}"
            cloud.create_bucket(name)
            cloud.create_table(name)
            raw, engine = S3BlobStore(name), ChromaIndex()
            seed.publish(raw)
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
        "--requests",
        action="store_true",
        help="instead: S3 requests per execution of each path, one execution at a time",
    )
    args = parser.parse_args(argv)
    if args.requests:
        request_counts()
        return 0
    options: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for name in ("levels", "dimension", "base", "records", "chunks", "overlap", "repeats"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if min(options["levels"]) < 1 or options["repeats"] < 1 or options["records"] < 1:
        parser.error("levels, repeats and records must be >= 1")
    run(json=args.json, threads=args.threads, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
