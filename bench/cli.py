"""``snapmerge bench <name> [args]``: the benchmarks, each printing ratios measured side by side.

Every benchmark is also runnable as ``python -m bench.<module>``; arguments after the name are
passed to it unchanged (``snapmerge bench locks --quick --json``).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCHMARKS = {
    "merge": ("bench.merge", "a final merge broken down by step; engine vs raw Chroma upsert"),
    "locks": ("bench.locks", "lock hold and wait, legacy vs two-phase; contention runs"),
    "contention": ("bench.contention", "1..16 final merges at once on one collection, both paths"),
    "flags": ("bench.flags", "flag evaluation cost vs InMemoryProvider; kill-switch latency"),
    "judge": ("bench.judge", "each judge test's false-alarm rate when read at every look"),
    "rollout": ("bench.rollout", "whole rollouts: real controller, simulated clock and fleet"),
    "lineage": ("bench.lineage", "lineage verify and repair on the compactor scenario"),
    "demo-paths": ("bench.demo_paths", "the demo's workload with each path alone, in blocks"),
}


def _run(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    status = 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        print(f"== snapmerge bench {name} ==", flush=True)
        rc = module.main(list(args.rest))
        status = status or int(rc or 0)
    return status


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help=f"run a benchmark ({', '.join([*BENCHMARKS, 'all'])})",
        description="\n".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    parser.set_defaults(func=_run)
