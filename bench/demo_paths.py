"""The demo's workload with each path alone: blocks of waves all on two-phase, then all on legacy.

``snapmerge demo``'s act 1 compares the paths mixed in one window, where each execution can wait
behind the other path's lock holds. This runs the same waves (the same sizes, executions per wave,
concurrency and worker processes) with every execution on one path for a block of waves, then on
the other, alternating which goes first, and prints the demo's A/B table for the whole run: what
each path does when it has the collections to itself, which is what a rollout at 100 % would see.
No rollout runs and nothing is judged.

    python -m bench.demo_paths --quick --blocks 2 --waves 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from flags.stores import FileStore
from handlers.demo import demo_environment, parse_options
from handlers.demo_acts import Demo
from handlers.demo_options import Files, Options
from handlers.demo_summary import ab_table
from handlers.demo_workload import check_conservation
from handlers.rollout_flags import DocumentFlagWriter
from rollout.flag_writer import set_flags
from rollout.sources import EmfFileSource
from snapmerge.domain import MergePath
from snapmerge.embedded import EmbeddedAWS

PERCENT = {MergePath.TWO_PHASE: 100.0, MergePath.LEGACY: 0.0}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def run(opts: Options, blocks: int, waves: int) -> dict[str, Any]:
    """``blocks`` pairs of blocks of ``waves`` waves each; the A/B table and each block's time."""
    files = Files(opts.out)
    files.reset()
    out: dict[str, Any] = {"blocks": []}
    with demo_environment(files), EmbeddedAWS() as cloud, cloud.environment():
        demo = Demo(opts, files)
        demo.workload.seed_snapshots()
        demo.start_executions()
        writer = DocumentFlagWriter(FileStore(files.flags))
        started_ms = int(time.time() * 1000)
        try:
            for block in range(blocks):
                order = [MergePath.TWO_PHASE, MergePath.LEGACY]
                for path in order if block % 2 == 0 else order[::-1]:
                    set_flags(writer, PERCENT[path], False, f"bench demo-paths: {path.value}")
                    time.sleep(float(os.environ["SNAPMERGE_FLAGS_TTL_SECONDS"]) * 3)  # cached flags
                    began = time.monotonic()
                    for _ in range(waves):
                        demo.wave(f"{path.value.replace('_', '')}{block}", _NoBar())
                    seconds = round(time.monotonic() - began, 1)
                    out["blocks"].append({"path": path.value, "seconds": seconds})
                    print(f"  block {block} {path.value:<9} {waves} waves: {seconds} s", flush=True)
        finally:
            demo.close()
        records = EmfFileSource(files.emf, strict=False).records(started_ms)
        out["table"] = ab_table(records)
        verdict = check_conservation(
            demo.app.blobs, demo.app.engine, demo.workload.ledger, files.chroma
        )
        out["conservation"] = verdict.line()
        out["failed"] = list(demo.workload.ledger.failed)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_paths",
        description=__doc__.split("\n")[0],
        epilog="Any other option is the demo's own (snapmerge demo --help), e.g. --concurrency 8.",
    )
    parser.add_argument("--quick", action="store_true", help="the quick demo's sizes")
    parser.add_argument("--blocks", type=int, default=2, help="pairs of blocks (one per path)")
    parser.add_argument("--waves", type=int, default=2, help="waves per block")
    parser.add_argument("--threads", action="store_true", help="executions as threads")
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    args, demo_options = parser.parse_known_args(argv)  # the rest are the demo's own options
    if args.blocks < 1 or args.waves < 1:
        parser.error("--blocks and --waves must be at least 1")
    logging.getLogger("snapmerge").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-demo-paths-") as tmp:
        demo_argv = ["--out", args.out or tmp]
        demo_argv += ["--quick"] * args.quick + ["--threads"] * args.threads + demo_options
        figures = run(parse_options(demo_argv), args.blocks, args.waves)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(figures["table"])
        print(figures["conservation"])
        for failure in figures["failed"]:
            print(f"  failed execution: {failure}")
    return 0 if figures["conservation"].startswith("conservation: every") else 1


if __name__ == "__main__":
    raise SystemExit(main())
