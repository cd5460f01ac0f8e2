"""Lineage verify and repair on the compactor scenario, beside a final merge of the same batch.

On the embedded server with ChromaIndex: seed a base X of ``size`` records; publish V (two-phase)
with ``batch`` new records and ``batch`` rewrites of X's; then a writer outside the CAS (as the
original compactor does) downloads X, changes some of its records, uploads the whole directory
to a ``YYYYMMDD_HHMMSS`` prefix and writes the pointer without a condition: V is lost. Timed:
``snapmerge lineage verify`` (finds V by content), ``repair`` (a two-phase merge of V's lost
records), the verify after it, and the cheap check a publish runs; each beside V's own final
merge time.

Run: ``python -m bench.lineage [--size N] [--batch N] [--dimension N] [--json]``.
"""

from __future__ import annotations

import argparse
import json as jsonlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from legacy.merge_under_lease import merge_under_lease

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.config import Settings
from snapmerge.domain import Database, FinalMergeRequest, Keys, VersionId
from snapmerge.embedded import EmbeddedAWS
from snapmerge.lineage import LineageChecker
from snapmerge.lineage_repair import repair
from snapmerge.merging import MergeKit
from snapmerge.seeding import seed_snapshot
from snapmerge.transfer import download_prefix, local_files, upload_directory
from snapmerge.two_phase import TwoPhaseFinalMerge

DB = Database.WORDS
T = TypeVar("T")


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def _overwrite_from(kit: MergeKit, base: VersionId, changes: list[Any], root: Path) -> None:
    """What the original compactor does once its lease lapsed: build on its old read, publish."""
    work, delta = root / "other", root / "other-delta"
    download_prefix(kit.blobs, Keys.version_prefix(DB, base), work)
    kit.engine.write(delta, changes, DB.value)
    kit.engine.merge(work, [delta], collection=DB.value)
    version = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    for rel, path in local_files(work):
        kit.blobs.upload_file(Keys.version_prefix(DB, VersionId(version)) + rel, path)
    kit.blobs.put(Keys.pointer(DB), version.encode())


def run(size: int, batch: int, dimension: int) -> dict[str, Any]:
    with EmbeddedAWS() as cloud, tempfile.TemporaryDirectory(prefix="bench-lineage-") as tmp:
        for key, value in cloud.env().items():
            os.environ[key] = value
        cloud.create_bucket("bench-lineage")
        cloud.create_table("bench-lineage-locks")
        root = Path(tmp)
        settings = Settings(
            bucket="bench-lineage",
            table="bench-lineage-locks",
            chroma_root=root / "chroma",
            lock_wait_timeout=timedelta(seconds=30),
        )
        blobs, engine = S3BlobStore(settings.bucket), ChromaIndex()
        kit = MergeKit(blobs, engine, DynamoLeaseTable(settings.table), settings)
        base = synth.records(1, size, dimension)
        seed = seed_snapshot(blobs, engine, DB, base, workdir=root)
        ours = synth.records(2, batch, dimension, start=size) + synth.overwrite(
            base[: 2 * batch], seed=3, fraction=0.5, vector_fraction=0.5
        )
        engine.write(root / "chunk", ours, DB.value)
        prefix = Keys.intermediate_prefix("v", 0)
        upload_directory(blobs, root / "chunk", prefix)
        request = FinalMergeRequest(batch_id="v", database=DB, intermediate_keys=(prefix,))
        _, merge_s = _timed(
            lambda: TwoPhaseFinalMerge(kit, fallback=merge_under_lease).run(request)
        )
        theirs = synth.overwrite(base[-batch:], seed=4, fraction=1.0, vector_fraction=0.0)
        _overwrite_from(kit, seed.version, theirs, root)
        store = kit.store(DB)
        report, verify_s = _timed(lambda: LineageChecker(store, engine, root / "v1").verify())
        merge = TwoPhaseFinalMerge(kit, fallback=merge_under_lease)
        restored, repair_s = _timed(lambda: repair(kit, DB, merge))
        clean, verify2_s = _timed(lambda: LineageChecker(store, engine, root / "v2").verify())
        _, cheap_s = _timed(lambda: LineageChecker(store, engine, root / "v3").check_pending())
        return {
            "size": size,
            "batch_records": len(ours),
            "dimension": dimension,
            "lost_found": len(report.lost),
            "records_restored": sum(len(r.records) for r in restored),
            "clean_after": not clean.lost,
            "final_merge_s": round(merge_s, 3),
            "verify_s": round(verify_s, 3),
            "repair_s": round(repair_s, 3),
            "verify_after_repair_s": round(verify2_s, 3),
            "check_after_publish_s": round(cheap_s, 3),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lineage", description=__doc__)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.size, args.batch, args.dimension)
    if args.json:
        print(jsonlib.dumps(out, indent=2))
        return 0
    merge = out["final_merge_s"] or 1e-9
    print(f"size {out['size']}, batch {out['batch_records']} records, dim {out['dimension']}")
    print(
        f"lost found {out['lost_found']}, restored {out['records_restored']} records,"
        f" clean after: {out['clean_after']}"
    )
    for key in (
        "final_merge_s",
        "verify_s",
        "repair_s",
        "verify_after_repair_s",
        "check_after_publish_s",
    ):
        print(f"{key:24} {out[key]:8.3f} s   x{out[key] / merge:5.2f} of the final merge")
    return 0 if out["lost_found"] == 1 and out["clean_after"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
