"""``snapmerge`` — the command line.

The core owns ``serve``; every other sub-command lives in the layer that owns its code (``demo``
in handlers, ``rollout``/``dashboard``/``report`` in rollout, ``bench`` in bench) and registers
itself through the ``snapmerge.commands`` entry-point group, so this module never imports upward.
A registrar is ``register(subparsers) -> None`` and sets ``func`` on its parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from snapmerge import __version__
from snapmerge.errors import SnapmergeError


def _serve(args: argparse.Namespace) -> int:
    from snapmerge.embedded import serve_forever

    serve_forever(args.bucket, args.table, args.port)
    return 0


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
