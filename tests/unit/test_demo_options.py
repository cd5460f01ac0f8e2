"""``snapmerge demo``'s --stages and --switchback: what they set, and what they refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.demo import parse_options
from handlers.demo_options import Files
from snapmerge.errors import InvalidEventError


def test_stages_default_by_size_and_can_be_given(tmp_path: Path) -> None:
    out = str(tmp_path)
    assert parse_options(["--out", out]).stages == (25.0, 50.0, 100.0)
    assert parse_options(["--quick", "--out", out]).stages == (50.0, 100.0)
    assert parse_options(["--stages", "50,100", "--out", out]).stages == (50.0, 100.0)


@pytest.mark.parametrize("text", ["50,25,100", "0,100", "50,90", "x,100", "50,50,100", "nan,100"])
def test_stages_that_do_not_rise_to_100_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(InvalidEventError, match="--stages"):
        parse_options(["--stages", text, "--out", str(tmp_path)])


def test_switchback_writes_the_window_into_the_path_flag_and_nothing_else(tmp_path: Path) -> None:
    files = Files(tmp_path)
    files.reset(parse_options(["--out", str(tmp_path)]).switchback)
    plain = json.loads(files.flags.read_text())
    assert "switchback" not in plain["final-merge-path"]

    files.reset(parse_options(["--switchback", "5", "--out", str(tmp_path)]).switchback)
    doc = json.loads(files.flags.read_text())
    assert doc["final-merge-path"].pop("switchback") == {"window_seconds": 5}
    assert doc == plain


@pytest.mark.parametrize("seconds", ["-1", "86401"])
def test_a_switchback_window_out_of_range_is_refused(tmp_path: Path, seconds: str) -> None:
    with pytest.raises(InvalidEventError, match="--switchback"):
        parse_options(["--switchback", seconds, "--out", str(tmp_path)])


@pytest.mark.parametrize("seconds", ["61", "3600", "86400"])
def test_a_switchback_window_the_demo_would_wait_on_for_each_wave_is_refused(
    tmp_path: Path, seconds: str
) -> None:
    # every wave sleeps to the next window boundary: at 86400 s the demo would wait up to a day
    # per wave (and up to 24 waves a stage), so it refuses rather than seem to hang
    with pytest.raises(InvalidEventError, match=r"--switchback .*each wave"):
        parse_options(["--switchback", seconds, "--out", str(tmp_path)])
    assert parse_options(["--switchback", "60", "--out", str(tmp_path)]).switchback == 60


@pytest.mark.parametrize("text", ["12.345,100", "0.001,100"])
def test_stages_the_plan_would_refuse_are_refused_with_the_options(
    tmp_path: Path, text: str
) -> None:
    # refused before the demo seeds its snapshots and starts its workers, not after
    with pytest.raises(InvalidEventError, match="--stages"):
        parse_options(["--stages", text, "--out", str(tmp_path)])


def test_waves_per_stage_is_the_acts_cap_when_given(tmp_path: Path) -> None:
    out = str(tmp_path)
    assert parse_options(["--out", out]).waves_per_stage is None  # each act's own cap
    assert parse_options(["--waves-per-stage", "40", "--out", out]).waves_per_stage == 40
    with pytest.raises(InvalidEventError, match="--waves-per-stage"):
        parse_options(["--waves-per-stage", "0", "--out", out])
