"""The Lambda's runtime set alone runs a whole workflow (issue 14, item 4).

The wheel is built from the sources and installed into a fresh virtual environment that holds
*only* the base install — the dependency closure of the wheel's own ``Requires-Dist`` without
extras, as the Lambda image gets it (``infra/Dockerfile``). Then two workflow executions
(split → process_chunk ×N → final_merge, through ``handlers.compaction.lambda_handler``) run in
that environment against the embedded server this process started on 127.0.0.1: one on the
packaged flag document (legacy), one on a flag document in S3 that routes to two_phase.

How the runtime set is installed: each distribution of the closure is taken from this
environment (same versions as the suite runs on), file by file from its ``RECORD``, hard-linked
into the fresh ``site-packages`` (a copy across file systems); the wheel goes in with
``pip install --no-deps --no-index``; ``pip check`` then proves the closure satisfies every
requirement of every installed distribution, the wheel's included. Nothing else is visible there
(no ``--system-site-packages``, no ``.pth`` into this environment), which the child asserts by
failing to import moto, scipy and matplotlib. Offline, and seconds instead of the minutes a
registry install of chromadb takes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from handlers import bootstrap
from snapmerge import synth
from snapmerge.adapters.chroma_index import ChromaIndex
from snapmerge.adapters.s3_store import S3BlobStore
from snapmerge.domain import Database, Record
from snapmerge.seeding import DeltaFormat, seed_snapshot, upload_delta
from snapmerge.snapshots import SnapshotStore
from tests.conftest import AwsEnv
from tests.unit.test_packaging import _build_wheel, _copy_sources, _run

DIM = 16
NOT_IN_THE_RUNTIME_SET = ("moto", "scipy", "matplotlib")  # tqdm comes with chromadb


def _base_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(m for m in archive.namelist() if m.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(name).decode())
    reqs = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _closure(roots: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every distribution the roots need (with the extras they ask for), from this environment."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = list(roots)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        extras = ["", *sorted(req.extras)]
        if all((name, e) in seen for e in extras):
            continue
        seen.update((name, e) for e in extras)
        dist = found.get(name) or metadata.distribution(req.name)
        assert req.specifier.contains(dist.version, prereleases=True), (str(req), dist.version)
        found[name] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return found


def _install_runtime_set(site: Path, dists: dict[str, metadata.Distribution]) -> int:
    linked = 0
    for dist in dists.values():
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # console scripts live outside site-packages; caches are rebuilt
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
            linked += 1
    return linked


def _env(extra: dict[str, str]) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    return {**env, "PYTHONNOUSERSITE": "1", "ANONYMIZED_TELEMETRY": "False", **extra}


CHILD = """
import importlib.util, json, sys
site = sys.argv[1]
absent = [m for m in json.loads(sys.argv[2]) if importlib.util.find_spec(m) is not None]
assert not absent, f"not in the runtime set, yet importable: {absent}"
import handlers.compaction
from handlers.local import run_execution
assert handlers.compaction.__file__.startswith(site), handlers.compaction.__file__
event = json.loads(sys.argv[3])
out = run_execution(event, invoke=lambda e: handlers.compaction.lambda_handler(e, None))
print("RESULT " + json.dumps({"split": out["split"], "final": out["final"]}, default=str))
"""


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A fresh venv holding the wheel and the runtime set; (python, site-packages)."""
    base = tmp_path_factory.mktemp("runtime")
    _copy_sources(base / "src")
    wheel = _build_wheel(base / "src", base / "dist")
    venv = base / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", purelib], cwd=base).stdout.strip())
    dists = _closure(_base_requirements(wheel))
    assert not set(NOT_IN_THE_RUNTIME_SET) & set(dists), sorted(dists)
    assert _install_runtime_set(site, dists) > 0
    pip = [sys.executable, "-m", "pip", "--python", python]
    installed = _run([*pip, "install", "-q", "--no-deps", "--no-index", wheel], cwd=base)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    checked = _run([*pip, "check"], cwd=base)
    assert checked.returncode == 0, f"the runtime set is incomplete:\n{checked.stdout}"
    yield python, site


def _seed(
    aws: AwsEnv, db: Database, batch: str, workdir: Path
) -> tuple[list[dict[str, str]], list[list[Record]]]:
    blobs, engine = S3BlobStore(aws.bucket), ChromaIndex()
    writes = [synth.records(10 + i, 5, DIM, id_prefix=f"{batch}-", start=i * 5) for i in range(5)]
    writes[3] += synth.overwrite(writes[1], 99, 0.5, 0.5)
    deltas = []
    for i, records in enumerate(writes):
        fmt = DeltaFormat.TARBALL if i % 2 else DeltaFormat.DIRECTORY
        key = upload_delta(blobs, engine, db, f"{batch}-{i}", records, workdir=workdir, fmt=fmt)
        deltas.append({"delta_key": key, "collection": "receipt_lines"})
    return deltas, writes


def _execute(
    runtime: tuple[Path, Path], aws: AwsEnv, tmp: Path, event: dict[str, Any], **env: str
) -> dict[str, Any]:
    python, site = runtime
    variables = {
        **aws.cloud.env(),
        "CHROMADB_BUCKET": aws.bucket,
        "S3_BUCKET": aws.bucket,
        "DYNAMODB_TABLE_NAME": aws.table,
        "CHROMA_ROOT": str(tmp / "chroma"),
        "CHUNK_SIZE_LINES": "2",
        "SNAPMERGE_EMF_FILE": str(tmp / "emf.jsonl"),
        "POWERTOOLS_METRICS_NAMESPACE": "ChromaCompaction",
        **env,
    }
    args = [python, "-c", CHILD, site, json.dumps(NOT_IN_THE_RUNTIME_SET), json.dumps(event)]
    result = subprocess.run(
        [str(a) for a in args],
        cwd=tmp,
        env=_env(variables),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    line = next(x for x in reversed(result.stdout.splitlines()) if x.startswith("RESULT "))
    out: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return out


def test_the_runtime_set_alone_runs_whole_workflows_on_both_paths(
    runtime_python: tuple[Path, Path], aws: AwsEnv, tmp_path: Path
) -> None:
    bootstrap.install(None)
    db = Database.LINES
    blobs, engine = S3BlobStore(aws.bucket), ChromaIndex()
    base = synth.records(7, 30, DIM, id_prefix="base")
    seed_snapshot(blobs, engine, db, base, workdir=tmp_path)
    store = SnapshotStore(blobs, db)
    flags = {
        "final-merge-kill-switch": {"default": False},
        "final-merge-path": {"default": "two_phase", "boolean_type": False},
    }
    blobs.put("flags/two-phase.json", json.dumps(flags).encode())
    everything: list[list[Record]] = [base]
    for batch, env in (
        ("legacy-1", {}),  # no flag store configured: the packaged document, legacy
        ("twophase-1", {"SNAPMERGE_FLAGS_S3": f"s3://{aws.bucket}/flags/two-phase.json"}),
    ):
        deltas, writes = _seed(aws, db, batch, tmp_path)
        everything += writes
        event = {"batch_id": batch, "database": "lines", "delta_results": deltas}
        out = _execute(runtime_python, aws, tmp_path, event, **env)

        expected_path = "legacy" if batch.startswith("legacy") else "two_phase"
        assert out["split"]["routing"]["path"] == expected_path
        assert len(out["split"]["chunks"]) == 3  # 5 deltas, chunk size 2: the Map really ran
        pointer = store.read_pointer()
        assert pointer is not None and pointer.version == out["final"]["version"]
        dest = tmp_path / f"published-{batch}"
        store.download_version(pointer.version, dest)
        published = {r.id: r for page in engine.read_records(dest) for r in page}
        expected = synth.expected_state(everything)
        assert published == expected
        assert out["final"]["total_embeddings"] == len(expected)
        assert blobs.list(f"intermediate/{batch}") == []

    emf = [json.loads(x) for x in (tmp_path / "emf.jsonl").read_text().splitlines() if x]
    paths = {r.get("MergePath") for r in emf if "FinalMergeDuration" in r}
    assert paths == {"legacy", "two_phase"}, paths


def test_the_snapmerge_command_works_in_the_runtime_set(runtime_python: tuple[Path, Path]) -> None:
    """The image's CLI: the core commands run, an operator command names its extra."""
    python, _ = runtime_python
    script = python.parent / "snapmerge"
    cwd = python.parent.parent
    listing = _run([script, "--help"], cwd)
    assert listing.returncode == 0, listing.stderr
    assert "gc" in listing.stdout and "lineage" in listing.stdout
    assert "(unavailable: `snapmerge rollout` needs the [rollout] extra" in " ".join(
        listing.stdout.split()
    )
    for argv, extra in (
        (["rollout", "status"], "rollout"),
        (["demo"], "local"),
        (["serve"], "local"),
    ):
        result = _run([script, *argv], cwd)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"pip install 'snapmerge[{extra}]'" in result.stderr
    gc = _run([script, "gc"], cwd)  # a core command: runs, and refuses the missing bucket
    assert gc.returncode == 2 and "gc needs --bucket" in gc.stderr, gc.stderr
