"""``snapmerge lineage verify|repair``: is every snapmerge publish still in what the pointer
names; re-apply the lost ones.

Registered here, not in the core's command line, because a repair runs a two-phase final merge
and the two-phase path's fallback is the legacy algorithm (:mod:`legacy.merge_under_lease`),
which the core may not import.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from legacy.merge_under_lease import merge_under_lease


def _lineage_settings(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from snapmerge.config import Settings

    env = dict(os.environ)
    if args.bucket:
        env["CHROMADB_BUCKET"] = args.bucket
    if getattr(args, "table", None):
        env["DYNAMODB_TABLE_NAME"] = args.table
    if args.action == "verify":
        env.setdefault("DYNAMODB_TABLE_NAME", "-")  # verify never touches the lock table
    return replace(Settings.from_env(env), lineage_check=True)


def _lineage(args: argparse.Namespace) -> int:
    import json

    from snapmerge.domain import Database

    settings = _lineage_settings(args)
    out: dict[str, Any] = {"action": args.action, "databases": []}
    failed = False
    for name in args.database or [db.value for db in Database]:
        step = _verify_one if args.action == "verify" else _repair_one
        doc, lines, bad = step(settings, Database.parse(name))
        failed = failed or bad
        out["databases"].append(doc)
        if not args.json:
            print("\n".join(lines))
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    return 1 if failed else 0


def _verify_one(settings: Any, db: Any) -> tuple[dict[str, Any], list[str], bool]:
    """A report of ``db``'s publishes; bad when one is lost."""
    import tempfile
    from pathlib import Path

    from snapmerge.adapters.chroma_index import ChromaIndex
    from snapmerge.adapters.s3_store import S3BlobStore
    from snapmerge.lineage import LineageChecker
    from snapmerge.snapshots import SnapshotStore

    store = SnapshotStore(S3BlobStore(settings.bucket), db)
    with tempfile.TemporaryDirectory(prefix="lineage-") as work:
        report = LineageChecker(store, ChromaIndex(), Path(work)).verify()
    return report.to_json(), report.describe(), bool(report.lost or report.unverifiable)


def _repair_one(settings: Any, db: Any) -> tuple[dict[str, Any], list[str], bool]:
    """Re-apply ``db``'s lost publishes; bad when one could not be restored."""
    from snapmerge.adapters.chroma_index import ChromaIndex
    from snapmerge.adapters.dynamodb_lock import DynamoLeaseTable
    from snapmerge.adapters.s3_store import S3BlobStore
    from snapmerge.lineage_repair import repair
    from snapmerge.merging import MergeKit
    from snapmerge.two_phase import TwoPhaseFinalMerge

    blobs = S3BlobStore(settings.bucket)
    kit = MergeKit(blobs, ChromaIndex(), DynamoLeaseTable(settings.table), settings)
    restored = repair(kit, db, TwoPhaseFinalMerge(kit, fallback=merge_under_lease))
    lines = [f"{db.value}: {len(restored)} lost publishes re-applied"] + [
        f"restored {len(r.records)} records of {r.lost} as {r.version}"
        f" (batch {r.batch_id}{', ' + r.note if r.note else ''})"
        for r in restored
    ]
    doc = {"database": db.value, "restored": [r.to_json() for r in restored]}
    return doc, lines, any(r.version is None for r in restored)


def register(sub: Any) -> None:
    lineage = sub.add_parser(
        "lineage",
        help="verify that every snapmerge publish is still in what the pointer names; repair",
    )
    lineage.add_argument("action", choices=["verify", "repair"])
    lineage.add_argument("--bucket", help="default: CHROMADB_BUCKET")
    lineage.add_argument("--table", help="lock table for repair (default: DYNAMODB_TABLE_NAME)")
    lineage.add_argument("--database", action="append", choices=["words", "lines"])
    lineage.add_argument("--json", action="store_true", help="one JSON document on stdout")
    lineage.set_defaults(func=_lineage)
