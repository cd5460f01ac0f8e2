"""``snapmerge bench rollout``: whole rollouts, the real controller on a simulated clock.

Each rollout runs :class:`rollout.controller.RolloutController` — its bake, judge, hold,
recheck, promote and rollback — with the plan (the packaged default unless ``--plan``), an
in-memory state store, flag document and audit log, a clock that moves only when the controller
sleeps, and a simulated fleet (:mod:`bench.rollout_sim`) whose records the judge reads as
arrays (:func:`rollout.judge.judge_samples`, the judge minus record parsing). A rollout that is
neither complete nor rolled back after ``--max-days`` counts as stuck.

``--json`` prints ``{"scenarios": {NAME: {"rollouts", "rolled_back", "by_stage",
"median_hours_to_100"}}}``: ``rolled_back`` is the share of rollouts rolled back,
``by_stage`` the share rolled back at each stage (keyed by percent), ``median_hours_to_100``
the median time to complete among the rollouts that completed (null if none did).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.rollout_sim import SCENARIOS, Fleet, FleetSource, Window
from rollout.audit import MemoryAuditLog
from rollout.controller import RolloutController, Timing
from rollout.flag_writer import RolloutFlagState
from rollout.guardrails import Guardrail
from rollout.judge import Verdict, judge_samples
from rollout.metric_names import MetricName as M
from rollout.plan import RolloutPlan, load_plan
from rollout.samples import Samples
from rollout.state import StateConflictError
from rollout.state_types import RolloutState, Status

START_S = 1_700_000_000.0
ROLLOUTS = 1000
QUICK_ROLLOUTS = 40


class Clock:
    def __init__(self) -> None:
        self.now = START_S

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class MemoryStates:
    def __init__(self) -> None:
        self.state: RolloutState | None = None
        self.version = 0

    def read(self) -> tuple[RolloutState | None, str | None]:
        return self.state, (str(self.version) if self.state is not None else None)

    def write(self, state: RolloutState, expected_version: str | None) -> str:
        current = str(self.version) if self.state is not None else None
        if current != expected_version:
            raise StateConflictError("memory", expected_version, current)
        self.state, self.version = state, self.version + 1
        return str(self.version)


class MemoryFlags:
    def __init__(self) -> None:
        self.state, self.version = RolloutFlagState(0.0, False), 0

    def read(self) -> tuple[RolloutFlagState, str]:
        return self.state, str(self.version)

    def write(self, state: RolloutFlagState, expected_version: str) -> str:
        self.state, self.version = state, self.version + 1
        return str(self.version)


class MemoryAudit(MemoryAuditLog):
    """A sealing in-memory log: the controller checks the log's head before every command."""


_FIELDS = {f.name for f in dataclasses.fields(Samples)}
_CLEAN = "clean" in _FIELDS  # False on the judge before issue 13 (today's baseline)


def _clean(arrays: dict[str, Any]) -> dict[str, Any]:
    keep = (arrays[M.CAS_FAILURES] <= 0) & (arrays[M.FALLBACK_TO_LEGACY] <= 0)
    return {k: v[keep] for k, v in arrays.items() if k != "planned"}


def samples_of(
    window: Window, reference: Window | None, routed_percent: float | None = None
) -> Samples:
    """What :func:`rollout.samples.collect` would gather from the same records."""
    cand = {k: v for k, v in window.candidate.items() if k != "planned"}
    base = {k: v for k, v in window.baseline.items() if k != "planned"}
    if len(window.shadow_mismatches):
        cand[M.SHADOW_MISMATCHED] = window.shadow_mismatches
    planned = window.candidate["planned"]
    pairs = {M.CHUNK_COUNT.value: np.column_stack((planned, window.candidate[M.CHUNK_COUNT]))}
    ref = None
    if reference is not None:
        ref = dict(reference.candidate)
        if len(reference.shadow_mismatches):  # collect keeps dry runs there too
            ref[M.SHADOW_MISMATCHED] = reference.shadow_mismatches
    n_cand = len(planned)
    kwargs: dict[str, Any] = {"candidate": cand, "baseline": base, "reference": ref}
    kwargs |= {"pairs": pairs if _CLEAN else {}, "n_candidate": n_cand}
    if _CLEAN:
        kwargs["clean"] = _clean(window.candidate)
        kwargs["reference_clean"] = {} if reference is None else _clean(reference.candidate)
        kwargs["n_baseline"] = len(window.baseline[M.CHUNK_COUNT])
        if reference is not None:
            kwargs["reference_baseline"] = {
                k: v for k, v in reference.baseline.items() if k != "planned"
            }
    if "routed_percent" in _FIELDS:
        kwargs["routed_percent"] = routed_percent
    return Samples(**kwargs)


def sim_judge(
    window: Window,
    guardrails: Sequence[Guardrail],
    *,
    min_samples: int,
    reference: Window | None = None,
    routed_percent: float | None = None,
) -> Verdict:
    samples = samples_of(window, reference, routed_percent)
    return judge_samples(samples, guardrails, min_samples=min_samples)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # complete | rolled_back | stuck
    stage_percent: float
    hours: float


def run_one(plan: RolloutPlan, fleet: Fleet, seed: int, max_days: float) -> Outcome:
    clock, flags = Clock(), MemoryFlags()
    source = FleetSource(
        np.random.default_rng(seed), fleet, int(START_S * 1000), lambda: flags.state.percent
    )
    ctl = RolloutController(
        MemoryStates(),
        flags,
        MemoryAudit(),
        source,  # type: ignore[arg-type]
        clock=clock,
        sleep=clock.sleep,
        timing=Timing(poll_seconds=86_400.0),
        actor="bench",
        judge_fn=sim_judge,
    )
    ctl.init(plan)
    deadline = START_S + max_days * 86_400
    state = ctl.status()
    while state.status is Status.RUNNING and clock.now < deadline:
        state = ctl.run(max_ticks=1)  # one tick, then sleep out the bake or the recheck
    hours = (clock.now - START_S) / 3600
    status = {Status.COMPLETE: "complete", Status.ROLLED_BACK: "rolled_back"}.get(state.status)
    pct = state.percent if state.status is not Status.ROLLED_BACK else _rolled_back_at(ctl)
    return Outcome(status or "stuck", pct, hours)


def _rolled_back_at(ctl: RolloutController) -> float:
    return float(ctl.plan().stages[ctl.status().stage_index].percent)


def _one(args: tuple[RolloutPlan, Fleet, int, float]) -> Outcome:
    return run_one(*args)


def scenario(
    plan: RolloutPlan, fleet: Fleet, rollouts: int, seed: int, max_days: float, workers: int = 1
) -> dict[str, Any]:
    jobs = [(plan, fleet, seed * 100_003 + i, max_days) for i in range(rollouts)]
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            outcomes = pool.map(_one, jobs, chunksize=max(1, rollouts // (workers * 8)))
    else:
        outcomes = [_one(job) for job in jobs]
    stages = [s.percent for s in plan.stages]
    by_stage = {
        f"{p:g}": sum(o.status == "rolled_back" and o.stage_percent == p for o in outcomes)
        / rollouts
        for p in stages
    }
    done = [o.hours for o in outcomes if o.status == "complete"]
    return {
        "rollouts": rollouts,
        "rolled_back": sum(o.status == "rolled_back" for o in outcomes) / rollouts,
        "by_stage": by_stage,
        "median_hours_to_100": float(np.median(done)) if done else None,
        "_stuck": sum(o.status == "stuck" for o in outcomes) / rollouts,
    }


def run(
    plan: RolloutPlan,
    rollouts: int,
    seed: int,
    names: Sequence[str],
    max_days: float,
    workers: int = 1,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        out[name] = scenario(plan, SCENARIOS[name], rollouts, seed, max_days, workers)
        out[name]["_wall_seconds"] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {_line(out[name])}", file=sys.stderr, flush=True)
    return {"scenarios": out}


def _line(r: dict[str, Any]) -> str:
    stages = " ".join(f"{k}%:{v:.1%}" for k, v in r["by_stage"].items())
    hours = r["median_hours_to_100"]
    med = "—" if hours is None else f"{hours:.1f} h"
    return (
        f"rolled back {r['rolled_back']:.1%} ({stages}); median to 100 % {med}; "
        f"stuck {r['_stuck']:.1%}; {r['_wall_seconds']} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="snapmerge bench rollout", description=__doc__)
    parser.add_argument("--rollouts", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROLLOUTS} per scenario")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--plan", default=None, help="plan file (default: the packaged plan)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--max-days", type=float, default=14.0)
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rollouts = args.rollouts or (QUICK_ROLLOUTS if args.quick else ROLLOUTS)
    names = args.scenario or list(SCENARIOS)
    result = run(load_plan(args.plan), rollouts, args.seed, names, args.max_days, args.workers)
    if args.json:
        public = {
            name: {k: v for k, v in r.items() if not k.startswith("_")}
            for name, r in result["scenarios"].items()
        }
        print(json.dumps({"scenarios": public}, indent=2))
    else:
        for name, r in result["scenarios"].items():
            print(f"{name:16} {_line(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
