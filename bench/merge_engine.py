"""ChromaIndex.merge against a plain Chroma upsert of the same records, side by side.

For each size N: a base of N records; sources (3 directories) holding N new records plus, in the
"overwrites" scenario, later writes of 20 % of the base ids (half new vectors, half metadata-only
with a removed key). Each repeat copies the same base twice and times

* engine: ``ChromaIndex().merge(copy, sources)`` (read, fold, classify, write, count check);
* raw:    reading the same sources plus ``raw_upsert`` of every record read (what a naive merge
          does), so both arms pay the same source I/O.

Medians over repeats; the arms alternate order. Both results are checked against the expected
last-write-wins state: the raw upsert keeps metadata keys the last write removed (Chroma merges
keys), so it is usually *not* exact, which is part of why the engine exists.

Run: ``python -m bench.merge_engine [N ...]``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex, raw_upsert
from snapmerge.adapters.memory_index import digest_records, normalize
from snapmerge.domain import Record

SOURCES = 3


def _scenario(n: int, dimension: int, overwrites: float) -> tuple[list[Record], list[Record]]:
    base = synth.records(1, n, dimension)
    later = synth.records(2, n, dimension, id_prefix="n")
    if overwrites:
        later += synth.overwrite(base, seed=3, fraction=overwrites, vector_fraction=0.5)
    return base, later


def _raw_arm(target: Path, sources: Sequence[Path]) -> tuple[float, float]:
    engine = ChromaIndex()
    started = time.perf_counter()
    rows = [r for src in sources for page in engine.read_records(src, 5461) for r in page]
    read_s = time.perf_counter() - started
    return read_s + raw_upsert(target, rows, "words"), read_s


def _one(n: int, dimension: int, repeats: int, overwrites: float, work: Path) -> dict[str, Any]:
    base, later = _scenario(n, dimension, overwrites)
    engine = ChromaIndex()
    engine.write(work / "base", base, "words")
    sources = [work / f"src{i}" for i in range(SOURCES)]
    for i, src in enumerate(sources):
        engine.write(src, later[i::SOURCES], "receipt_words")
    want = digest_records(normalize(r) for r in synth.expected_state([base, later]).values())
    eng_s, raw_s, raw_read_s, phases = [], [], [], []
    exact = {"engine": True, "raw": True}
    for rep in range(repeats):
        for arm in ("engine", "raw") if rep % 2 == 0 else ("raw", "engine"):
            target = work / f"{arm}{rep}"
            shutil.copytree(work / "base", target)
            if arm == "engine":
                t0 = time.perf_counter()
                stats = engine.merge(target, sources, collection="words")
                eng_s.append(time.perf_counter() - t0)
                phases.append(stats.timings_ms)
            else:
                total, read = _raw_arm(target, sources)
                raw_s.append(total)
                raw_read_s.append(read)
            exact[arm] &= engine.digest(target) == want
            shutil.rmtree(target)
    e, r = statistics.median(eng_s), statistics.median(raw_s)
    return {
        "n_base": n,
        "records": len(later),
        "overwrites": len(later) - n,
        "dimension": dimension,
        "engine_s": e,
        "raw_s": r,
        "raw_read_s": statistics.median(raw_read_s),
        "engine_rps": len(later) / e,
        "raw_rps": len(later) / r,
        "overhead_ratio": e / r,
        "engine_phases_ms": {k: statistics.median(p[k] for p in phases) for k in phases[0]},
        "engine_exact": exact["engine"],
        "raw_exact": exact["raw"],
    }


def run(
    sizes: Sequence[int] = (1000,),
    dimension: int = 1536,
    repeats: int = 3,
    overwrite_fractions: Sequence[float] = (0.0, 0.2),
) -> dict[str, Any]:
    """Measure every (size, overwrite fraction); return ``{"results": [row, ...]}``."""
    results = []
    for n in sizes:
        for frac in overwrite_fractions:
            with tempfile.TemporaryDirectory(prefix="snapmerge-bench-") as tmp:
                row = _one(n, dimension, repeats, frac, Path(tmp))
            row["overwrite_fraction"] = frac
            results.append(row)
    return {"repeats": repeats, "sources": SOURCES, "results": results}


def _table(report: dict[str, Any]) -> str:
    head = (
        f"{'base':>6} {'records':>8} {'overwr':>7} {'engine s':>9} {'raw s':>8} {'raw rd s':>8} "
        f"{'engine r/s':>11} {'raw r/s':>9} {'ratio':>6} {'exact e/r':>10}  engine phases ms"
    )
    lines = [head, "-" * len(head)]
    for r in report["results"]:
        phases = " ".join(f"{k}={v:.0f}" for k, v in r["engine_phases_ms"].items())
        lines.append(
            f"{r['n_base']:>6} {r['records']:>8} {r['overwrites']:>7} {r['engine_s']:>9.2f} "
            f"{r['raw_s']:>8.2f} {r['raw_read_s']:>8.2f} "
            f"{r['engine_rps']:>11.0f} {r['raw_rps']:>9.0f} "
            f"{r['overhead_ratio']:>6.2f} {r['engine_exact']!s:>5}/{r['raw_exact']!s:<5}  {phases}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    sizes = tuple(int(a) for a in args) or (1000,)
    report = run(sizes=sizes)
    load = os.getloadavg()[0]
    print(f"median of {report['repeats']} repeats, {report['sources']} sources, load {load:.1f}")
    print(_table(report))


if __name__ == "__main__":
    main()
