"""``snapmerge`` — the command line.

The core owns ``serve`` and ``gc``; every other sub-command lives in the layer that owns its code
(``demo`` in handlers, ``rollout``/``dashboard``/``report`` in rollout, ``bench`` in bench) and
registers itself through the ``snapmerge.commands`` entry-point group, so this module never
imports upward. A registrar is ``register(subparsers) -> None`` and sets ``func`` on its parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from snapmerge import __version__
from snapmerge.errors import SnapmergeError


def _serve(args: argparse.Namespace) -> int:
    from snapmerge.embedded import serve_forever

    serve_forever(args.bucket, args.table, args.port)
    return 0


def _gc(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from snapmerge import gc
    from snapmerge.adapters.s3_store import S3BlobStore
    from snapmerge.domain import Database
    from snapmerge.errors import InvalidEventError
    from snapmerge.snapshots import SnapshotStore

    bucket = args.bucket or os.environ.get("CHROMADB_BUCKET") or os.environ.get("S3_BUCKET")
    if not bucket:
        raise InvalidEventError("gc needs --bucket (or CHROMADB_BUCKET)")
    blobs = S3BlobStore(bucket)
    for name in args.database or [db.value for db in Database]:
        store = SnapshotStore(blobs, Database.parse(name))
        found = gc.plan(store, grace=timedelta(hours=args.grace_hours))
        if args.apply:
            gc.apply(store, found)
        for line in found.describe(store, applied=args.apply):
            print(line)
    if not args.apply:
        print("dry run: nothing deleted (pass --apply to delete)")
    return 0


def _add_gc(sub: Any) -> None:
    gc = sub.add_parser(
        "gc",
        help="list orphan version prefixes and expired in-flight markers (--apply deletes them)",
    )
    gc.add_argument("--bucket", help="default: CHROMADB_BUCKET")
    gc.add_argument("--database", action="append", choices=["words", "lines"])
    gc.add_argument("--grace-hours", type=float, default=24.0)
    gc.add_argument("--apply", action="store_true", help="delete (default: only list)")
    gc.set_defaults(func=_gc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snapmerge",
        description="Legacy and two-phase final merges side by side, behind flags, rolled out "
        "on evidence.",
    )
    parser.add_argument("--version", action="version", version=f"snapmerge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve", help="run the embedded AWS (moto, serialised) in the foreground"
    )
    serve.add_argument("--port", type=int, default=4566)
    serve.add_argument("--bucket", default="snapmerge-local")
    serve.add_argument("--table", default="snapmerge-locks")
    serve.set_defaults(func=_serve)
    _add_gc(sub)
    for ep in sorted(entry_points(group="snapmerge.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SnapmergeError as exc:
        print(f"snapmerge: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
