"""The demo's worker side: act 2's regression switch, seen through a file by every worker
process, and the option that keeps executions as threads of the demo's process."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.demo import parse_options
from handlers.demo_worker import Regression


def test_the_regression_delays_only_the_swap_and_only_while_switched_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("handlers.demo_worker.time.sleep", slept.append)
    switch = tmp_path / "regression"
    mine, another_process = Regression(switch, 800), Regression(switch, 800)

    for step in ("before_swap", "after_build"):
        another_process(step)
    assert slept == [] and not another_process.is_on()

    mine.on()
    another_process("after_build")
    another_process("before_swap")
    assert slept == [0.8] and another_process.is_on()

    mine.off()
    mine.off()  # switching off twice is harmless
    another_process("before_swap")
    assert slept == [0.8]


def test_executions_run_in_worker_processes_unless_threads_is_asked_for(tmp_path: Path) -> None:
    out = str(tmp_path / "demo")
    assert parse_options(["--quick", "--out", out]).threads is False
    assert parse_options(["--quick", "--threads", "--out", out]).threads is True
