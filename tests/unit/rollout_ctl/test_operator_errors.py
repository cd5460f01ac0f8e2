"""Clear operator errors (issue 11 item 8) and a judge that never promotes on a partial read.

Before: a missing ``--emf`` file held forever with "too few candidate executions"; a state at
``stage_index`` 99 crashed ``run`` with IndexError while ``advance`` said "complete"; ``advance``
on a paused rollout silently resumed it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rollout.controller import StateOutOfPlanError
from rollout.sources import ReadStats
from snapmerge.cli import main
from tests.unit.rollout_ctl.conftest import CliDir, Rig
from tests.unit.rollout_ctl.helpers import ListSource
from tests.unit.rollout_ctl.test_cli import PLAN


@pytest.fixture
def scratch(cli_dir: CliDir) -> Path:
    root = cli_dir(PLAN, SNAPMERGE_FLAGS_FILE=".snapmerge/flags.json")
    assert main(["rollout", "init", "--plan", "plan.json"]) == 0
    return root


def _err(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_missing_emf_file_is_named_not_held_on(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _err(capsys, "rollout", "--emf", "wrong/path.jsonl", "judge")
    assert code == 2 and "no EMF metrics file at wrong/path.jsonl" in err
    code, err = _err(capsys, "rollout", "--emf", "wrong/path.jsonl", "run", "--bake-seconds", "0")
    assert code == 2 and "no EMF metrics file" in err
    state = json.loads((scratch / ".snapmerge" / "rollout-state.json").read_text())
    assert state["last_action"]["action"] == "init"  # no hold was recorded


@pytest.mark.parametrize("command", [["run", "--max-ticks", "1"], ["advance"], ["status"]])
def test_a_stage_index_outside_the_plan_is_a_clear_error(
    scratch: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = scratch / ".snapmerge" / "rollout-state.json"
    state = json.loads(path.read_text())
    state["stage_index"] = 99
    path.write_text(json.dumps(state))
    code, err = _err(capsys, "rollout", *command)
    assert code == 2
    assert "stage_index 99" in err and "plan has 3 stages" in err


def test_advance_on_a_paused_rollout_does_not_resume_it(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollout", "pause"]) == 0
    code, err = _err(capsys, "rollout", "advance")
    assert code == 2 and "paused" in err and "rollout resume" in err
    state = json.loads((scratch / ".snapmerge" / "rollout-state.json").read_text())
    assert state["status"] == "paused" and state["percent"] == 1.0


def test_the_controller_refuses_the_out_of_plan_state_directly(rig: Rig) -> None:
    from dataclasses import replace

    ctl = rig.controller()
    state = ctl.init(rig.plan)
    rig.states.write(replace(state, stage_index=99), rig.states.read()[1])
    for call in (ctl.tick, ctl.advance, ctl.rollback, ctl.recover):
        with pytest.raises(StateOutOfPlanError):
            call()


class ShortSource(ListSource):
    """A source whose reads are incomplete (pages left unread)."""

    def records(self, since_ms: int | None = None, until_ms: int | None = None) -> Any:
        self.last_read = ReadStats(scanned=10, kept=10, pages=4, complete=False)
        return super().records(since_ms, until_ms)


def test_a_partial_read_never_promotes(rig: Rig) -> None:
    rig.source = ShortSource()
    ctl = rig.controller()
    ctl.init(rig.plan)
    rig.clock.now += 600
    result = ctl.tick()
    assert rig.verdicts.calls, "the judge ran"
    assert result.action == "hold" and result.state.percent == 1.0
    assert result.verdict is not None
    assert any("the source holds more" in r for r in result.verdict.reasons)


def test_a_command_acts_only_on_the_state_it_first_read(rig: Rig) -> None:
    """A loop (or a command) given the sequence number it started from stops, naming the change,
    when another controller moved the state on; its own changes move it along."""
    from rollout.controller import RolloutConflictError

    first = rig.controller().init(rig.plan)
    loop = rig.controller(based_on=first.seq)
    rig.clock.now += 600
    assert loop.tick().action == "promote"  # its own change
    other = rig.controller(actor="someone@else")
    other.pause("hands off")
    with pytest.raises(RolloutConflictError, match=r"pause .* by someone@else"):
        loop.tick()
    assert rig.controller().status().status.value == "paused"
