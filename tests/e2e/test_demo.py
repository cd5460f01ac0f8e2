"""``snapmerge demo --quick`` end to end: both acts, the conservation line and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapmerge.cli import main


def test_quick_demo_promotes_then_rolls_back_and_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    assert "conservation: every one of" in printed and "is in the published snapshot" in printed
    assert "ended: complete at 100 % two_phase" in printed
    assert "ended: rolled_back at 0 % two_phase" in printed

    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    actions = [(e["action"], e["to_percent"]) for e in entries]
    assert ("complete", 100.0) in actions  # act 1 reached 100 % on the judge's verdicts
    rollback = [e for e in entries if e["action"] == "rollback"]
    assert len(rollback) == 1 and rollback[0]["reason"].startswith("judge:")
    assert "LockHoldTime" in rollback[0]["reason"]  # the injected regression is what it caught
    flags = json.loads((out / "flags.json").read_text())
    assert flags["final-merge-kill-switch"]["default"] is True  # rollback set the kill switch

    for name in ("report.html", "emf.jsonl", "dashboard.json", "alarms.json"):
        assert (out / name).stat().st_size > 0, name
    assert "<img" in (out / "report.html").read_text()
    paths = {json.loads(line)["MergePath"] for line in (out / "emf.jsonl").read_text().splitlines()}
    assert {"legacy", "two_phase"} <= paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executions", "0"], "--executions must be at least 1"),
        (["--snapshot-records", "-5"], "--snapshot-records must be >= 0"),
        (["--records-per-delta", "-1"], "--records-per-delta"),
        (["--dimension", "0"], "--dimension must be at least 1"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_impossible_options_are_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert main(["demo", "--quick", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was started or written


def test_an_output_path_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    assert main(["demo", "--quick", "--out", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"
