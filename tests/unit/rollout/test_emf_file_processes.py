"""Several processes append EMF records to one file (the demo's workers do): every record stays
whole. The checker is shown to catch records whose bytes interleave."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

from rollout.metrics import MergeMetrics
from rollout.sources import EmfFileSource
from tests.unit.rollout.test_metrics import result

WRITERS, RECORDS, PADDING = 4, 40, 200_000  # a record far larger than any stdio buffer


def _writer(path: str, name: str) -> None:
    metrics = MergeMetrics(emf_file=Path(path), stdout=False)
    for n in range(RECORDS):
        metrics.record_result(
            result(), execution_id=f"{name}-{n}", decision={"padding": name * PADDING}
        )
        metrics.flush()


def whole_records(path: Path) -> tuple[int, list[str]]:
    """(records that parse, the lines that do not): the checker."""
    good, broken = 0, []
    for line in path.read_text().splitlines():
        try:
            json.loads(line)
            good += 1
        except json.JSONDecodeError:
            broken.append(line[:40])
    return good, broken


def test_records_appended_by_several_processes_stay_whole(tmp_path: Path) -> None:
    emf = tmp_path / "emf.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_writer, args=(str(emf), chr(ord("a") + i))) for i in range(WRITERS)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    good, broken = whole_records(emf)
    assert (good, broken) == (WRITERS * RECORDS, [])
    ids = {r.metadata["execution_id"] for r in EmfFileSource(emf).records(0, 2**62)}
    assert len(ids) == WRITERS * RECORDS


def test_the_checker_catches_records_whose_bytes_interleave(tmp_path: Path) -> None:
    """Negative control: two writers that each append a record in two writes, the other's first
    half landing between them, leave two broken lines."""
    emf = tmp_path / "emf.jsonl"
    records = [json.dumps({"writer": w, "padding": w * 1000}) + "\n" for w in "ab"]
    fd = os.open(emf, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        halves = [(r[: len(r) // 2], r[len(r) // 2 :]) for r in records]
        for part in (halves[0][0], halves[1][0], halves[0][1], halves[1][1]):
            os.write(fd, part.encode())
    finally:
        os.close(fd)
    good, broken = whole_records(emf)
    assert good < 2 and broken
