"""``python -m bench.bounds --old-root DIR``: resource bounds of the input and scratch handling,
this checkout against another one (e.g. ``git archive main | tar -x -C DIR``), side by side.

Three figures, each measured by running this file's ``--measure`` in a fresh process whose
``sys.path`` starts with the checkout under test (only APIs both versions have are called):

- ``disk_mib``: bytes under ``CHROMA_ROOT`` after 12 sequential merges of one batch each
  (legacy path, in-memory bucket, real ChromaDB, a base of ``--records`` 1536-d records), and
  the number of cached versions.
- ``reject_30k_s``: time for ``fetch_delta`` to refuse a CompactionRun tarball of 30,000 empty
  members (no Chroma database in it, so both versions refuse it in the end).
- ``split_bytes``: the size of ``split_into_chunks``'s answer for 50,000 deltas (80-character
  batch id, the longest execution name).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

DIM = 1536


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _merges(tmp: Path, records: int) -> dict[str, Any]:
    from handlers import bootstrap
    from handlers.local import run_execution
    from snapmerge import synth
    from snapmerge.adapters.chroma_index import ChromaIndex
    from snapmerge.adapters.memory import MemoryBlobStore
    from snapmerge.adapters.memory_lock import MemoryLeaseTable
    from snapmerge.config import Settings
    from snapmerge.domain import Database
    from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta

    root = tmp / "chroma"
    settings = Settings(bucket="mem", table="mem", chroma_root=root)
    app = bootstrap.build(
        settings, blobs=MemoryBlobStore("mem"), engine=ChromaIndex(), leases=MemoryLeaseTable()
    )
    bootstrap.install(app)
    seeds = tmp / "seed"
    seeds.mkdir()
    seed_snapshot(
        app.blobs, app.engine, Database.WORDS, synth.records(1, records, DIM), workdir=seeds
    )
    for n in range(12):
        rows = synth.records(100 + n, 5, DIM, id_prefix="m", start=n * 5)
        key = upload_delta(
            app.blobs,
            app.engine,
            Database.WORDS,
            f"d{n}",
            rows,
            workdir=seeds,
            fmt=DeltaFormat.TARBALL,
        )
        run_execution({"batch_id": f"b{n}", "database": "words", "delta_results": [key]})
    cache = root / "cache" / "words"
    versions = [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.is_dir() else []
    return {"disk_mib": round(_disk(root) / 2**20, 1), "cached_versions": len(versions)}


def _reject(tmp: Path) -> dict[str, Any]:
    from snapmerge.adapters.memory import MemoryBlobStore
    from snapmerge.deltas import fetch_delta
    from snapmerge.errors import MergeInputError

    tar_path = tmp / "many.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for i in range(30_000):
            tar.addfile(tarfile.TarInfo(f"seg/{i:05d}"), io.BytesIO(b""))
    blobs = MemoryBlobStore("mem")
    blobs.upload_file("words/delta/run/delta.tar.gz", tar_path)
    started = time.perf_counter()
    try:
        fetch_delta(blobs, "words/delta/run/delta.tar.gz", tmp / "dest", max_bytes=2 * 1024**3)
        refused = "accepted"
    except MergeInputError as exc:
        refused = str(exc)[:90]
    return {"reject_30k_s": round(time.perf_counter() - started, 3), "reject_error": refused}


def _split() -> dict[str, Any]:
    from snapmerge.adapters.memory import MemoryBlobStore
    from snapmerge.adapters.memory_index import MemoryIndex
    from snapmerge.config import Settings
    from snapmerge.split import split_into_chunks
    from snapmerge.workflow import WorkflowContext

    ctx = WorkflowContext(
        MemoryBlobStore("mem"), MemoryIndex(), Settings(bucket="mem", table="t"), Path("/tmp")
    )
    deltas = [
        {"delta_key": f"words/delta/{i:032x}/", "collection": "receipt_words"}
        for i in range(50_000)
    ]
    out = split_into_chunks(
        ctx, {"batch_id": "x" * 80, "database": "words", "delta_results": deltas}
    )
    return {"split_bytes": len(json.dumps(out)), "split_chunks": out["total_chunks"]}


def measure(records: int) -> dict[str, Any]:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    with tempfile.TemporaryDirectory(prefix="bench-bounds-") as tmp:
        figures = _split()
        (Path(tmp) / "r").mkdir()
        figures |= _reject(Path(tmp) / "r")
        (Path(tmp) / "m").mkdir()
        figures |= _merges(Path(tmp) / "m", records)
    return figures


def _run_in(root: Path, records: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root), "ANONYMIZED_TELEMETRY": "False"}
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]); "
        "sys.path.insert(0, sys.argv[1] + '/bench/..'); "
        "import importlib.util as u; "
        "spec = u.spec_from_file_location('bounds', sys.argv[2]); m = u.module_from_spec(spec); "
        "spec.loader.exec_module(m); print('RESULT' + json.dumps(m.measure(int(sys.argv[3]))))"
    )
    reply = subprocess.run(
        [sys.executable, "-c", code, str(root), __file__, str(records)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in reply.stdout.splitlines() if x.startswith("RESULT"))
    return dict(json.loads(line[len("RESULT") :]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-root", type=Path, required=True, help="the checkout to compare")
    parser.add_argument("--records", type=int, default=500, help="records in the base")
    args = parser.parse_args(argv)
    new_root = Path(__file__).resolve().parent.parent
    old, new = _run_in(args.old_root, args.records), _run_in(new_root, args.records)
    print(f"{'figure':<18}{'old':>14}{'new':>14}{'new/old':>10}")
    for key in ("disk_mib", "cached_versions", "reject_30k_s", "split_bytes", "split_chunks"):
        ratio = new[key] / old[key] if old[key] else float("nan")
        print(f"{key:<18}{old[key]:>14}{new[key]:>14}{ratio:>10.3f}")
    print(f"old refusal: {old['reject_error']}\nnew refusal: {new['reject_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
