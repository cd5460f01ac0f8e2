"""``snapmerge`` — the command line.

The core owns ``serve`` and ``gc``; every other sub-command lives in the layer that owns its code
(``demo`` and ``lineage`` in handlers — a repair runs the two-phase path, whose fallback is the
legacy algorithm —, ``rollout``/``dashboard``/``report`` in rollout, ``bench`` in bench) and
registers itself through the ``snapmerge.commands`` entry-point group, so this module never
imports upward. A registrar is ``register(subparsers) -> None`` and sets ``func``
on its parser.

Commands load lazily: only the registrar of the command named on the command line is imported
(every registrar only for the help listing), so a command works when its own dependencies are
installed, whatever the others need. The base install is the Lambda's runtime set; a command
that needs an extra (pyproject's optional-dependencies) and runs without it exits with status 2
and names the extra to install (:data:`EXTRA_FOR_MODULE`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from snapmerge import __version__
from snapmerge.errors import SnapmergeError

COMMANDS_GROUP: Final = "snapmerge.commands"
CORE_COMMANDS: Final = ("serve", "gc")

# The extra that installs each module a command may import beyond the base install; equal to
# pyproject.toml's optional-dependencies (tests/unit/test_cli_extras.py keeps them so).
EXTRA_FOR_MODULE: Final = {
    "scipy": "rollout",
    "yaml": "rollout",
    "matplotlib": "report",
    "moto": "local",
    "tqdm": "local",
}

# Commands whose whole extra is better named than the first module found missing: [local]
# brings [rollout] and [report] too, and the demo and the benchmarks need all of it.
EXTRA_FOR_COMMAND: Final = {"demo": "local", "bench": "local", "serve": "local"}


class MissingExtraError(SnapmergeError):
    """A command needs a module that this installation leaves out."""


def missing_extra(command: str, exc: ModuleNotFoundError) -> MissingExtraError | None:
    """What to tell the user when ``command`` failed to import ``exc.name``; None when the
    module belongs to no extra (a real bug, left to raise)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(top)
    if extra is not None:
        extra = EXTRA_FOR_COMMAND.get(command, extra)
        return MissingExtraError(
            f"`snapmerge {command}` needs the [{extra}] extra ({top} is not installed): "
            f"pip install 'snapmerge[{extra}]'"
        )
    if top == "bench":  # packaged in the wheel, left out of the Lambda image (infra/Dockerfile)
        return MissingExtraError(
            f"`snapmerge {command}` is not part of this installation (the bench package is "
            "absent, as in the Lambda image): install snapmerge from its source with [local]"
        )
    return None


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
        help="list what dead merges left: orphan versions, claims, pending batches, change sets,"
        " empty log entries, expired in-flight markers (--apply deletes them)",
    )
    gc.add_argument("--bucket", help="default: CHROMADB_BUCKET")
    gc.add_argument("--database", action="append", choices=["words", "lines"])
    gc.add_argument("--grace-hours", type=float, default=24.0)
    gc.add_argument("--apply", action="store_true", help="delete (default: only list)")
    gc.set_defaults(func=_gc)


def _named_command(argv: Sequence[str]) -> str | None:
    """The sub-command on the command line: the first word that is not an option (the top-level
    parser has no option that takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _plugins() -> list[EntryPoint]:
    return sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name)


def _add_unavailable(sub: Any, name: str, error: MissingExtraError) -> None:
    """List a command whose registrar cannot load; running it reports ``error``."""

    def fail(_: argparse.Namespace) -> int:
        raise error

    parser = sub.add_parser(name, help=f"(unavailable: {error})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=fail)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the core commands plus the registrar of the command ``argv``
    names — or every registrar when it names none of them (help, ``--version``, a typo)."""
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
    named = _named_command(sys.argv[1:] if argv is None else argv)
    if named in CORE_COMMANDS:
        return parser
    plugins = _plugins()
    if named in {ep.name for ep in plugins}:
        plugins = [ep for ep in plugins if ep.name == named]
    for ep in plugins:
        try:
            registrar = ep.load()
        except ModuleNotFoundError as exc:
            error = missing_extra(ep.name, exc)
            if error is None:
                raise
            if ep.name == named:
                raise error from exc
            _add_unavailable(sub, ep.name, error)
            continue
        registrar(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    command = "?"
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        command = str(args.command)
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        error = missing_extra(command, exc)
        if error is None:
            raise
        print(f"snapmerge: error: {error}", file=sys.stderr)
        return 2
    except SnapmergeError as exc:
        print(f"snapmerge: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
