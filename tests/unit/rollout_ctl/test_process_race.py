"""Two controller *processes* (the real ``snapmerge`` CLI, forked from a forkserver) racing for
every transition: exactly one applies, the other exits non-zero naming the winner's transition.

Each round forces one interleaving with files (see ``race_child``): both processes built on one
state version (``together``), or the second one reads while the first one's transition is pending
(``pending``: the interleaving that let two advances apply before, 10 % → 100 % skipping 50 %).
The checker: one new audit entry and one state sequence step, the flag document agreeing with the
state, one exit code 0, the other non-zero with the winner's transition id in its error, and
``rollout verify`` passing. The negative control removes the conditional write and the checker
sees both apply.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.rollout_flags import rollout_state_of
from rollout.locations import open_audit, open_state
from rollout.metrics import MergeMetrics
from snapmerge.cli import main as snapmerge_main
from snapmerge.domain import MergePath
from tests.unit.rollout_ctl import race_child
from tests.unit.rollout_ctl.conftest import CliDir, guardrail
from tests.unit.rollout_ctl.test_report import _result

KEY = "race-test-audit-key-0123456789"
PLAN = {
    "name": "race",
    "defaults": {"bake_seconds": 3600, "min_samples": 20},
    "stages": [10, 50, 100],
    "guardrails": [
        guardrail("LockHoldTime", "latency", 0.25),
        guardrail("CASFailures", "rate", 0.2, margin=0.05),
    ],
}
# transition raced → the commands that set the stage for it
SETUP: dict[str, list[list[str]]] = {
    "advance": [],
    "rollback": [],
    "pause": [],
    "resume": [["rollout", "pause"]],
    "init": [],
    "run": [],
}
COMMAND = {
    "advance": ["rollout", "advance"],
    "rollback": ["rollout", "rollback"],
    "pause": ["rollout", "pause"],
    "resume": ["rollout", "resume"],
    "init": ["rollout", "init", "--plan", "plan.json", "--force"],
    "run": ["rollout", "run", "--bake-seconds", "0", "--max-ticks", "1"],
}
ROUNDS = [(t, m) for t in COMMAND for m in ("together", "pending")]


ROOT = str(Path(__file__).resolve().parents[3])


@pytest.fixture(scope="module")
def forkserver() -> Iterator[Any]:
    """Children forked from one server that has imported the CLI: fast, and single-threaded.

    The server is started with this checkout on ``PYTHONPATH``, so it and the children import
    this checkout and not the editable install's (Python 3.11's forkserver ignores the parent's
    ``sys.path`` when it preloads).
    """
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + old if old else "")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(  # the CLI and every command module its entry points load
        [
            "snapmerge.cli",
            "handlers.cli",
            "handlers.demo",
            "bench.cli",
            "tests.unit.rollout_ctl.race_child",
        ]
    )
    try:
        ctx.Process(target=race_child.noop).start()  # start the server now, with that path
        yield ctx
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


CLI_ENV = {
    "SNAPMERGE_FLAGS_FILE": ".snapmerge/flags.json",
    "SNAPMERGE_EMF_FILE": ".snapmerge/emf.jsonl",
    "SNAPMERGE_AUDIT_KEY": KEY,
    "SNAPMERGE_ACTOR": "setup",
    "SNAPMERGE_ROLLOUT_STATE": ".snapmerge/rollout-state.json",
    "SNAPMERGE_AUDIT": ".snapmerge/audit.jsonl",
}


@pytest.fixture
def workdir(cli_dir: CliDir) -> Path:
    root = cli_dir(PLAN, **CLI_ENV)
    (root / "sync").mkdir()
    return root


def _emit(workdir: Path, n: int = 80) -> None:
    rng = random.Random(5)
    metrics = MergeMetrics(emf_file=workdir / ".snapmerge" / "emf.jsonl", stdout=False)
    for i in range(n):
        path = MergePath.LEGACY if i % 2 else MergePath.TWO_PHASE
        metrics.record_result(_result(rng, path, i))
        metrics.flush()


@dataclass
class Outcome:
    codes: dict[str, int]
    errors: dict[str, str]
    new_entries: list[Any]
    seq_step: int
    state: Any
    flags: Any


def _race(ctx: Any, workdir: Path, transition: str, mode: str, lww: bool = False) -> Outcome:
    """One round; the state and audit log are where SNAPMERGE_ROLLOUT_STATE / _AUDIT say."""
    assert snapmerge_main(["rollout", "init", "--plan", "plan.json"]) == 0
    for command in SETUP[transition]:
        assert snapmerge_main(command) == 0
    if transition == "run":
        _emit(workdir)
    audit = open_audit(os.environ["SNAPMERGE_AUDIT"])
    states = open_state(os.environ["SNAPMERGE_ROLLOUT_STATE"])
    before_entries, before = len(audit.history()), states.read()[0]
    assert before is not None
    modes = {"together": ("together", "together"), "pending": ("first", "second")}[mode]
    procs = {}
    for me, other, role in (("proc-A", "proc-B", modes[0]), ("proc-B", "proc-A", modes[1])):
        argv = COMMAND[transition]
        procs[me] = ctx.Process(
            target=race_child.child,
            args=(str(workdir), argv, role, me, other, lww, dict(os.environ)),
        )
    for p in procs.values():
        p.start()
    for p in procs.values():
        p.join(timeout=120)
    codes = {me: p.exitcode for me, p in procs.items()}
    errors = {me: (workdir / f"{me}.err").read_text() for me in procs}
    after = states.read()[0]
    assert after is not None
    return Outcome(
        codes,  # type: ignore[arg-type]
        errors,
        audit.history()[before_entries:],
        after.seq - before.seq,
        after,
        rollout_state_of(json.loads((workdir / ".snapmerge" / "flags.json").read_text())),
    )


def exactly_one_applied(out: Outcome) -> list[str]:
    """The checker: every way the outcome is not 'exactly one transition, the loser told who'."""
    problems = []
    if len(out.new_entries) != 1:
        problems.append(
            f"{len(out.new_entries)} audit entries: {[e.action for e in out.new_entries]}"
        )
    if out.seq_step != 1:
        problems.append(f"the state moved {out.seq_step} steps")
    winners = [me for me, code in out.codes.items() if code == 0]
    if len(winners) != 1:
        problems.append(f"exit codes {out.codes}: {out.errors}")
    elif out.new_entries:
        loser = next(me for me in out.codes if me not in winners)
        entry = out.new_entries[0]
        if entry.who != winners[0]:
            problems.append(f"the entry is {entry.who}'s, but {winners[0]} exited 0")
        if entry.transition_id not in out.errors[loser]:
            problems.append(f"{loser} did not name {entry.transition_id}: {out.errors[loser]!r}")
    if abs(out.flags.percent - out.state.percent) > 1e-9:
        problems.append(f"flags say {out.flags.percent} %, the state {out.state.percent} %")
    return problems


@pytest.mark.parametrize(("transition", "mode"), ROUNDS, ids=[f"{t}-{m}" for t, m in ROUNDS])
def test_two_processes_racing_exactly_one_applies(
    forkserver: Any, workdir: Path, transition: str, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _race(forkserver, workdir, transition, mode)
    assert exactly_one_applied(out) == []
    winner = next(me for me, code in out.codes.items() if code == 0)
    loser = next(me for me in out.codes if me != winner)
    assert out.codes[loser] == 2 and "another controller acted first" in out.errors[loser]
    capsys.readouterr()
    assert snapmerge_main(["rollout", "verify"]) == 0, capsys.readouterr().err
    assert "audit log verified" in capsys.readouterr().out


def test_the_advance_race_of_the_issue_no_longer_skips_a_stage(
    forkserver: Any, workdir: Path
) -> None:
    out = _race(forkserver, workdir, "advance", "pending")
    assert out.state.percent == 50.0  # 10 → 50, not 10 → 50 → 100
    assert [e.to_percent for e in out.new_entries] == [50.0]


def test_negative_control_without_conditional_writes_both_apply(
    forkserver: Any, workdir: Path
) -> None:
    out = _race(forkserver, workdir, "advance", "together", lww=True)
    problems = exactly_one_applied(out)
    assert problems, "the checker must see two controllers acting"
    assert len(out.new_entries) == 2 and set(out.codes.values()) == {0}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["s3", "dynamodb"])
@pytest.mark.parametrize("mode", ["together", "pending"])
def test_two_processes_racing_on_shared_backends(
    forkserver: Any,
    workdir: Path,
    aws: Any,
    backend: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same race with the state and audit in S3 (If-Match / If-None-Match) or DynamoDB
    (condition on the version) on the embedded server: what CI and a laptop would share."""
    if backend == "s3":
        monkeypatch.setenv("SNAPMERGE_ROLLOUT_STATE", f"s3://{aws.bucket}/rollout/state.json")
        monkeypatch.setenv("SNAPMERGE_AUDIT", f"s3://{aws.bucket}/rollout/audit/")
    else:
        name = f"race-{mode}"
        monkeypatch.setenv("SNAPMERGE_ROLLOUT_STATE", f"dynamodb://{aws.table}/{name}")
        monkeypatch.setenv("SNAPMERGE_AUDIT", f"dynamodb://{aws.table}/{name}")
    out = _race(forkserver, workdir, "advance", mode)
    assert exactly_one_applied(out) == []
    assert out.state.percent == 50.0


ADVANCE_ROUNDS = 10


def test_repeated_advance_races_exactly_one_each_round(
    forkserver: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's race, round after round in fresh directories: N of N rounds exactly one."""
    tally: dict[str, list[bool]] = {"together": [], "pending": []}
    for mode in tally:
        for n in range(ADVANCE_ROUNDS):
            round_dir = workdir / f"{mode}-{n}"
            (round_dir / "sync").mkdir(parents=True)
            (round_dir / "plan.json").write_text(json.dumps(PLAN))
            monkeypatch.chdir(round_dir)
            out = _race(forkserver, round_dir, "advance", mode)
            tally[mode].append(exactly_one_applied(out) == [] and out.state.percent == 50.0)
    counts = {mode: f"{sum(rounds)}/{len(rounds)}" for mode, rounds in tally.items()}
    print(f"\nexactly one of two racing advances: {counts}")
    assert all(all(rounds) for rounds in tally.values()), tally
