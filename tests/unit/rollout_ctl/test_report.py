"""The HTML report: self-contained (inline PNGs, no external reference), every section present,
and it renders in headless Chromium to a non-empty screenshot."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from rollout.audit import JsonlAuditLog
from rollout.metrics import MergeMetrics
from rollout.report import build_report, summary_rows
from rollout.sources import EmfFileSource
from snapmerge.domain import Database, FinalMergeResult, MergePath, VersionId
from tests.unit.rollout_ctl.conftest import Rig
from tests.unit.rollout_ctl.helpers import ScriptedJudge

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _result(rng: random.Random, path: MergePath, i: int) -> FinalMergeResult:
    two = path is MergePath.TWO_PHASE
    cas = 1 if two and rng.random() < 0.1 else 0
    return FinalMergeResult(
        path=path,
        batch_id=f"b{i}",
        database=Database.WORDS,
        version=VersionId(f"v{i}"),
        base_version=None,
        snapshot_key=f"words/snapshot/timestamped/v{i}/",
        total_embeddings=1000 + i,
        processing_time_seconds=2 + rng.random(),
        chunk_count=3 + i % 3,
        delta_count=10,
        records_merged=100,
        lock_wait_ms=rng.uniform(1, 20),
        lock_hold_ms=(rng.uniform(20, 60) if two else rng.uniform(2000, 6000)),
        cas_failures=cas,
        cas_retries=cas,
    )


def _emf(tmp: Path) -> Path:
    rng = random.Random(3)
    metrics = MergeMetrics("ChromaCompaction", emf_file=tmp / "emf.jsonl", stdout=False)
    for i in range(120):
        metrics.record_result(_result(rng, MergePath.LEGACY if i % 2 else MergePath.TWO_PHASE, i))
        metrics.flush()
    return tmp / "emf.jsonl"


def _audit(rig: Rig) -> JsonlAuditLog:
    rig.verdicts = ScriptedJudge("promote", "hold", "promote", "rollback")
    ctl = rig.controller()
    ctl.init(rig.plan)
    ctl.run()
    return rig.audit


def test_report_is_self_contained_with_every_section(rig: Rig) -> None:
    out = build_report(EmfFileSource(_emf(rig.tmp)), _audit(rig), rig.tmp / "r" / "report.html")
    text = out.read_text()
    for heading in (
        "A/B summary",
        "Lock hold time per path",
        "CAS failures and retries",
        "Chunk counts",
        "Stage timeline",
        "Audit log",
    ):
        assert f"<h2>{heading}</h2>" in text
    assert text.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', text), "no external assets"
    assert "rollback" in text and "tester@host" in text


def test_summary_rows_give_percentiles_and_ratio(rig: Rig) -> None:
    rows = {r["metric"]: r for r in summary_rows(EmfFileSource(_emf(rig.tmp)).records())}
    hold = rows["LockHoldTime"]
    assert hold["legacy"]["n"] == 60 and hold["two_phase"]["n"] == 60
    assert hold["two_phase"]["p95"] < hold["legacy"]["p50"]
    assert hold["ratio_p50"] == pytest.approx(hold["two_phase"]["p50"] / hold["legacy"]["p50"])
    assert hold["legacy"]["max"] >= hold["legacy"]["p95"] >= hold["legacy"]["p50"]


def test_empty_inputs_still_give_a_page(tmp_path: Path) -> None:
    out = build_report(
        EmfFileSource(tmp_path / "none.jsonl"),
        JsonlAuditLog(tmp_path / "a"),
        tmp_path / "empty.html",
    )
    assert "No audit entries" in out.read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium(rig: Rig) -> None:
    out = build_report(EmfFileSource(_emf(rig.tmp)), _audit(rig), rig.tmp / "report.html")
    shot = rig.tmp / "shot.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={rig.tmp / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        out.resolve().as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    pixels = image.imread(str(shot))
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1200
    assert float(np.std(pixels[..., :3])) > 0.01, "the screenshot is blank"
