"""The figures of a contention run, their summary per level, and the table they print as.

Pure functions of what the run returned (results, the bucket's recorded writes), except the
conservation check, which reads the snapshot the pointer names at the end.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import DB, PATHS, bench_kit, mkdir, percentile
from bench.contention_workload import Base, Batch
from bench.recording import Fingerprints, RunRecord
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import FinalMergeResult, MergePath
from snapmerge.snapshots import SnapshotStore

TARGET_RATIO_AT_8 = 0.5  # issue 12: two-phase makespan <= 0.5x legacy's at 8, <= 1x everywhere


def run_figures(
    path: MergePath,
    batches: list[Batch],
    done: list[FinalMergeResult],
    record: RunRecord,
    errors: list[str],
    makespan: float,
) -> dict[str, Any]:
    """One run's figures: makespan, lock holds, CAS failures, publishes and wasted builds (from
    the bucket's writes), batches per publish and how many executions another one carried."""
    holds = record.holds_ms or [0.0]
    order = record.publish_order
    reported = [r.wasted_builds for r in done]
    per_publish = [len(consumed(v, done)) or 1 for v in order]
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
        "coalesced": sum(1 for r in done if coalesced(r)),
        "errors": errors,
    }


def consumed(version: str, done: list[FinalMergeResult]) -> list[str]:
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


def coalesced(result: FinalMergeResult) -> bool:
    return result.published_by is not None and result.published_by != result.batch_id


def conservation(
    blobs: S3BlobStore,
    engine: ChromaIndex,
    base: Base,
    batches: list[Batch],
    done: list[FinalMergeResult],
    record: RunRecord,
    work: Path,
) -> dict[str, Any]:
    """Base + every batch, each id with its last write in publish order, and nothing else."""
    expected = Fingerprints(dict(base.fingerprints.by_id))
    by_id = {b.batch_id: b for b in batches}
    applied: list[str] = []
    for version in record.publish_order:
        for batch_id in consumed(version, done):
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


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
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


def progress(f: dict[str, Any]) -> None:
    """One line per run on stderr, so a long run that is stopped still leaves its figures."""
    print(
        f"[contention] {f['executions']:>2} x {f['path']:<9} rep {f['repeat']}: "
        f"makespan {f['makespan_s']:.2f} s, hold p50/p99 {f['hold_p50_ms']}/{f['hold_p99_ms']} "
        f"ms, CAS failures {f['cas_failures']}, wasted {f['wasted_builds']}, "
        f"conserved {f['conservation']['ok']}, errors {len(f['errors'])}",
        file=sys.stderr,
        flush=True,
    )


def level_row(level: int, by_path: dict[MergePath, list[dict[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {"executions": level}
    for path in PATHS:
        row[path.value] = summary(by_path[path])
    legacy, two = row["legacy"]["makespan_s"], row["two_phase"]["makespan_s"]
    row["makespan_ratio"] = round(two / legacy, 2) if legacy and two else None
    return row


def render(out: dict[str, Any]) -> str:
    lines = [
        f"contention: {out['base']}-record base, {out['dimension']}-d, {out['records']} records "
        f"per batch in {out['chunks']} chunks ({out['overlap']} rewrite shared base ids), "
        f"medians of {out['repeats']} repeat(s), executions as {out['executions_as']}"
        + (f", {out['rtt_ms']:g} ms round trip per request" if out.get("rtt_ms") else "")
        + "; "
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
