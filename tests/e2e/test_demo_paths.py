"""``snapmerge bench demo-paths``: the demo's waves with each path alone, both paths in one run."""

from __future__ import annotations

import json

import pytest

from bench import demo_paths


def test_each_block_runs_one_path_alone_and_loses_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # --executions is the demo's own option, passed through to its parser
    args = ["--quick", "--blocks", "1", "--waves", "1", "--json", "--executions", "4"]
    assert demo_paths.main(args) == 0
    printed = capsys.readouterr().out
    figures = json.loads(printed[printed.index("{") :])
    assert [b["path"] for b in figures["blocks"]] == ["two_phase", "legacy"]
    executions = next(ln for ln in figures["table"].splitlines() if ln.startswith("executions"))
    assert executions.split()[1:] == ["4", "4"]  # one wave each, every one on its path
    assert figures["conservation"].startswith("conservation: every one of 24 deltas (8 batches")
    assert figures["failed"] == []


@pytest.mark.parametrize(
    "args", [["--blocks", "0"], ["--waves", "0"], ["--no-such-option"], ["--concurrency", "x"]]
)
def test_an_empty_run_is_refused_before_anything_starts(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        demo_paths.main(args)
    assert exc.value.code == 2
